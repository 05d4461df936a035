"""Base class of the baselines: training statistics on the log1p scale and per-cell predictions.

Every baseline predicts a mean change (delta) per (perturbation, context, latent step) and adds it to
each given control cell's log1p-normalised profile (clipped at 0 unless the data are "continuous").
Training statistics are means of the training cells of each (condition, context, step) group, with
counts depth-normalised and log1p-transformed first (``log1p_normalised``).

Context rule: a condition's delta in a context is (condition mean - control mean) of that context when
the context has training cells of both; otherwise it is the average of its deltas over the contexts
that have them ("pooled").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
from anndata import AnnData

from citevae.data.descriptors import log1p_normalised
from citevae.data.registry import DataRegistry, get_registry
from citevae.data.validate import check_obs_key, expression_matrix, iter_row_chunks
from citevae.errors import CiteVAEError, DataValidationError, format_names
from citevae.model.prediction import build_prediction_rows, predictions_to_anndata

DEFAULT_N_STEPS = 4
"""Latent step of perturbed predictions without a time key; the model's default ``n_steps``."""


@dataclass
class TrainingStats:
    """Means of training cells on the log1p scale (G = number of genes).

    Attributes:
        means: (condition, context, step) -> mean profile (G,) of the training cells of that group.
        counts: (condition, context, step) -> number of training cells.
        control: context -> mean profile (G,) of its training control cells (pooled over steps).
        control_label: canonical control label.
        separator: separator of combination labels.
    """

    means: dict[tuple[str, str, int], np.ndarray]
    counts: dict[tuple[str, str, int], int]
    control: dict[str, np.ndarray]
    control_label: str
    separator: str

    def targets(self, condition: str) -> list[str]:
        """Target genes of a canonical condition label."""
        return [] if condition == self.control_label else condition.split(self.separator)

    def unit_means(self) -> dict[tuple[str, str], np.ndarray]:
        """(perturbed condition, context) -> mean profile pooled over steps (cell-weighted)."""
        sums: dict[tuple[str, str], np.ndarray] = {}
        totals: dict[tuple[str, str], int] = {}
        for (condition, context, step), mean in self.means.items():
            if condition == self.control_label:
                continue
            n = self.counts[(condition, context, step)]
            key = (condition, context)
            sums[key] = sums.get(key, 0.0) + mean * n
            totals[key] = totals.get(key, 0) + n
        return {key: sums[key] / totals[key] for key in sums}

    def unit_deltas(self) -> dict[tuple[str, str], np.ndarray]:
        """(perturbed condition, context) -> condition mean - control mean, where both are trained."""
        return {(c, x): m - self.control[x] for (c, x), m in self.unit_means().items()
                if x in self.control}

    def step_deltas(self) -> dict[tuple[str, str], dict[int, np.ndarray]]:
        """(perturbed condition, context) -> {step: mean at that step - control mean of context}."""
        out: dict[tuple[str, str], dict[int, np.ndarray]] = {}
        for (condition, context, step), mean in self.means.items():
            if condition != self.control_label and context in self.control:
                out.setdefault((condition, context), {})[step] = mean - self.control[context]
        return out


def in_context(deltas: dict[tuple[str, str], np.ndarray], condition: str, context: str,
               exclude_context: bool = False) -> np.ndarray | None:
    """Delta of ``condition`` in ``context``, else its average over the other contexts; None if absent.

    With ``exclude_context`` only the other contexts are used (context transfer).
    """
    if not exclude_context and (condition, context) in deltas:
        return deltas[(condition, context)]
    others = [d for (c, x), d in deltas.items() if c == condition and x != context]
    return np.mean(others, axis=0) if others else None


class Baseline:
    """A perturbation-response baseline with the model's ``predict`` interface.

    Subclasses set ``name`` and implement ``_fit`` (from ``self.stats``) and ``_delta``.
    """

    name: ClassVar[str] = "baseline"

    def __init__(self, n_steps: int = DEFAULT_N_STEPS) -> None:
        self.n_steps = int(n_steps)
        self.registry: DataRegistry | None = None
        self.stats: TrainingStats | None = None

    def fit(self, adata: AnnData, train_mask: np.ndarray) -> Baseline:
        """Compute training statistics from the cells of ``adata`` (set up) where ``train_mask`` holds.

        Args:
            adata: data set up with ``citevae.setup_anndata``.
            train_mask: (n_obs,) bool; only these cells are read.
        """
        registry = get_registry(adata)
        mask = np.asarray(train_mask)
        if mask.dtype != bool or mask.shape != (adata.n_obs,):
            raise DataValidationError(
                f"train_mask must be a boolean array of shape ({adata.n_obs},), got dtype "
                f"{mask.dtype} and shape {mask.shape}"
            )
        if not mask.any():
            raise DataValidationError("train_mask selects no cells")
        self._check_time(registry)
        encoded = registry.encode(adata, n_steps=self.n_steps)
        cells = np.flatnonzero(mask)
        data = _log1p_rows(adata, registry, cells)
        conditions, contexts = encoded.conditions[cells], encoded.contexts[cells]
        steps = encoded.steps[cells]
        keys = [(str(c), str(x), int(s)) for c, x, s in zip(conditions, contexts, steps, strict=True)]
        codes: dict[tuple[str, str, int], list[int]] = {}
        for i, key in enumerate(keys):
            codes.setdefault(key, []).append(i)
        means = {k: data[v].mean(axis=0) for k, v in codes.items()}
        counts = {k: len(v) for k, v in codes.items()}
        is_control = conditions == registry.control
        control = {str(x): data[is_control & (contexts == x)].mean(axis=0)
                   for x in sorted(set(contexts[is_control]))}
        self.registry = registry
        self.stats = TrainingStats(means, counts, control, registry.control, registry.separator)
        self._fit()
        return self

    def predict(self, controls: AnnData, perturbations: Sequence[str],
                times: Sequence | None = None) -> AnnData:
        """Per-cell predictions: each control cell plus the predicted delta of each perturbation.

        Args:
            controls: control cells with the registered genes and covariate columns.
            perturbations: condition labels ("A", "A+B").
            times: time labels (registered time key), default the latest observed label.

        Returns:
            AnnData (n_perturbations * n_times * n_controls, G) in the layout of
            ``CiteVAE.predict``, ``uns["citevae"]["scale"]`` "log1p" ("continuous" for such data).
        """
        if self.registry is None or self.stats is None:
            raise CiteVAEError(f"baseline {self.name!r} is not fitted; call fit(adata, train_mask) first")
        registry = self.registry
        for key in registry.covariate_keys:
            check_obs_key(controls, key, "covariate")
        rows = build_prediction_rows(registry, controls, perturbations, times, self.n_steps)
        x = _log1p_rows(controls, registry, np.arange(controls.n_obs))
        contexts = registry.contexts(controls)[rows.source]
        values = x[rows.source]
        groups: dict[tuple[int, int, str], list[int]] = {}
        for i, key in enumerate(zip(rows.perturbation_index, rows.steps, contexts, strict=True)):
            groups.setdefault((int(key[0]), int(key[1]), str(key[2])), []).append(i)
        for (p, step, context), members in groups.items():
            condition = rows.perturbations[p]
            if condition == registry.control:
                continue
            values[members] += self._delta(condition, context, step)
        if registry.scale != "continuous":
            np.maximum(values, 0.0, out=values)
        out_registry = replace(registry, scale="continuous" if registry.scale == "continuous" else "log1p")
        out = predictions_to_anndata(values, rows, controls, out_registry, False, None)
        out.uns["citevae"]["description"] = (
            f"baseline {self.name!r}: control cell + predicted mean change, "
            f"{out_registry.scale} scale; means (deterministic)"
        )
        out.uns["citevae"]["baseline"] = self.name
        return out

    def _check_time(self, registry: DataRegistry) -> None:
        """Hook: refuse registries the baseline cannot use."""

    def _fit(self) -> None:
        """Hook: derive the baseline's parameters from ``self.stats``."""

    def _delta(self, condition: str, context: str, step: int) -> np.ndarray:
        """Predicted mean change (G,) of a perturbed ``condition`` in ``context`` at latent ``step``."""
        raise NotImplementedError

    def _unknown(self, condition: str, where: str) -> CiteVAEError:
        """Error for a perturbation this baseline has no training data for (``where``: "in ...")."""
        known = sorted({c for c, _, _ in self.stats.means if c != self.stats.control_label})
        return CiteVAEError(
            f"baseline {self.name!r} has no training cells of perturbation {condition!r} usable "
            f"{where}; trained perturbations: {format_names(known)}"
        )


def _log1p_rows(adata: AnnData, registry: DataRegistry, cells: np.ndarray) -> np.ndarray:
    """Rows ``cells`` of the registered matrix on the log1p-normalised scale, (len(cells), G) float64."""
    matrix = expression_matrix(adata, registry.layer)
    blocks = [log1p_normalised(b, registry.scale) for _, b in iter_row_chunks(matrix[cells])]
    return np.concatenate(blocks) if blocks else np.zeros((0, adata.n_vars))
