"""Input checks shared by the metrics: shapes, emptiness, gene index sets."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from citevae.errors import CiteVAEError


def as_vector(x: object, name: str) -> np.ndarray:
    """Return ``x`` as a non-empty 1-D float64 array (a per-gene mean vector) or raise."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise CiteVAEError(
            f"{name} must be a 1-D vector over genes, got shape {arr.shape}; "
            "pass the mean over cells, e.g. cells.mean(axis=0)"
        )
    if arr.size == 0:
        raise CiteVAEError(f"{name} is empty; pass a vector with one value per gene")
    return arr


def as_vectors(names: tuple[str, ...], *xs: object) -> list[np.ndarray]:
    """Check several per-gene vectors: each 1-D, non-empty, all of the same length."""
    arrs = [as_vector(x, n) for x, n in zip(xs, names, strict=True)]
    sizes = {n: a.size for n, a in zip(names, arrs, strict=True)}
    if len(set(sizes.values())) > 1:
        raise CiteVAEError(f"vectors differ in gene count {sizes}; align them on one gene list")
    return arrs


def as_cells(x: object, name: str) -> np.ndarray:
    """Return ``x`` (cells, genes), dense or scipy sparse, as a non-empty 2-D float64 array."""
    arr = x.toarray() if sp.issparse(x) else x
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 2:
        raise CiteVAEError(f"{name} must be 2-D (cells, genes), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise CiteVAEError(f"{name} is empty (shape {arr.shape}); pass at least one cell and gene")
    return arr


def gene_index(genes: object | None, n_genes: int) -> np.ndarray | slice:
    """Validate gene indices (int indices or a boolean mask over genes); ``None`` -> all genes."""
    if genes is None:
        return slice(None)
    idx = np.asarray(genes)
    if idx.ndim != 1:
        raise CiteVAEError(f"genes must be 1-D (indices or a boolean mask), got shape {idx.shape}")
    if idx.dtype == bool:
        if idx.size != n_genes:
            raise CiteVAEError(f"boolean genes mask has {idx.size} entries, expected {n_genes}")
        idx = np.flatnonzero(idx)
    elif idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise CiteVAEError(f"genes must be integer indices or a boolean mask, got {idx.dtype}")
    idx = idx.astype(np.intp)
    if idx.size == 0:
        raise CiteVAEError("genes selects no gene; pass at least one gene index or None for all")
    bad = idx[(idx < 0) | (idx >= n_genes)]
    if bad.size:
        raise CiteVAEError(f"gene index {int(bad[0])} is out of range for {n_genes} genes (0..{n_genes - 1})")
    return idx
