"""Mean-based baselines: control mean, training mean, additive, context transfer."""

from __future__ import annotations

import numpy as np

from citevae.baselines.base import Baseline, in_context


class ControlMean(Baseline):
    """Delta 0: every perturbation is predicted as the control cells themselves."""

    name = "control_mean"

    def _delta(self, condition: str, context: str, step: int) -> np.ndarray:
        return np.zeros(self.registry.n_genes)


class TrainingMean(Baseline):
    """Delta = average over the perturbed training conditions of (condition mean - control mean).

    Computed per context from the conditions trained there; a context without any falls back to the
    average over every trained (condition, context) delta. The perturbation label is not used, so
    any label (also an unseen one) is accepted.
    """

    name = "training_mean"

    def _fit(self) -> None:
        deltas = self.stats.unit_deltas()
        if not deltas:
            raise self._unknown("any perturbation", "in any context")
        self._pooled = np.mean(list(deltas.values()), axis=0)
        by_context: dict[str, list[np.ndarray]] = {}
        for (_, context), delta in deltas.items():
            by_context.setdefault(context, []).append(delta)
        self._per_context = {x: np.mean(d, axis=0) for x, d in by_context.items()}

    def _delta(self, condition: str, context: str, step: int) -> np.ndarray:
        return self._per_context.get(context, self._pooled)


class Additive(Baseline):
    """Delta = sum over the condition's targets of their single-target training deltas.

    Each single delta is taken in the context, else pooled over the contexts that trained it. A target
    whose single perturbation is not in training (in any context) contributes 0, so an entirely
    unknown perturbation predicts the control cells.
    """

    name = "additive"

    def _fit(self) -> None:
        self._deltas = self.stats.unit_deltas()

    def _delta(self, condition: str, context: str, step: int) -> np.ndarray:
        total = np.zeros(self.registry.n_genes)
        for target in self.stats.targets(condition):
            single = in_context(self._deltas, target, context)
            if single is not None:
                total += single
        return total


class ContextTransfer(Baseline):
    """Delta of a perturbation = average of its training deltas in the OTHER contexts.

    Meant for held-out-context splits (``split_context``): the perturbation's response elsewhere
    transfers unchanged. A perturbation not trained in any other context raises an error naming it.
    """

    name = "context_transfer"

    def _fit(self) -> None:
        self._deltas = self.stats.unit_deltas()

    def _delta(self, condition: str, context: str, step: int) -> np.ndarray:
        delta = in_context(self._deltas, condition, context, exclude_context=True)
        if delta is None:
            raise self._unknown(condition, f"in any context other than {context!r}")
        return delta
