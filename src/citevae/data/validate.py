"""Checks of a user's AnnData before anything is registered; each failure names the problem."""

from __future__ import annotations

import difflib
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from citevae.errors import DataValidationError, format_names

Scale = Literal["counts", "log1p", "continuous"]
"""Expression scales: raw counts (negative binomial likelihood), log1p-normalised values, or other
continuous values such as simulated or scaled features (both Gaussian)."""
SCALES = ("counts", "log1p", "continuous")

LOG1P_MAX = 30.0
"""Values above this cannot be log1p-normalised expression (exp(30) ~ 1e13 counts)."""

ROW_CHUNK = 8192
"""Rows scanned at a time, so that checks of large or backed matrices stay within memory."""


def check_anndata(adata: object) -> AnnData:
    """Refuse objects that are not a non-empty AnnData with unique cell and gene names."""
    if not isinstance(adata, AnnData):
        raise DataValidationError(f"expected an AnnData object, got {type(adata).__name__}")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise DataValidationError(
            f"the AnnData is empty ({adata.n_obs} cells x {adata.n_vars} genes); "
            "it needs at least one cell and one gene"
        )
    for axis, names in (("cell", adata.obs_names), ("gene", adata.var_names)):
        duplicated = names[names.duplicated()].unique().tolist()
        if duplicated:
            fix = "adata.obs_names_make_unique()" if axis == "cell" else "adata.var_names_make_unique()"
            raise DataValidationError(
                f"{len(duplicated)} {axis} name(s) occur more than once: "
                f"{format_names(duplicated)}; make them unique first (e.g. {fix})"
            )
    return adata


def check_obs_key(adata: AnnData, key: str, role: str) -> pd.Series:
    """Return ``adata.obs[key]``; a missing key raises an error suggesting close column names."""
    if not isinstance(key, str) or key not in adata.obs.columns:
        close = difflib.get_close_matches(str(key), adata.obs.columns.astype(str), n=3)
        hint = f"; did you mean {format_names(close)}?" if close else ""
        raise DataValidationError(
            f"{role} key {key!r} is not a column of adata.obs{hint} "
            f"(columns: {format_names(list(adata.obs.columns))})"
        )
    column = adata.obs[key]
    missing = column.isna().to_numpy()
    if missing.any():
        rows = adata.obs_names[missing][:5].tolist()
        raise DataValidationError(
            f"{role} column {key!r} has {int(missing.sum())} missing value(s) "
            f"(cells {format_names(rows)}); fill or drop those cells"
        )
    return column


def expression_matrix(adata: AnnData, layer: str | None):
    """The matrix holding expression: ``adata.X`` or ``adata.layers[layer]``."""
    if layer is None:
        if adata.X is None:
            raise DataValidationError("adata.X is empty; store expression in X or name a layer")
        return adata.X
    if layer not in adata.layers:
        raise DataValidationError(
            f"layer {layer!r} is not in adata.layers (layers: {format_names(list(adata.layers))})"
        )
    return adata.layers[layer]


def iter_row_blocks(matrix, chunk: int = ROW_CHUNK):
    """Yield (start, block) over rows of a dense, sparse or backed matrix; sparse and backed
    sparse blocks stay scipy sparse (CSR for row-sliced CSR), dense blocks stay numpy."""
    for start in range(0, matrix.shape[0], chunk):
        block = matrix[start : start + chunk]
        if not sparse.issparse(block) and hasattr(block, "to_memory"):
            block = block.to_memory()
        yield start, block if sparse.issparse(block) else np.asarray(block)


def iter_row_chunks(matrix, chunk: int = ROW_CHUNK):
    """Yield (start, dense float64 block) over rows of a dense, sparse or backed matrix."""
    for start, block in iter_row_blocks(matrix, chunk):
        yield start, np.asarray(block.toarray() if sparse.issparse(block) else block, dtype=np.float64)


def _stored_values(block) -> np.ndarray:
    """The values a check must see: the stored entries of a sparse block (its implicit zeros pass
    every check), every entry of a dense one; flat."""
    return block.data if sparse.issparse(block) else block.ravel()


def _cell_and_gene(block, flat: int) -> tuple[int, int]:
    """(row, column) in ``block`` of the ``flat``-th value of ``_stored_values(block)``."""
    if sparse.issparse(block):
        coo = block.tocoo()  # keeps the order of the stored entries
        return int(coo.row[flat]), int(coo.col[flat])
    row, col = np.unravel_index(flat, block.shape)
    return int(row), int(col)


def check_expression(
    adata: AnnData, layer: str | None, scale: Scale | Literal["auto"] = "auto"
) -> tuple[Scale, np.ndarray]:
    """Check values and decide the scale; returns (scale, per-cell totals of the matrix).

    Refuses NaN or infinite values, negative values (unless "continuous" is declared), non-integers
    where counts are declared, cells whose counts are all zero, and values that are neither counts
    nor log1p-normalised.
    """
    where = f"adata.layers[{layer!r}]" if layer else "adata.X"
    if scale != "auto" and scale not in SCALES:
        raise DataValidationError(f"scale must be 'auto' or one of {SCALES}, got {scale!r}")
    matrix = expression_matrix(adata, layer)
    dtype = np.dtype(matrix.dtype)
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise DataValidationError(f"{where} has non-numeric dtype {dtype}")
    totals = np.zeros(adata.n_obs)
    all_integer, maximum = True, 0.0
    for start, block in iter_row_blocks(matrix):
        values = _stored_values(block)
        if values.dtype.kind != "f":
            values = values.astype(np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            row, col = _cell_and_gene(block, int(np.argmax(bad)))
            raise DataValidationError(
                f"{where} holds {int(bad.sum())} NaN or infinite value(s) in rows "
                f"{start}..{start + block.shape[0] - 1}, first at cell "
                f"{adata.obs_names[start + row]!r}, gene {adata.var_names[col]!r}"
            )
        negative = values < 0
        if negative.any() and scale != "continuous":
            row, col = _cell_and_gene(block, int(np.argmax(negative)))
            raise DataValidationError(
                f"{where} holds {int(negative.sum())} negative value(s), first at cell "
                f"{adata.obs_names[start + row]!r}, gene {adata.var_names[col]!r}; expression must "
                "be raw counts or log1p-normalised values (both >= 0); declare "
                "scale='continuous' for other real-valued features"
            )
        all_integer = all_integer and bool(np.all(values == np.round(values)))
        maximum = max(maximum, float(values.max(initial=0.0)))
        totals[start : start + block.shape[0]] = np.asarray(block.sum(axis=1, dtype=np.float64)).ravel()
    if scale == "auto":
        scale = "counts" if all_integer and maximum > 1 else "log1p"
    if scale == "counts":
        if not all_integer:
            raise DataValidationError(
                f"{where} was declared as counts but holds non-integer values; pass raw counts "
                "(e.g. layer='counts') or declare scale='log1p' for log1p-normalised data"
            )
        empty = np.flatnonzero(totals == 0)
        if empty.size:
            raise DataValidationError(
                f"{empty.size} cell(s) have zero total counts (e.g. "
                f"{format_names(adata.obs_names[empty].tolist(), 5)}); "
                "filter them first (sc.pp.filter_cells(adata, min_counts=1))"
            )
    elif scale == "log1p" and maximum > LOG1P_MAX:
        raise DataValidationError(
            f"{where} is not integer counts and its maximum {maximum:.4g} is too large for "
            "log1p-normalised data; pass raw counts, or normalise first "
            "(sc.pp.normalize_total then sc.pp.log1p)"
        )
    return scale, totals
