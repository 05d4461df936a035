"""Training with Lightning: plan, callbacks, trainer."""

from citevae.train.plan import TrainingConfig, TrainingPlan
from citevae.train.trainer import TrainingResult, fit

__all__ = ["TrainingConfig", "TrainingPlan", "TrainingResult", "fit"]
