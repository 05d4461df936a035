"""Time mapping: observed time labels -> integer latent steps (MODEL.md section 4), saved as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import pairwise
from typing import Literal

import numpy as np
import pandas as pd

from citevae.errors import DataValidationError, VocabularyError, format_names

MAX_STEPS = 64
"""Largest latent step a mapping may produce; beyond it a rollout would be slow and unstable."""

TimeMode = Literal["linear", "rank"]


@dataclass(frozen=True)
class TimeMapping:
    """Monotone map from observed time labels to latent steps.

    ``linear`` (numeric labels): step = (tau - origin) / unit, with ``unit`` the greatest common
    divisor of the gaps between observed labels unless given. Equal gaps stay equal and labels never
    observed but on the grid (e.g. 72 h after 0/24/48 h) map too, which interpolation and
    extrapolation in time need. ``rank`` (ordered non-numeric labels): step = rank of the label,
    scaled so the last label is ``n_steps``; only observed labels map.
    """

    mode: TimeMode
    labels: tuple
    steps: tuple[int, ...]
    origin: float = 0.0
    unit: float = 1.0

    @classmethod
    def from_values(
        cls,
        values: pd.Series | Sequence,
        mode: TimeMode | None = None,
        unit: float | None = None,
        n_steps: int | None = None,
        name: str = "time",
    ) -> TimeMapping:
        """Build the mapping of the distinct labels in ``values`` (a column of one type, no NaN)."""
        labels, numeric = _distinct_labels(values, name)
        mode = mode or ("linear" if numeric else "rank")
        if mode == "linear":
            if not numeric:
                raise DataValidationError(
                    f"time column {name!r} is not numeric, so mode='linear' cannot apply; "
                    "use mode='rank' or numeric labels"
                )
            origin = float(labels[0])
            unit = float(unit) if unit is not None else _grid_unit([float(v) for v in labels])
            if unit <= 0:
                raise DataValidationError(f"time unit must be positive, got {unit}")
            mapping = cls("linear", tuple(labels), (), origin, unit)
            steps = tuple(int(s) for s in mapping._linear_steps(labels))
            if steps[-1] > MAX_STEPS:
                raise DataValidationError(
                    f"time labels of {name!r} span {steps[-1]} latent steps of {unit:g} "
                    f"(more than {MAX_STEPS}); pass a coarser time unit or mode='rank'"
                )
            return cls("linear", tuple(labels), steps, origin, unit)
        if mode != "rank":
            raise DataValidationError(f"time mode must be 'linear' or 'rank', got {mode!r}")
        last = len(labels) - 1
        n_steps = last if n_steps is None else n_steps
        if last and n_steps < last:
            raise DataValidationError(
                f"{len(labels)} time labels need n_steps >= {last} to keep distinct steps"
            )
        steps = tuple(round(rank * n_steps / last) if last else 0 for rank in range(len(labels)))
        return cls("rank", tuple(labels), steps)

    @property
    def max_step(self) -> int:
        """Latent step of the latest observed label."""
        return max(self.steps)

    def step_of(self, values: pd.Series | Sequence) -> np.ndarray:
        """Integer latent steps (n,) of ``values``; labels that cannot be mapped raise an error."""
        values = list(pd.Series(values).to_numpy())
        if self.mode == "linear":
            numbers = _as_numbers(values, "time")
            steps = self._linear_steps(numbers)
            beyond = sorted({float(v) for v, s in zip(numbers, steps, strict=True) if s > MAX_STEPS})
            if beyond:
                raise VocabularyError(
                    f"time label(s) {format_names(beyond)} lie more than {MAX_STEPS} latent steps "
                    f"(one step = {self.unit:g}) after the origin {self.origin:g}; the model "
                    "cannot roll out that far; use labels closer to the observed times"
                )
            return steps.astype(np.int64)
        lookup = dict(zip(self.labels, self.steps, strict=True))
        unknown = sorted({v for v in values if v not in lookup}, key=str)
        if unknown:
            raise VocabularyError(
                f"time label(s) {format_names(unknown)} were not observed in training; "
                f"known labels: {format_names(self.labels)}"
            )
        return np.array([lookup[v] for v in values], dtype=np.int64)

    def _linear_steps(self, numbers: Sequence[float]) -> np.ndarray:
        raw = (np.asarray(numbers, dtype=float) - self.origin) / self.unit
        steps = np.round(raw)
        off_grid = np.abs(raw - steps) > 1e-6 * max(1.0, np.abs(raw).max(initial=0.0))
        bad = sorted({float(v) for v, o in zip(numbers, off_grid, strict=True) if o} | {
            float(v) for v, s in zip(numbers, steps, strict=True) if s < 0
        })
        if bad:
            raise VocabularyError(
                f"time label(s) {format_names(bad)} do not lie on the time grid "
                f"(origin {self.origin:g}, one latent step = {self.unit:g}); "
                "use labels at or after the origin on that grid"
            )
        return steps

    def to_dict(self) -> dict:
        """Plain JSON-ready dictionary."""
        labels = [_json_scalar(v) for v in self.labels]
        return {"mode": self.mode, "labels": labels, "steps": list(self.steps),
                "origin": self.origin, "unit": self.unit}

    @classmethod
    def from_dict(cls, data: dict) -> TimeMapping:
        """Inverse of ``to_dict``."""
        return cls(data["mode"], tuple(data["labels"]), tuple(data["steps"]),
                   float(data["origin"]), float(data["unit"]))


def _distinct_labels(values: pd.Series | Sequence, name: str) -> tuple[list, bool]:
    series = pd.Series(values)
    if series.isna().any():
        rows = np.flatnonzero(series.isna().to_numpy())[:5].tolist()
        raise DataValidationError(f"time column {name!r} has missing values (rows {rows}, ...)")
    if isinstance(series.dtype, pd.CategoricalDtype):
        uniques = list(series.cat.remove_unused_categories().cat.categories)
        if series.cat.ordered:
            kinds = {_kind(v) for v in uniques}
            if kinds == {"number"}:
                return sorted(float(v) for v in uniques), True
            return uniques, False
    else:
        uniques = list(pd.unique(series))
    kinds = {_kind(v) for v in uniques}
    if len(kinds) > 1:
        raise DataValidationError(
            f"time column {name!r} mixes types ({', '.join(sorted(kinds))}); "
            "use one type: numbers (hours, days) or ordered category labels"
        )
    if kinds == {"number"}:
        return sorted(float(v) for v in uniques), True
    try:
        return sorted(float(v) for v in uniques), True
    except ValueError:
        return sorted(uniques), False


def _kind(value) -> str:
    if isinstance(value, bool | np.bool_):
        return "boolean"
    if isinstance(value, int | float | np.integer | np.floating):
        return "number"
    return "string" if isinstance(value, str) else type(value).__name__


def _as_numbers(values: Sequence, name: str) -> list[float]:
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError) as err:
        raise VocabularyError(f"{name} labels must be numbers for a linear time mapping: {err}") from None


def _grid_unit(labels: Sequence[float]) -> float:
    """Greatest common divisor of the gaps between sorted labels (1.0 for a single label)."""
    gaps = [Fraction(b - a).limit_denominator(1000) for a, b in pairwise(labels)]
    gaps = [g for g in gaps if g > 0]
    if not gaps:
        return 1.0
    numerator = np.gcd.reduce([g.numerator * (_lcm_den(gaps) // g.denominator) for g in gaps])
    return float(Fraction(int(numerator), _lcm_den(gaps)))


def _lcm_den(fractions: Sequence[Fraction]) -> int:
    return int(np.lcm.reduce([f.denominator for f in fractions]))


def _json_scalar(value):
    if isinstance(value, np.generic):
        return value.item()
    return value
