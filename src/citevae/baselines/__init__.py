"""citevae.baselines: simple perturbation-response predictors with the model's ``predict`` interface.

Each baseline is fitted with ``fit(adata, train_mask)`` and predicts per control cell on the
log1p-normalised scale (control cell + predicted mean change), laid out as ``CiteVAE.predict``.
"""

from __future__ import annotations

from citevae.baselines.base import Baseline, TrainingStats
from citevae.baselines.linear import Linear
from citevae.baselines.simple import Additive, ContextTransfer, ControlMean, TrainingMean
from citevae.baselines.time import LinearInterpolation, NearestTime
from citevae.errors import CiteVAEError, format_names

BASELINES: dict[str, type[Baseline]] = {
    cls.name: cls
    for cls in (ControlMean, TrainingMean, Additive, Linear, ContextTransfer, NearestTime,
                LinearInterpolation)
}
"""Baselines by name ("control_mean", "training_mean", "additive", "linear", ...)."""


def get_baseline(name: str, **kwargs) -> Baseline:
    """A new (unfitted) baseline of the given name, constructed with ``kwargs``."""
    if name not in BASELINES:
        raise CiteVAEError(f"unknown baseline {name!r}; available: {format_names(sorted(BASELINES))}")
    return BASELINES[name](**kwargs)


__all__ = [
    "BASELINES",
    "Additive",
    "Baseline",
    "ContextTransfer",
    "ControlMean",
    "Linear",
    "LinearInterpolation",
    "NearestTime",
    "TrainingMean",
    "TrainingStats",
    "get_baseline",
]
