"""Metrics on per-perturbation mean-expression vectors (one value per gene, log1p scale).

NaN policy: Pearson-based metrics return ``nan`` (no exception, no warning) when either delta
vector is constant over the selected genes (correlation undefined), e.g. a prediction equal to
control; aggregate with ``np.nanmean`` and count NaNs. NaN in the inputs propagates to the result.
Shape errors, empty inputs and bad gene indices raise ``CiteVAEError``.
"""

from __future__ import annotations

import numpy as np

from citevae.errors import CiteVAEError
from citevae.metrics._checks import as_vectors, gene_index

__all__ = [
    "mse",
    "pearson",
    "pearson_delta",
    "pearson_delta_systema",
    "perturbed_centroid",
    "sign_agreement",
]

_CONST_RTOL = 1e-10
"""A vector counts as constant when its centred norm is <= this x its norm (rounding residue)."""


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two 1-D vectors of equal length; ``nan`` if either is constant."""
    a, b = as_vectors(("a", "b"), a, b)
    ac, bc = a - a.mean(), b - b.mean()
    na, nb = np.linalg.norm(ac), np.linalg.norm(bc)
    if na <= _CONST_RTOL * np.linalg.norm(a) or nb <= _CONST_RTOL * np.linalg.norm(b):
        return float("nan")
    return float(np.clip(ac @ bc / (na * nb), -1.0, 1.0))


def pearson_delta(
    pred: np.ndarray, true: np.ndarray, control: np.ndarray, genes: np.ndarray | None = None
) -> float:
    """Pearson correlation of predicted vs observed change from control.

    pred, true, control: (G,) mean expression; genes: optional int indices or bool mask (G,).
    Returns corr(pred - control, true - control) over the selected genes, in [-1, 1] or nan.
    """
    pred, true, control = as_vectors(("pred", "true", "control"), pred, true, control)
    idx = gene_index(genes, pred.size)
    return pearson((pred - control)[idx], (true - control)[idx])


def pearson_delta_systema(
    pred: np.ndarray,
    true: np.ndarray,
    perturbed_centroid: np.ndarray,
    genes: np.ndarray | None = None,
) -> float:
    """Pearson of deltas taken against the perturbed centroid, not control (Systema).

    Systema (Viñas Torné et al. 2025): the reference is the mean of the training perturbations'
    mean profiles (see ``perturbed_centroid``), which removes the generic response shared by all
    perturbations. Inputs (G,); returns corr(pred - centroid, true - centroid) or nan.
    """
    return pearson_delta(pred, true, perturbed_centroid, genes)


def perturbed_centroid(perturbation_means: np.ndarray) -> np.ndarray:
    """Systema reference: the mean of the training perturbations' mean profiles.

    perturbation_means: (P, G), one row per perturbed training condition (control excluded).
    Returns (G,); each perturbation weighs equally whatever its cell count.
    """
    arr = np.asarray(perturbation_means, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise CiteVAEError(
            f"perturbation_means must be a non-empty 2-D (perturbations, genes) array, got shape {arr.shape}"
        )
    return arr.mean(axis=0)


def mse(pred: np.ndarray, true: np.ndarray, genes: np.ndarray | None = None) -> float:
    """Mean squared error over the selected genes: mean_g (pred_g - true_g)^2. Inputs (G,)."""
    pred, true = as_vectors(("pred", "true"), pred, true)
    idx = gene_index(genes, pred.size)
    return float(np.mean((pred[idx] - true[idx]) ** 2))


def sign_agreement(
    pred: np.ndarray, true: np.ndarray, control: np.ndarray, genes: np.ndarray | None = None
) -> float:
    """Fraction of selected genes whose predicted change from control has the observed sign.

    Signs are compared with ``np.sign`` (-1, 0, +1): a gene whose observed delta is exactly 0
    agrees only if the predicted delta is exactly 0 too. Inputs (G,); returns a value in [0, 1].
    """
    pred, true, control = as_vectors(("pred", "true", "control"), pred, true, control)
    idx = gene_index(genes, pred.size)
    agree = np.sign((pred - control)[idx]) == np.sign((true - control)[idx])
    return float(np.mean(agree))
