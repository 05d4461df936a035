"""The training plan's optimiser settings: the learning-rate decay on a plateau of the monitored
loss, and clear errors for settings that cannot train."""

from __future__ import annotations

import pytest
import torch

from citevae.errors import CiteVAEError
from citevae.train.plan import TrainingConfig, TrainingPlan


def _plan(monitor: str = "val_loss", **options: object) -> TrainingPlan:
    parameters = torch.nn.Linear(3, 2)  # the optimiser only needs the module's parameters
    return TrainingPlan(parameters, TrainingConfig(**options), monitor=monitor)


def test_constant_learning_rate_by_default():
    optimizer = _plan(learning_rate=2e-3).configure_optimizers()
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.param_groups[0]["lr"] == 2e-3


@pytest.mark.parametrize("monitor", ["val_loss", "train_loss"])
def test_decay_on_plateau_of_the_monitored_loss(monitor):
    setup = _plan(monitor, lr_decay_patience=2, lr_decay_factor=0.25).configure_optimizers()
    scheduler = setup["lr_scheduler"]["scheduler"]
    assert setup["lr_scheduler"]["monitor"] == monitor
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    lrs = []
    for loss in [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95]:  # better, then 5 epochs without
        scheduler.step(loss)
        lrs.append(setup["optimizer"].param_groups[0]["lr"])
    assert lrs[:4] == [1e-3] * 4  # patience 2: the 3rd epoch without improvement decays
    assert lrs[4] == pytest.approx(2.5e-4)
    assert lrs[-1] == pytest.approx(2.5e-4)  # its own patience again after a decay


@pytest.mark.parametrize(("option", "value", "message"), [
    ("lr_decay_patience", -1, "lr_decay_patience must be >= 0"),
    ("lr_decay_factor", 1.0, r"lr_decay_factor must be in \(0, 1\)"),
    ("lr_decay_factor", 0.0, r"lr_decay_factor must be in \(0, 1\)"),
    ("learning_rate", 0.0, "learning_rate must be > 0"),
    ("max_epochs", 0, "max_epochs must be >= 1"),
    ("weight_averaging", 1.0, r"weight_averaging must be in \[0, 1\)"),
    ("weight_averaging", -0.1, r"weight_averaging must be in \[0, 1\)"),
])
def test_bad_settings_are_named(option, value, message):
    with pytest.raises(CiteVAEError, match=message):
        TrainingConfig(**{option: value})
