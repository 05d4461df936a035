"""Tests of citevae.metrics.de.top_de_genes."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import rankdata

from citevae.errors import CiteVAEError, DataValidationError
from citevae.metrics import top_de_genes


def _adata(seed: int = 0, n_per: int = 15, n_genes: int = 8) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    labels = np.repeat(["control", "A", "B"], n_per)
    x = rng.normal(size=(labels.size, n_genes))
    x[labels == "A", 3] += 3.0  # strongly up
    x[labels == "A", 1] -= 2.0  # down
    x[labels == "B", 5] += 3.0
    cell_type = np.tile(["t1", "t2", "t1"], labels.size // 3)
    obs = pd.DataFrame(
        {"perturbation": pd.Categorical(labels), "cell_type": cell_type},
        index=[f"c{i}" for i in range(labels.size)],
    )
    var = pd.DataFrame(index=[f"g{j}" for j in range(n_genes)])
    return ad.AnnData(X=x, obs=obs, var=var)


def _wilcoxon_z(x_group: np.ndarray, x_ref: np.ndarray) -> np.ndarray:
    """Independent Wilcoxon rank-sum z per gene (no tie correction), group vs reference."""
    n1, n2 = x_group.shape[0], x_ref.shape[0]
    ranks = rankdata(np.vstack([x_group, x_ref]), axis=0)
    rank_sum = ranks[:n1].sum(0)
    return (rank_sum - n1 * (n1 + n2 + 1) / 2) / np.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)


def test_ranking_matches_independent_wilcoxon_by_absolute_score():
    adata = _adata()
    got = top_de_genes(adata, "perturbation", "A", "control", n=8)
    labels = adata.obs["perturbation"].to_numpy()
    z = _wilcoxon_z(adata.X[labels == "A"], adata.X[labels == "control"])
    np.testing.assert_array_equal(got, np.argsort(-np.abs(z), kind="stable"))
    assert got[0] == 3 and 1 in got[:3]  # strong up-regulation first, down-regulation near top


def test_n_caps_and_dtype():
    adata = _adata()
    top2 = top_de_genes(adata, "perturbation", "B", "control", n=2)
    assert top2.shape == (2,) and np.issubdtype(top2.dtype, np.integer) and top2[0] == 5
    assert top_de_genes(adata, "perturbation", "B", "control", n=100).shape == (8,)


def test_input_adata_is_not_modified():
    adata = _adata()
    x_before, obs_before = adata.X.copy(), adata.obs.copy()
    top_de_genes(adata, "perturbation", "A", "control")
    assert list(adata.uns.keys()) == []
    np.testing.assert_array_equal(adata.X, x_before)
    pd.testing.assert_frame_equal(adata.obs, obs_before)
    assert list(adata.var.columns) == []


def test_mask_restricts_to_context():
    adata = _adata(n_per=30)
    adata.X = np.random.default_rng(9).normal(size=adata.shape)  # no effect anywhere ...
    t1 = (adata.obs["cell_type"] == "t1").to_numpy()
    is_a = (adata.obs["perturbation"] == "A").to_numpy()
    adata.X[is_a & t1, 0] += 5.0  # ... but gene 0 in cell type t1
    adata.X[is_a & ~t1, 2] += 5.0  # ... and gene 2 in cell type t2
    assert top_de_genes(adata, "perturbation", "A", "control", n=1, mask=t1)[0] == 0
    assert top_de_genes(adata, "perturbation", "A", "control", n=1, mask=~t1)[0] == 2


def test_layer_and_sparse_input():
    adata = _adata()
    adata.layers["log1p"] = sp.csr_matrix(adata.X[:, ::-1].copy())  # genes reversed
    adata.X = np.zeros_like(adata.X)
    got = top_de_genes(adata, "perturbation", "A", "control", n=1, layer="log1p")
    assert got[0] == 7 - 3


def test_errors():
    adata = _adata()
    with pytest.raises(DataValidationError, match="nope"):
        top_de_genes(adata, "nope", "A", "control")
    with pytest.raises(DataValidationError, match="'Z'"):
        top_de_genes(adata, "perturbation", "Z", "control")
    with pytest.raises(DataValidationError, match="layer"):
        top_de_genes(adata, "perturbation", "A", "control", layer="counts")
    with pytest.raises(CiteVAEError, match="mask"):
        top_de_genes(adata, "perturbation", "A", "control", mask=np.ones(3, dtype=bool))
    with pytest.raises(CiteVAEError, match="n must"):
        top_de_genes(adata, "perturbation", "A", "control", n=0)
