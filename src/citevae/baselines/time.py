"""Time-course baselines: nearest observed time and linear interpolation in the latent step.

Both need a registered time key. Deltas at a training step are (mean of the condition's training cells
at that step - mean of the context's training control cells, pooled over time). A condition not trained
in the context uses the average over the contexts that trained it; one trained nowhere raises an error.
"""

from __future__ import annotations

import numpy as np

from citevae.baselines.base import Baseline
from citevae.data.registry import DataRegistry
from citevae.errors import DataValidationError


class _TimeBaseline(Baseline):
    """Shared fitting of per-step deltas; subclasses map (steps, deltas) to a requested step."""

    def _check_time(self, registry: DataRegistry) -> None:
        if registry.time_key is None:
            raise DataValidationError(
                f"baseline {self.name!r} needs a time course: set the data up with a time_key"
            )

    def _fit(self) -> None:
        self._steps = self.stats.step_deltas()

    def _delta(self, condition: str, context: str, step: int) -> np.ndarray:
        if (condition, context) in self._steps:
            return self._at(self._steps[(condition, context)], step)
        others = [self._at(d, step) for (c, _), d in self._steps.items() if c == condition]
        if not others:
            raise self._unknown(condition, f"in context {context!r} or any other")
        return np.mean(others, axis=0)

    def _at(self, by_step: dict[int, np.ndarray], step: int) -> np.ndarray:
        raise NotImplementedError


class NearestTime(_TimeBaseline):
    """Delta at the nearest trained latent step of the condition (ties: the earlier step)."""

    name = "nearest_time"

    def _at(self, by_step: dict[int, np.ndarray], step: int) -> np.ndarray:
        nearest = min(by_step, key=lambda s: (abs(s - step), s))
        return by_step[nearest]


class LinearInterpolation(_TimeBaseline):
    """Delta linearly interpolated between trained steps, extrapolated from the two nearest at the ends.

    Works in the latent-step coordinate (``registry.time_mapping.step_of``); a condition trained at a
    single step predicts that step's delta at every time.
    """

    name = "linear_interpolation"

    def _at(self, by_step: dict[int, np.ndarray], step: int) -> np.ndarray:
        steps = sorted(by_step)
        if len(steps) == 1:
            return by_step[steps[0]]
        i = int(np.clip(np.searchsorted(steps, step, side="right") - 1, 0, len(steps) - 2))
        lo, hi = steps[i], steps[i + 1]
        weight = (step - lo) / (hi - lo)
        return by_step[lo] + weight * (by_step[hi] - by_step[lo])
