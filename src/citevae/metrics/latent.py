"""Identifiability metrics: how well a learned latent recovers known ground-truth factors."""

from __future__ import annotations

from typing import Literal, overload

import numpy as np
from scipy.optimize import linear_sum_assignment

from citevae.errors import CiteVAEError

__all__ = ["abs_correlation_matrix", "class_accuracy_heldout", "mcc", "r2_heldout", "r2_per_factor"]


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


def _train_test(train: object, test: object, name: str, n_train: int, n_test: int) -> tuple[
    np.ndarray, np.ndarray
]:
    """(train, test) representations as 2-D float arrays with matching widths and row counts."""
    a, b = _as_latent(train, f"{name} (train)"), _as_latent(test, f"{name} (test)")
    if a.shape[1] != b.shape[1]:
        raise CiteVAEError(f"{name} has {a.shape[1]} dims on train but {b.shape[1]} on test")
    if len(a) != n_train or len(b) != n_test:
        raise CiteVAEError(
            f"{name} has {len(a)} train / {len(b)} test rows but the targets have {n_train} / {n_test}"
        )
    return a, b


def r2_heldout(
    rep_train: np.ndarray,
    z_train: np.ndarray,
    rep_test: np.ndarray,
    z_test: np.ndarray,
    circular: np.ndarray | None = None,
    regressor: Literal["kernel_ridge", "linear"] = "kernel_ridge",
    alpha: float = 0.1,
) -> np.ndarray:
    """R^2 on held-out cells of a regression from the representation to each true factor.

    rep_*: (cells, p) representations; z_*: (cells, k) true factors. Features are standardised on
    the train cells. "kernel_ridge": RBF kernel ridge (gamma = 1 / p, ``alpha``); "linear": ridge
    (``alpha``). ``circular`` (k,) bool marks factors that are angles in [-1, 1) (period 2): they
    are regressed as the point (cos pi z, sin pi z) and scored by the R^2 of that 2-D target, so a
    wrap-around (z = -1 vs 1) is no error. Returns (k,) R^2 on the test cells (1 = perfect, <= 0 =
    no better than the test mean; nan for a constant factor).
    """
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    z_tr, z_te = _train_test(z_train, z_test, "z", len(np.asarray(z_train)), len(np.asarray(z_test)))
    a, b = _train_test(rep_train, rep_test, "representation", len(z_tr), len(z_te))
    k = z_tr.shape[1]
    wrap = np.zeros(k, bool) if circular is None else np.asarray(circular, bool)
    if wrap.shape != (k,):
        raise CiteVAEError(f"circular must be a bool mask of the {k} factors, got shape {wrap.shape}")

    def targets(z: np.ndarray) -> list[np.ndarray]:
        return [np.column_stack([np.cos(np.pi * z[:, j]), np.sin(np.pi * z[:, j])]) if wrap[j]
                else z[:, j : j + 1] for j in range(k)]

    if regressor not in ("kernel_ridge", "linear"):
        raise CiteVAEError(f"regressor must be 'kernel_ridge' or 'linear', got {regressor!r}")
    scaler = StandardScaler().fit(a)
    model = (KernelRidge(alpha=alpha, kernel="rbf", gamma=1.0 / a.shape[1])
             if regressor == "kernel_ridge" else Ridge(alpha=alpha))
    y_tr, y_te = targets(z_tr), targets(z_te)
    predicted = model.fit(scaler.transform(a), np.hstack(y_tr)).predict(scaler.transform(b))
    r2, start = np.full(k, np.nan), 0
    for j, y in enumerate(y_te):
        pred = predicted.reshape(len(b), -1)[:, start : start + y.shape[1]]
        start += y.shape[1]
        ss_tot = ((y - y.mean(0)) ** 2).sum()
        if ss_tot > 0:
            r2[j] = 1.0 - ((y - pred) ** 2).sum() / ss_tot
    return r2


def class_accuracy_heldout(
    rep_train: np.ndarray, labels_train: np.ndarray, rep_test: np.ndarray, labels_test: np.ndarray
) -> float:
    """Accuracy on held-out cells of a logistic regression (standardised features) from the
    representation (cells, p) to integer or string labels (cells,); in [0, 1]."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y_tr, y_te = np.asarray(labels_train), np.asarray(labels_test)
    a, b = _train_test(rep_train, rep_test, "representation", len(y_tr), len(y_te))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float((model.fit(a, y_tr).predict(b) == y_te).mean())
