"""Lightning training plan: optimiser, warm-ups, logging. The loss itself lives in the module."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from citevae.errors import CiteVAEError, TrainingDivergedError
from citevae.module.citevae import CiteVAEModule, LossOutput
from citevae.train.checkpoints import IDENTITY_KEY


@dataclass
class TrainingConfig:
    """Optimisation settings (MODEL.md sections 6 and 9)."""

    max_epochs: int = 100
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    gradient_clip: float = 5.0
    kl_warmup_epochs: int = 10
    """beta ramps linearly from 0 to its maximum over these epochs."""
    match_start_epoch: int = 3
    """The distribution-match and invariance terms switch on at this epoch."""
    early_stopping_patience: int = 20
    """Epochs without a better validation loss before training stops (0: never stop early)."""
    lr_decay_patience: int = 0
    """Epochs without a better validation loss before the learning rate is multiplied by
    ``lr_decay_factor`` (torch's ReduceLROnPlateau; 0: constant learning rate)."""
    lr_decay_factor: float = 0.5
    cells_per_group: int = 128
    groups_per_batch: int = 4
    accumulate_grad_batches: int = 1
    """Batches whose gradients are summed into one optimiser step: one process with k batches
    accumulated steps on the same cells as k DDP processes with one batch each."""
    weight_averaging: float = 0.0
    """Decay per optimiser step of an exponential moving average of the weights (0: off; 0.998
    averages over about 500 steps). With it, validation, the choice of the best epoch and the
    returned model use the averaged weights, which vary less from epoch to epoch than the weights
    of a single step (Lightning's ``EMAWeightAveraging``)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_epochs < 1:
            raise CiteVAEError(f"max_epochs must be >= 1, got {self.max_epochs}")
        if self.learning_rate <= 0:
            raise CiteVAEError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.lr_decay_patience < 0:
            raise CiteVAEError(f"lr_decay_patience must be >= 0, got {self.lr_decay_patience}")
        if not 0 < self.lr_decay_factor < 1:
            raise CiteVAEError(f"lr_decay_factor must be in (0, 1), got {self.lr_decay_factor}")
        if not 0 <= self.weight_averaging < 1:
            raise CiteVAEError(f"weight_averaging must be in [0, 1), got {self.weight_averaging}")
        if self.accumulate_grad_batches < 1:
            raise CiteVAEError(f"accumulate_grad_batches must be >= 1, got {self.accumulate_grad_batches}")

    def to_dict(self) -> dict:
        """JSON-ready dictionary."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainingConfig:
        """Inverse of ``to_dict``."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


VALIDATION_STREAM = 2**31 - 1
"""Stands for the batch index in the seed of an epoch's validation draws."""


def step_seed(seed: int, epoch: int, batch: int) -> int:
    """Seed of torch's random draws (latent noise, dropout) in one batch of a run."""
    return int(np.random.SeedSequence([seed, epoch, batch]).generate_state(1)[0])


class TrainingPlan(pl.LightningModule):
    """Trains a ``CiteVAEModule`` with AdamW, a KL warm-up and a delayed distribution match.

    Logs ``train_loss`` and ``val_loss`` (validation always with full weights, so checkpoints
    compare like with like), plus every loss term. Each training batch reseeds torch from (seed,
    epoch, batch) and each validation pass from (seed, epoch), so a run resumed from a checkpoint
    draws the same noise as an uninterrupted one. A NaN or
    infinite loss stops training with ``TrainingDivergedError`` before the optimiser step or the
    epoch's checkpoint, so the best weights and the last checkpoint stay finite.
    """

    def __init__(self, module: CiteVAEModule, config: TrainingConfig,
                 identity: dict | None = None, monitor: str = "val_loss") -> None:
        super().__init__()
        self.module = module
        self.config = config
        self.identity = identity or {}
        self.monitor = monitor

    def weights(self) -> tuple[float, float]:
        """(kl_weight, match_weight) at the current epoch and step."""
        cfg = self.config
        steps_per_epoch = max(math.ceil(int(self.trainer.num_training_batches)
                                        / self.trainer.accumulate_grad_batches), 1)
        epochs_done = self.global_step / steps_per_epoch
        kl = min(1.0, epochs_done / cfg.kl_warmup_epochs) if cfg.kl_warmup_epochs > 0 else 1.0
        match = 1.0 if self.current_epoch >= cfg.match_start_epoch else 0.0
        return kl, match

    def _finite_loss(self, stage: str, batch: dict[str, torch.Tensor], batch_idx: int,
                     kl: float, match: float) -> LossOutput:
        """The module's loss; TrainingDivergedError if it, or a distribution's parameter, is NaN
        or infinite (torch.distributions raises ValueError on such parameters)."""
        where = f"{stage} loss at epoch {self.current_epoch}, batch {batch_idx}"
        fix = "lower learning_rate or gradient_clip, or check the data for extreme values"
        try:
            out = self.module.loss(batch, kl_weight=kl, match_weight=match)
        except ValueError as err:
            if "invalid values" not in str(err):
                raise
            raise TrainingDivergedError(f"the {where} is not finite (a likelihood parameter is "
                                        f"NaN or infinite); {fix}") from None
        if not torch.isfinite(out.loss):
            bad = [name for name, value in out.terms.items() if not torch.isfinite(value).all()]
            raise TrainingDivergedError(f"the {where} is {float(out.loss)} (non-finite terms: "
                                        f"{', '.join(bad) or 'none'}); {fix}")
        return out

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self._finite_loss("training", batch, batch_idx, *self.weights())
        self._log("train", out.loss, out.terms, batch)
        return out.loss

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # the batch's number in the epoch over all ranks: the draws of a batch do not depend on
        # how many processes share the epoch (rank r's i-th batch is batch i * world + r)
        number = batch_idx * self.trainer.world_size + self.trainer.global_rank
        torch.manual_seed(step_seed(self.config.seed, self.current_epoch, number))

    def on_validation_epoch_start(self) -> None:
        torch.manual_seed(step_seed(self.config.seed, self.current_epoch, VALIDATION_STREAM))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[IDENTITY_KEY] = self.identity

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self._finite_loss("validation", batch, batch_idx, 1.0, 1.0)
        self._log("val", out.loss, out.terms, batch)

    def _log(self, stage: str, loss: torch.Tensor, terms: dict[str, torch.Tensor],
             batch: dict[str, torch.Tensor]) -> None:
        size = batch["x"].shape[0]
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=size, sync_dist=True)
        for name, value in terms.items():
            self.log(f"{stage}_{name}", value, on_step=False, on_epoch=True, batch_size=size,
                     sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        """AdamW; with ``lr_decay_patience`` also ReduceLROnPlateau on the monitored loss."""
        cfg = self.config
        optimizer = torch.optim.AdamW(self.module.parameters(), lr=cfg.learning_rate,
                                      weight_decay=cfg.weight_decay)
        if cfg.lr_decay_patience == 0:
            return optimizer
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=cfg.lr_decay_factor, patience=cfg.lr_decay_patience)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor, "interval": "epoch"}}
