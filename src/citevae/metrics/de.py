"""Differentially expressed genes of a perturbation vs control, for gene-restricted metrics."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from citevae.errors import CiteVAEError, DataValidationError

__all__ = ["top_de_genes"]

_GROUP, _REF, _KEY = "group", "reference", "_citevae_de"


def top_de_genes(
    adata: ad.AnnData,
    groupby: str,
    group: object,
    reference: object,
    n: int = 20,
    layer: str | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of the ``n`` genes most differentially expressed in ``group`` vs ``reference``.

    Runs ``sc.tl.rank_genes_groups(method="wilcoxon")`` on the group's cells against the reference
    (control) cells, on ``adata.layers[layer]`` or ``adata.X`` (expected log1p). ``mask`` (bool,
    one per cell) restricts both sets to one context, e.g. one cell type. Genes are ranked by the
    absolute Wilcoxon z-score (scanpy's ``scores``; up- and down-regulated alike, as GEARS does),
    ties broken by gene order. Returns int indices into ``adata.var_names``, best first, length
    ``min(n, n_vars)``. The input AnnData is never modified (scanpy runs on a new, minimal one).
    """
    import scanpy as sc  # heavy import, only needed here

    if not isinstance(n, int | np.integer) or n < 1:
        raise CiteVAEError(f"n must be a positive integer, got {n!r}")
    if groupby not in adata.obs.columns:
        raise DataValidationError(f"obs column {groupby!r} not found; available: {list(adata.obs.columns)}")
    if layer is not None and layer not in adata.layers:
        raise DataValidationError(f"layer {layer!r} not found; available: {list(adata.layers)}")
    labels = adata.obs[groupby].to_numpy()
    in_group, in_ref = labels == group, labels == reference
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (adata.n_obs,):
            raise CiteVAEError(
                f"mask must be a boolean array with one entry per cell ({adata.n_obs}), "
                f"got dtype {mask.dtype} and shape {mask.shape}"
            )
        in_group, in_ref = in_group & mask, in_ref & mask
    for name, label, sel in (("group", group, in_group), ("reference", reference, in_ref)):
        if sel.sum() < 2:
            raise DataValidationError(
                f"{name} {label!r} of obs[{groupby!r}] has {int(sel.sum())} cell(s) "
                "(after mask); the Wilcoxon test needs at least 2"
            )

    rows = np.flatnonzero(in_group | in_ref)
    matrix = adata.layers[layer] if layer is not None else adata.X
    x = matrix[rows]
    x = x.tocsr() if sp.issparse(x) else np.asarray(x)
    obs = pd.DataFrame(
        {_KEY: pd.Categorical(np.where(in_group[rows], _GROUP, _REF), categories=[_GROUP, _REF])},
        index=pd.RangeIndex(rows.size).astype(str),
    )
    var = pd.DataFrame(index=pd.RangeIndex(adata.n_vars).astype(str))  # names = positions
    tmp = ad.AnnData(X=x.astype(np.float64), obs=obs, var=var)
    with np.errstate(invalid="ignore", divide="ignore"):  # log fold changes (unused) of log1p<0
        sc.tl.rank_genes_groups(
            tmp,
            _KEY,
            groups=[_GROUP],
            reference=_REF,
            method="wilcoxon",
            n_genes=adata.n_vars,
            use_raw=False,
            key_added=_KEY,
        )
    result = tmp.uns[_KEY]
    positions = np.asarray(result["names"][_GROUP]).astype(np.intp)
    scores = np.empty(adata.n_vars)
    scores[positions] = np.asarray(result["scores"][_GROUP], dtype=np.float64)
    scores = np.nan_to_num(scores, nan=0.0)  # constant genes (no test possible) rank last
    order = np.argsort(-np.abs(scores), kind="stable")
    return order[: min(n, adata.n_vars)]
