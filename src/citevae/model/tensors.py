"""Cells of an AnnData as the tensors a module consumes (expression, library, covariate codes)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from citevae.data.registry import DataRegistry
from citevae.data.validate import check_expression, expression_matrix, iter_row_chunks
from citevae.errors import CiteVAEError, VocabularyError, format_names


def cell_tensors(registry: DataRegistry, adata: AnnData) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Expression (N, G) float32 on the data scale, library sizes (N,) and covariate codes (N, C).

    The cells must have the registered genes (in order), values valid on the registered scale
    (``check_expression``) and covariate columns with known values.
    """
    registry.check_genes(adata)
    check_expression(adata, registry.layer, registry.scale)
    matrix = expression_matrix(adata, registry.layer)
    x = np.concatenate([block for _, block in iter_row_chunks(matrix)]).astype(np.float32)
    library = registry.library_sizes(adata)
    library = np.ones(len(x), np.float32) if library is None else library
    codes = np.zeros((adata.n_obs, len(registry.covariate_keys)), dtype=np.int64)
    for j, key in enumerate(registry.covariate_keys):
        if key not in adata.obs:
            raise CiteVAEError(f"covariate column {key!r} is missing from the cells' obs")
        values = adata.obs[key].astype(str)
        categories = registry.covariate_categories[key]
        unknown = sorted(set(values) - set(categories))
        if unknown:
            raise VocabularyError(f"covariate {key!r} has unseen value(s) {format_names(unknown)}")
        codes[:, j] = pd.Categorical(values, categories=categories).codes
    return torch.from_numpy(x), torch.as_tensor(library, dtype=torch.float32), torch.from_numpy(codes)


def iter_cell_tensors(registry: DataRegistry, adata: AnnData, batch_size: int
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``cell_tensors`` of consecutive blocks of ``batch_size`` cells, so that only one block of a
    large (or backed) AnnData is in memory at a time. A view of a backed AnnData (which anndata
    cannot view again) is read into memory first: its selected cells only."""
    if adata.is_view and adata.isbacked:
        adata = adata.to_memory()
    for start in range(0, adata.n_obs, batch_size):
        yield cell_tensors(registry, adata[start : start + batch_size])
