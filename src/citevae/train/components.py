"""Stage 1 of the staged fit: sparse principal components of expression, split into programs and
the rest (DEVELOPERS.md, session 17).

The programs of CITE-VAE's generative model load sparsely on genes, while the invariant state
spreads over them; both sit in the top principal components. The components are therefore
rotated to the sparsest gene loadings, and the sparsest of them are the programs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from citevae.errors import CiteVAEError

MAX_COMPONENTS = 50
"""Most principal components the eigenvalue gap may choose."""


@dataclass
class SparseComponents:
    """Sparse components of expression (the ``sparse_components`` result).

    Attributes:
        mean: (G,) expression mean of the fitted cells (log1p scale).
        projection: (G, d) x -> components: (x - mean) @ projection, unit variance on the fitted
            cells, ordered from the sparsest loadings to the densest.
        loadings: (G, d) least-squares gene loadings of the components.
        sparsity: (d,) L1/L2 norm of each component's loadings (ordered like the components).
        n_programs: the first ``n_programs`` components are the programs.
    """

    mean: np.ndarray
    projection: np.ndarray
    loadings: np.ndarray
    sparsity: np.ndarray
    n_programs: int

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Components (N, d) of expression ``x`` (N, G) on the log1p scale."""
        return (x - self.mean) @ self.projection


def largest_gap(values: np.ndarray, low: int, high: int, ratio: bool) -> int:
    """How many of the sorted ``values`` lie before their largest gap: k in [low, high)
    maximising values[k-1] / values[k] (``ratio``) or values[k] - values[k-1]."""
    ks = np.arange(low, high)
    gaps = values[ks - 1] / values[ks] if ratio else values[ks] - values[ks - 1]
    return int(ks[np.argmax(gaps)])


def sparse_rotation(scores: torch.Tensor, loadings: torch.Tensor, starts: int,
                    steps: int = 3000, seed: int = 0) -> np.ndarray:
    """R (d, d) such that the components ``scores @ R.T`` have unit variance and their loadings
    ``loadings @ inv(R)`` (G, d) the least L1 norm: the best of ``starts`` Adam runs from the
    identity and from randomly perturbed identities. ``scores`` (N, d), ``loadings`` (G, d)."""
    d = scores.shape[1]
    best, best_rotation = np.inf, np.eye(d)
    for start in range(starts):
        generator = torch.Generator().manual_seed(seed + start)
        noise = 0.5 * torch.randn(d, d, generator=generator, dtype=scores.dtype)
        rotation = torch.nn.Parameter(torch.eye(d, dtype=scores.dtype) + (start > 0) * noise)
        optimiser = torch.optim.Adam([rotation], lr=0.01)
        for _ in range(steps):
            scaled = rotation / (scores @ rotation.T).std(0)[:, None]
            l1 = (loadings @ torch.linalg.inv(scaled)).abs().sum()
            optimiser.zero_grad()
            l1.backward()
            optimiser.step()
        if l1.item() < best:
            best, best_rotation = l1.item(), scaled.detach().numpy()
    return best_rotation


def sparse_components(x: np.ndarray, n_components: int | None = None,
                      n_programs: int | None = None, starts: int = 16,
                      seed: int = 0) -> SparseComponents:
    """Sparse components of the cells ``x`` (N, G, log1p scale).

    The top ``n_components`` principal components (default: as many as lie before the largest
    ratio of consecutive eigenvalues, at most ``MAX_COMPONENTS``) are rotated to the least L1 of
    their unit-variance gene loadings (``sparse_rotation``, ``starts`` starts) and ordered from
    the sparsest loadings (L1/L2) to the densest; the first ``n_programs`` (default: those before
    the largest gap of L1/L2) are the programs.
    """
    x = np.asarray(x, np.float64)
    n_cells, n_genes = x.shape
    most = min(MAX_COMPONENTS, n_cells - 1, n_genes)
    if n_components is None:
        if most < 3:
            raise CiteVAEError(f"the staged fit needs at least 4 cells and 3 genes, got "
                               f"{n_cells} cells and {n_genes} genes")
    elif not 2 <= n_components <= most:
        raise CiteVAEError(f"n_components must be in [2, {most}] for {n_cells} cells and "
                           f"{n_genes} genes, got {n_components}")
    mean = x.mean(0)
    _, singular, vt = np.linalg.svd(x - mean, full_matrices=False)
    if n_components is None:
        n_components = largest_gap(np.maximum(singular[:most] ** 2, 1e-12), 2, most, ratio=True)
    if n_programs is not None and not 1 <= n_programs < n_components:
        raise CiteVAEError(f"n_programs must be in [1, {n_components - 1}] (n_components - 1), "
                           f"got {n_programs}")
    projection = vt[:n_components].T
    scores = (x - mean) @ projection
    projection = projection / scores.std(0)
    scores = (x - mean) @ projection
    loadings = np.linalg.lstsq(scores, x - mean, rcond=None)[0].T
    rotation = sparse_rotation(torch.from_numpy(scores), torch.from_numpy(loadings), starts,
                               seed=seed)
    loadings = loadings @ np.linalg.inv(rotation)
    sparsity = np.abs(loadings).sum(0) / np.sqrt((loadings ** 2).sum(0))
    ranked = np.argsort(sparsity)
    if n_programs is None:
        n_programs = largest_gap(sparsity[ranked], 1, n_components, ratio=False)
    return SparseComponents(mean, (projection @ rotation.T)[:, ranked], loadings[:, ranked],
                            sparsity[ranked], n_programs)
