"""Builds the Lightning Trainer and runs training (loops, early stopping, checkpoints, DDP)."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar

from citevae.errors import CheckpointError, TrainingDivergedError
from citevae.train.callbacks import AveragedWeights, BestWeights, History
from citevae.train.checkpoints import (
    CHECKPOINT_FILE,
    CHECKPOINT_NAME,
    AtomicCheckpointIO,
    resumable_checkpoint,
    run_identity,
)
from citevae.train.plan import TrainingConfig, TrainingPlan

logger = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    """What a run leaves behind: the epoch history and where the best weights came from.

    ``diverged`` holds the message when training stopped because the loss became non-finite
    (the best weights of the earlier epochs are kept).
    """

    history: list[dict[str, float]]
    best_epoch: int
    best_score: float
    epochs_run: int
    diverged: str | None = None


def data_identity(datamodule: pl.LightningDataModule) -> dict:
    """What identifies a run's data: registry, codes, library sizes and the train/val cells."""
    encoded = datamodule.encoded
    data = {"registry": datamodule.registry.to_dict(), "train": datamodule.train_cells,
            "val": datamodule.val_cells, "steps": encoded.steps, "covariates": encoded.covariates,
            "conditions": list(encoded.conditions)}
    if encoded.library is not None:
        data["library"] = encoded.library
    return data


def fit(
    module: torch.nn.Module,
    datamodule: pl.LightningDataModule,
    config: TrainingConfig,
    accelerator: str = "cpu",
    devices: int | str = 1,
    strategy: str = "auto",
    num_nodes: int = 1,
    checkpoint_dir: str | Path | None = None,
    progress_bar: bool = True,
    resume: bool = False,
) -> TrainingResult:
    """Train ``module`` (a CiteVAEModule or PlainVAEModule) on ``datamodule``; load the best weights
    (by validation loss) into it.

    Multi-process training comes from Lightning (``strategy="ddp"``, ``devices``, ``num_nodes``);
    the batch sampler shards condition groups across ranks itself, so Lightning's distributed
    sampler is off. With ``checkpoint_dir``, ``last.ckpt`` there is replaced atomically at the end
    of every epoch; ``resume`` continues from it (same module, settings and data; ``max_epochs``
    may grow) and ends with the same weights as an uninterrupted run. A non-finite training loss
    stops training: the best weights so far are kept and ``TrainingResult.diverged`` says why
    (``TrainingDivergedError`` if no epoch had finished).
    """
    settings = module.config.to_dict() if hasattr(module, "config") else {"module": type(module).__name__}
    identity = run_identity(settings, config.to_dict(), data_identity(datamodule))
    ckpt_path = None
    if resume:
        if checkpoint_dir is None:
            raise CheckpointError("resume needs checkpoint_dir, the folder where the interrupted "
                                  "run wrote its checkpoints")
        ckpt_path = resumable_checkpoint(checkpoint_dir, identity)
    elif checkpoint_dir is not None and (Path(checkpoint_dir) / CHECKPOINT_FILE).exists():
        raise CheckpointError(
            f"{Path(checkpoint_dir) / CHECKPOINT_FILE} exists (an earlier run); resume it, or "
            "delete it or choose another checkpoint folder to start over"
        )
    pl.seed_everything(config.seed, workers=True, verbose=False)
    has_val = bool(getattr(datamodule, "val_groups", True))
    monitor = "val_loss" if has_val else "train_loss"
    plan = TrainingPlan(module, config, identity, monitor)
    averaging = AveragedWeights(config.weight_averaging) if config.weight_averaging else None
    best, history = BestWeights(monitor, averaging=averaging), History()
    callbacks: list[pl.Callback] = [best, history]
    if averaging is not None:
        callbacks.append(averaging)
    if config.early_stopping_patience > 0:
        callbacks.append(EarlyStopping(monitor, patience=config.early_stopping_patience,
                                       check_finite=True))
    if checkpoint_dir is not None:
        callbacks.append(ModelCheckpoint(dirpath=checkpoint_dir, filename=CHECKPOINT_NAME,
                                         save_on_train_epoch_end=True, enable_version_counter=False))
    if progress_bar:
        callbacks.append(RichProgressBar(leave=False))
    lightning_info = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = lightning_info.level
    lightning_info.setLevel(logging.WARNING)  # hardware and advertising notices, not ours to print
    try:
        trainer = pl.Trainer(
            max_epochs=config.max_epochs,
            accelerator=accelerator,
            devices=devices,
            strategy=strategy,
            num_nodes=num_nodes,
            gradient_clip_val=config.gradient_clip,
            accumulate_grad_batches=config.accumulate_grad_batches,
            callbacks=callbacks,
            logger=False,
            enable_checkpointing=checkpoint_dir is not None,
            enable_progress_bar=progress_bar,
            enable_model_summary=False,
            deterministic=True,
            use_distributed_sampler=False,
            num_sanity_val_steps=0,
            default_root_dir=checkpoint_dir,
            plugins=[AtomicCheckpointIO()],
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*treespec.*")
            warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
            trainer.fit(plan, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        diverged = None
    except TrainingDivergedError as err:
        if best.best_state is None:
            raise
        diverged = f"{err}; kept the best weights, of epoch {best.best_epoch}"
        logger.warning("training stopped: %s", diverged)
    finally:
        lightning_info.setLevel(level)
    if best.best_state is not None:
        module.load_state_dict(best.best_state)
    logger.info("trained %d epochs; best %s %.4f at epoch %d", trainer.current_epoch, monitor,
                best.best_score, best.best_epoch)
    return TrainingResult(history.rows, best.best_epoch, best.best_score, trainer.current_epoch,
                          diverged)
