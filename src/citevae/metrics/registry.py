"""Registry of mean-vector metrics and the per-perturbation evaluation used by the benchmark."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from citevae.errors import CiteVAEError
from citevae.metrics._checks import as_cells, as_vector
from citevae.metrics.distribution import PCAProjection, energy_distance_pca, mmd_pca
from citevae.metrics.expression import mse, pearson_delta, sign_agreement

__all__ = [
    "MEAN_METRICS",
    "N_TOP_DE",
    "MeanMetric",
    "evaluate_perturbation",
    "get_metric",
    "register_metric",
]

MeanMetric = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None], float]
"""Uniform signature ``f(pred, true, reference, genes) -> float``: pred, true, reference (G,) mean
vectors (reference = control, or the perturbed centroid for Systema), genes: indices or None."""

N_TOP_DE = 20
"""Number of top DE genes used by the ``*_top20_de`` metrics."""


def _mse(pred: np.ndarray, true: np.ndarray, reference: np.ndarray, genes: np.ndarray | None = None) -> float:
    """``mse`` in the uniform signature (reference unused)."""
    return mse(pred, true, genes)


MEAN_METRICS: dict[str, MeanMetric] = {
    "pearson_delta": pearson_delta,
    "mse": _mse,
    "sign_agreement": sign_agreement,
}
"""Name -> metric on per-perturbation mean vectors; extend with ``register_metric``."""


def register_metric(name: str, fn: MeanMetric, overwrite: bool = False) -> None:
    """Add ``fn`` (uniform ``MeanMetric`` signature) to ``MEAN_METRICS`` under ``name``."""
    if name in MEAN_METRICS and not overwrite:
        raise CiteVAEError(f"metric {name!r} is already registered; pass overwrite=True to replace")
    if not callable(fn):
        raise CiteVAEError(f"metric {name!r} must be callable, got {type(fn).__name__}")
    MEAN_METRICS[name] = fn


def get_metric(name: str) -> MeanMetric:
    """Look a metric up by name; raises ``CiteVAEError`` listing the known names."""
    try:
        return MEAN_METRICS[name]
    except KeyError:
        raise CiteVAEError(f"unknown metric {name!r}; known: {sorted(MEAN_METRICS)}") from None


def evaluate_perturbation(
    pred_cells: np.ndarray,
    true_cells: np.ndarray,
    control_cells: np.ndarray,
    de_genes: np.ndarray | None,
    perturbed_centroid: np.ndarray | None = None,
    pca: PCAProjection | None = None,
) -> dict[str, float]:
    """All metrics for one perturbation (one context) as ``{name: value}``.

    pred_cells (n, G), true_cells (m, G), control_cells (c, G): same genes, same (log1p) scale.
    de_genes: gene indices ranked best first (e.g. ``top_de_genes``); the first ``N_TOP_DE`` are
    used (fewer if fewer given); ``None`` skips the DE metrics. Keys: pearson_delta (all genes),
    pearson_delta_top20_de, mse_top20_de, sign_agreement_top20_de, pearson_delta_systema (with
    ``perturbed_centroid`` (G,)), energy_distance and mmd (PCA space, with ``pca``). Pearson values
    may be nan (constant delta; see ``citevae.metrics.expression``).
    """
    pred = as_cells(pred_cells, "pred_cells")
    true = as_cells(true_cells, "true_cells")
    ctrl = as_cells(control_cells, "control_cells")
    n_genes = {"pred_cells": pred.shape[1], "true_cells": true.shape[1], "control": ctrl.shape[1]}
    if len(set(n_genes.values())) > 1:
        raise CiteVAEError(f"cell arrays differ in gene count {n_genes}; align them on one gene list")
    pred_mean, true_mean, ctrl_mean = pred.mean(0), true.mean(0), ctrl.mean(0)

    out = {"pearson_delta": get_metric("pearson_delta")(pred_mean, true_mean, ctrl_mean, None)}
    if de_genes is not None:
        top = np.asarray(de_genes)[:N_TOP_DE]
        for name in ("pearson_delta", "mse", "sign_agreement"):
            out[f"{name}_top{N_TOP_DE}_de"] = get_metric(name)(pred_mean, true_mean, ctrl_mean, top)
    if perturbed_centroid is not None:
        centroid = as_vector(perturbed_centroid, "perturbed_centroid")
        if centroid.size != pred_mean.size:
            raise CiteVAEError(f"perturbed_centroid has {centroid.size} genes, cells have {pred_mean.size}")
        out["pearson_delta_systema"] = get_metric("pearson_delta")(pred_mean, true_mean, centroid, None)
    if pca is not None:
        out["energy_distance"] = energy_distance_pca(pred, true, pca)
        out["mmd"] = mmd_pca(pred, true, pca)
    return out
