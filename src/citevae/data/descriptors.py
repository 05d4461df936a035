"""Descriptors of perturbation target genes (MODEL.md section 3): what makes unseen genes predictable.

Two sources, concatenated block-wise:
- co-expression: each MEASURED gene's loadings on the top principal components of control cells
  (log1p-normalised, genes standardised);
- gene features: an optional user table keyed by gene symbol (Gene Ontology features from
  ``citevae.data.gene_knowledge``, or any gene embedding).
A gene missing from a block gets zeros there and an availability flag of 0; the flags are part of
the descriptor so the descriptor network can tell "absent" from "zero".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from citevae.data.registry import DataRegistry
from citevae.data.validate import ROW_CHUNK, expression_matrix, iter_row_chunks
from citevae.errors import DataValidationError


@dataclass(frozen=True)
class GeneDescriptors:
    """Descriptor table of genes: ``values`` (n_genes, n_features) including availability flags."""

    genes: tuple[str, ...]
    values: np.ndarray
    block_sizes: tuple[int, ...]
    block_names: tuple[str, ...]

    @property
    def n_features(self) -> int:
        """Descriptor length (blocks plus one availability flag per block)."""
        return self.values.shape[1]

    def lookup(self, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Descriptors (len(names), n_features) float32 and availability (len(names),) bool."""
        index = {g: i for i, g in enumerate(self.genes)}
        out = np.zeros((len(names), self.n_features), dtype=np.float32)
        has = np.zeros(len(names), dtype=bool)
        for row, name in enumerate(names):
            if name in index:
                out[row] = self.values[index[name]]
                has[row] = True
        return out, has


def log1p_normalised(block: np.ndarray, scale: str, library_scale: float = 1e4) -> np.ndarray:
    """Rows of a matrix on the log1p-normalised scale (counts are depth-normalised first)."""
    if scale != "counts":
        return block
    totals = block.sum(axis=1, keepdims=True)
    return np.log1p(block / np.maximum(totals, 1e-12) * library_scale)


def coexpression_loadings(adata: AnnData, registry: DataRegistry, cells: np.ndarray,
                          n_components: int = 16) -> pd.DataFrame:
    """Loadings (genes x n_components) of every gene on the top PCs of the given control cells.

    Genes are standardised over the cells; loadings are right singular vectors scaled by the
    singular values / sqrt(n_cells), i.e. each gene's correlation-like weight on each component.
    They come from the eigendecomposition of the genes' correlation matrix, accumulated over
    blocks of ``ROW_CHUNK`` cells (memory: genes x genes, whatever the number of cells); each
    component's sign makes its largest loading positive.
    """
    if len(cells) < 2:
        raise DataValidationError(
            f"gene descriptors (co-expression over control cells) need at least 2 control cells, "
            f"got {len(cells)}; add control cells (at the first time point, with a time key)"
        )
    matrix = expression_matrix(adata, registry.layer)
    cells = np.sort(cells)
    n_genes = adata.n_vars
    total, gram = np.zeros(n_genes), np.zeros((n_genes, n_genes))
    for start in range(0, len(cells), ROW_CHUNK):
        for _, block in iter_row_chunks(matrix[cells[start : start + ROW_CHUNK]]):
            block = log1p_normalised(block, registry.scale)
            total += block.sum(axis=0)
            gram += block.T @ block
    mean = total / len(cells)
    covariance = gram / len(cells) - np.outer(mean, mean)
    variance = np.diag(covariance).copy()
    constant = variance <= 1e-10 * mean**2  # zero up to the rounding of E[x^2] - E[x]^2
    covariance[constant, :] = covariance[:, constant] = 0.0
    std = np.where(constant, 1.0, np.sqrt(np.abs(variance)))
    eigenvalues, eigenvectors = np.linalg.eigh(covariance / np.outer(std, std))
    order = np.argsort(eigenvalues)[::-1]
    k = min(n_components, min(len(cells), n_genes) - 1)
    vectors = eigenvectors[:, order[:k]]
    vectors *= np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(k)])
    loadings = vectors * np.sqrt(np.clip(eigenvalues[order[:k]], 0.0, None))
    columns = [f"pc{i}" for i in range(k)]
    return pd.DataFrame(loadings.astype(np.float32), index=list(registry.var_names), columns=columns)


def build_descriptors(adata: AnnData, registry: DataRegistry, control_cells: np.ndarray,
                      gene_features: pd.DataFrame | None = None,
                      n_components: int = 16) -> GeneDescriptors:
    """Descriptors of every gene that has co-expression loadings or a row in ``gene_features``."""
    blocks = {"coexpression": coexpression_loadings(adata, registry, control_cells, n_components)}
    if gene_features is not None:
        if not isinstance(gene_features, pd.DataFrame) or gene_features.index.has_duplicates:
            raise DataValidationError(
                "gene_features must be a DataFrame indexed by unique gene symbols"
            )
        numeric = gene_features.astype(np.float32)
        if not np.isfinite(numeric.to_numpy()).all():
            raise DataValidationError("gene_features holds NaN or infinite values")
        blocks["gene_features"] = numeric
    genes = sorted(set().union(*(set(b.index) for b in blocks.values())))
    parts, flags = [], []
    for block in blocks.values():
        aligned = block.reindex(genes)
        flags.append(aligned.notna().all(axis=1).to_numpy(np.float32)[:, None])
        parts.append(aligned.fillna(0.0).to_numpy(np.float32))
    values = np.concatenate(parts + flags, axis=1)
    sizes = tuple(b.shape[1] for b in blocks.values())
    return GeneDescriptors(tuple(genes), values, sizes, tuple(blocks))
