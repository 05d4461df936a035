"""Identifiability metrics: how well a learned latent recovers known ground-truth factors."""

from __future__ import annotations

from typing import Literal, overload

import numpy as np
from scipy.optimize import linear_sum_assignment

from citevae.errors import CiteVAEError

__all__ = ["abs_correlation_matrix", "mcc", "r2_per_factor"]


def _as_latent(z: object, name: str) -> np.ndarray:
    """(cells, dims) float64, at least 2 cells and 1 dim."""
    arr = np.asarray(z, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] < 2 or arr.shape[1] == 0:
        raise CiteVAEError(
            f"{name} must be 2-D (cells, dims) with >= 2 cells and >= 1 dim, got shape {arr.shape}"
        )
    return arr


def abs_correlation_matrix(z_true: np.ndarray, z_learned: np.ndarray) -> np.ndarray:
    """|Pearson| between every true dim (rows) and learned dim (columns): (k, l) in [0, 1].

    z_true: (cells, k), z_learned: (cells, l). A constant dimension gets correlation 0 (it carries
    no information), not NaN.
    """
    a, b = _as_latent(z_true, "z_true"), _as_latent(z_learned, "z_learned")
    if a.shape[0] != b.shape[0]:
        raise CiteVAEError(
            f"z_true has {a.shape[0]} cells but z_learned has {b.shape[0]}; pass the same cells"
        )
    a = a - a.mean(0)
    b = b - b.mean(0)
    na, nb = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = (a.T @ b) / np.outer(na, nb)
    corr[~np.isfinite(corr)] = 0.0
    return np.clip(np.abs(corr), 0.0, 1.0)


@overload
def mcc(z_true: np.ndarray, z_learned: np.ndarray, return_matching: Literal[False] = ...) -> float: ...
@overload
def mcc(
    z_true: np.ndarray, z_learned: np.ndarray, return_matching: Literal[True]
) -> tuple[float, np.ndarray]: ...
def mcc(
    z_true: np.ndarray, z_learned: np.ndarray, return_matching: bool = False
) -> float | tuple[float, np.ndarray]:
    """Mean correlation coefficient: mean |Pearson| of true dims matched one-to-one to learned dims.

    z_true: (cells, k), z_learned: (cells, l) with l >= k. The matching maximises the summed
    |Pearson| (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``); each true dim gets a
    distinct learned dim, extra learned dims are ignored. Returns the MCC in [0, 1] and, with
    ``return_matching=True``, also ``matching`` (k,) int: true dim i <-> learned dim matching[i].
    Invariant to permutation, scaling and sign flips of the learned dims.
    """
    corr = abs_correlation_matrix(z_true, z_learned)
    k, l_dims = corr.shape
    if l_dims < k:
        raise CiteVAEError(
            f"z_learned has {l_dims} dims, fewer than the {k} true dims; MCC needs l >= k "
            "(swap the arguments to match learned dims into true ones)"
        )
    rows, cols = linear_sum_assignment(corr, maximize=True)
    matching = np.empty(k, dtype=np.intp)
    matching[rows] = cols
    value = float(corr[rows, cols].mean())
    return (value, matching) if return_matching else value


def r2_per_factor(
    z_true: np.ndarray,
    representation: np.ndarray,
    seed: int = 0,
    test_fraction: float = 0.25,
    alpha: float = 1.0,
) -> np.ndarray:
    """Held-out R^2 of a ridge regression from the representation to each true factor.

    z_true: (cells, k); representation: (cells, p). Cells are split at random (``seed``) into
    train / test (``test_fraction``); features are standardised on the train part; one ridge
    (``alpha``) fit per factor. Returns (k,) R^2 on the test cells: 1 = perfectly linearly
    decodable, <= 0 = no better than the test mean. A constant test factor gives nan.
    """
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    z, rep = _as_latent(z_true, "z_true"), _as_latent(representation, "representation")
    n = z.shape[0]
    if rep.shape[0] != n:
        raise CiteVAEError(f"z_true has {n} cells but representation has {rep.shape[0]}; pass the same cells")
    n_test = round(test_fraction * n)
    if not 0.0 < test_fraction < 1.0 or n_test < 2 or n - n_test < 2:
        raise CiteVAEError(
            f"test_fraction={test_fraction} with {n} cells leaves fewer than 2 cells in a split"
        )
    perm = np.random.default_rng(seed).permutation(n)
    test, train = perm[:n_test], perm[n_test:]
    model = make_pipeline(StandardScaler(), Ridge(alpha=alpha))
    model.fit(rep[train], z[train])
    resid = z[test] - model.predict(rep[test]).reshape(n_test, -1)
    ss_res = (resid**2).sum(0)
    ss_tot = ((z[test] - z[test].mean(0)) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1.0 - ss_res / ss_tot
    r2[ss_tot == 0] = np.nan
    return r2
