"""Lightning callbacks: keep the best weights in memory and record the loss history.

Both save their state in Lightning checkpoints, so a resumed run ends as an uninterrupted one.
"""

from __future__ import annotations

import copy
import math

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging


class AveragedWeights(EMAWeightAveraging):
    """Exponential moving average of the weights (Lightning's ``EMAWeightAveraging``), used for
    validation and at the end of training; ``averaged_state`` gives the averaged module's weights.

    Buffers are not averaged: the modules' buffers are constants (masks, descriptors).
    """

    def __init__(self, decay: float) -> None:
        super().__init__(decay=decay, use_buffers=False)

    def averaged_state(self, pl_module: pl.LightningModule) -> dict[str, torch.Tensor]:
        """The averaged weights of the training plan's ``module`` (its current ones before the
        first optimiser step)."""
        averaged = self._average_model.module if self._average_model is not None else pl_module
        return averaged.module.state_dict()


class BestWeights(pl.Callback):
    """Keeps a copy of the module's weights at the best ``monitor`` value seen (in memory).

    Selection uses the validation loss of seen perturbations only (MODEL.md section 6); without
    validation data the training loss is monitored instead. With ``averaging`` the kept weights
    are the averaged ones, which the validation loss was computed with.
    """

    def __init__(self, monitor: str = "val_loss", fallback: str = "train_loss",
                 averaging: AveragedWeights | None = None) -> None:
        self.monitor = monitor
        self.fallback = fallback
        self.averaging = averaging
        self.best_score = math.inf
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        value = metrics.get(self.monitor, metrics.get(self.fallback))
        if value is None:
            return
        score = float(value)
        if math.isfinite(score) and score < self.best_score:
            self.best_score, self.best_epoch = score, trainer.current_epoch
            state = (self.averaging.averaged_state(pl_module) if self.averaging is not None
                     else pl_module.module.state_dict())
            self.best_state = copy.deepcopy(state)

    def state_dict(self) -> dict:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch,
                "best_state": self.best_state}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best_score = float(state_dict["best_score"])
        self.best_epoch = int(state_dict["best_epoch"])
        self.best_state = state_dict["best_state"]


class History(pl.Callback):
    """Records the epoch means of every logged metric: ``rows`` is a list of dicts."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        row = {"epoch": float(trainer.current_epoch)}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1})
        self.rows.append(row)

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = [dict(row) for row in state_dict["rows"]]
