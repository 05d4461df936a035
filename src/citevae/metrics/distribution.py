"""Distribution distances between predicted and real cells in a fixed PCA space."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from citevae.errors import CiteVAEError
from citevae.metrics._checks import as_cells
from citevae.module.distances import energy_distance, mmd

__all__ = ["PCAProjection", "energy_distance_pca", "fit_pca", "mmd_pca"]


@dataclass(frozen=True)
class PCAProjection:
    """A fitted linear projection: ``proj(x) = (x - mean) @ components.T``.

    mean: (G,); components: (k, G), orthonormal rows; explained_variance_ratio: (k,).
    Calling it maps (cells, G) -> (cells, k).
    """

    mean: np.ndarray
    components: np.ndarray
    explained_variance_ratio: np.ndarray

    @property
    def n_components(self) -> int:
        """Number of principal components k."""
        return int(self.components.shape[0])

    def __call__(self, x: object) -> np.ndarray:
        """Project cells (cells, G), dense or sparse, to (cells, k) float64."""
        arr = as_cells(x, "x")
        if arr.shape[1] != self.mean.size:
            raise CiteVAEError(
                f"x has {arr.shape[1]} genes but the PCA was fitted on {self.mean.size}; "
                "use the same genes in the same order"
            )
        return (arr - self.mean) @ self.components.T


def fit_pca(x_train: object, n_components: int = 50, seed: int = 0) -> PCAProjection:
    """Fit PCA on training cells (cells, G) (log1p scale; dense or sparse).

    ``n_components`` is capped at min(cells, G); scikit-learn's PCA with ``random_state=seed``.
    Returns a ``PCAProjection`` (plain arrays: picklable, deterministic to apply).
    """
    from sklearn.decomposition import PCA

    arr = as_cells(x_train, "x_train")
    if not isinstance(n_components, int | np.integer) or n_components < 1:
        raise CiteVAEError(f"n_components must be a positive integer, got {n_components!r}")
    k = int(min(n_components, *arr.shape))
    pca = PCA(n_components=k, random_state=seed).fit(arr)
    return PCAProjection(
        mean=pca.mean_.astype(np.float64),
        components=pca.components_.astype(np.float64),
        explained_variance_ratio=pca.explained_variance_ratio_.astype(np.float64),
    )


def _projected_pair(
    pred_cells: object, true_cells: object, pca: PCAProjection, max_cells: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project both sets, subsample each to ``max_cells`` rows (without replacement), to float64."""
    rng = np.random.default_rng(seed)
    out = []
    for name, cells in (("pred_cells", pred_cells), ("true_cells", true_cells)):
        arr = as_cells(cells, name)
        if max_cells is not None and arr.shape[0] > max_cells:
            arr = arr[np.sort(rng.choice(arr.shape[0], size=max_cells, replace=False))]
        out.append(torch.from_numpy(np.ascontiguousarray(pca(arr))).to(torch.float64))
    return out[0], out[1]


def energy_distance_pca(
    pred_cells: object,
    true_cells: object,
    pca: PCAProjection,
    max_cells: int | None = None,
    seed: int = 0,
) -> float:
    """Energy distance (V-statistic, squared form) between two cell sets in PCA space.

    pred_cells: (n, G), true_cells: (m, G) on the scale the PCA was fitted on. Cost O(n m);
    ``max_cells`` subsamples each set (with ``seed``) when larger. Units: PCA coordinates.
    """
    x, y = _projected_pair(pred_cells, true_cells, pca, max_cells, seed)
    with torch.no_grad():
        return float(energy_distance(x, y))


def mmd_pca(
    pred_cells: object,
    true_cells: object,
    pca: PCAProjection,
    bandwidths: Sequence[float] | None = None,
    max_cells: int | None = None,
    seed: int = 0,
) -> float:
    """Squared MMD (biased, sum of Gaussian kernels) between two cell sets in PCA space.

    Bandwidths default to multiples of the pooled median distance (see ``citevae.module.distances
    .mmd``); pass fixed ``bandwidths`` to compare values across perturbations on one scale.
    Shapes and ``max_cells`` as in ``energy_distance_pca``.
    """
    x, y = _projected_pair(pred_cells, true_cells, pca, max_cells, seed)
    with torch.no_grad():
        return float(mmd(x, y, bandwidths))
