"""Builds the Lightning Trainer and runs training (loops, early stopping, checkpoints, DDP)."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar

from citevae.module.citevae import CiteVAEModule
from citevae.train.callbacks import BestWeights, History
from citevae.train.plan import TrainingConfig, TrainingPlan

logger = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    """What a run leaves behind: the epoch history and where the best weights came from."""

    history: list[dict[str, float]]
    best_epoch: int
    best_score: float
    epochs_run: int


def fit(
    module: CiteVAEModule,
    datamodule: pl.LightningDataModule,
    config: TrainingConfig,
    accelerator: str = "cpu",
    devices: int | str = 1,
    strategy: str = "auto",
    num_nodes: int = 1,
    checkpoint_dir: str | Path | None = None,
    progress_bar: bool = True,
) -> TrainingResult:
    """Train ``module`` on ``datamodule`` and load the best weights (by validation loss) into it.

    Multi-process training comes from Lightning (``strategy="ddp"``, ``devices``, ``num_nodes``);
    the batch sampler shards condition groups across ranks itself, so Lightning's distributed
    sampler is off. With ``checkpoint_dir``, Lightning writes the last and best checkpoints there.
    """
    pl.seed_everything(config.seed, workers=True, verbose=False)
    plan = TrainingPlan(module, config)
    has_val = bool(getattr(datamodule, "val_groups", True))
    monitor = "val_loss" if has_val else "train_loss"
    best, history = BestWeights(monitor), History()
    callbacks: list[pl.Callback] = [best, history]
    if config.early_stopping_patience > 0:
        callbacks.append(EarlyStopping(monitor, patience=config.early_stopping_patience,
                                       check_finite=True))
    if checkpoint_dir is not None:
        callbacks.append(ModelCheckpoint(dirpath=checkpoint_dir, monitor=monitor, save_last=True,
                                         filename="best"))
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
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*treespec.*")
            trainer.fit(plan, datamodule=datamodule)
    finally:
        lightning_info.setLevel(level)
    if best.best_state is not None:
        module.load_state_dict(best.best_state)
    logger.info("trained %d epochs; best %s %.4f at epoch %d", trainer.current_epoch, monitor,
                best.best_score, best.best_epoch)
    return TrainingResult(history.rows, best.best_epoch, best.best_score, trainer.current_epoch)
