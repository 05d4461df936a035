"""Tests of target-gene descriptors: co-expression loadings, gene features, availability flags."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from citevae.data import setup_anndata
from citevae.data.descriptors import build_descriptors, coexpression_loadings, log1p_normalised
from citevae.errors import DataValidationError
from citevae.sim import simulate_counts


@pytest.fixture(scope="module")
def data():
    adata = simulate_counts(n_genes=30, n_targets=3, n_pairs=1, n_cells_per_condition=25, seed=0)
    registry = setup_anndata(adata, "perturbation", "control")
    controls = np.flatnonzero((adata.obs["perturbation"] == "control").to_numpy())
    return adata, registry, controls


def test_coexpression_loadings_shape_and_scale(data) -> None:
    adata, registry, controls = data
    loadings = coexpression_loadings(adata, registry, controls, n_components=5)
    assert loadings.shape == (adata.n_vars, 5)
    assert list(loadings.index) == list(adata.var_names)
    assert list(loadings.columns) == [f"pc{i}" for i in range(5)]
    assert np.isfinite(loadings.to_numpy()).all()
    # squared loadings of a standardised gene over all components sum to at most its variance 1
    full = coexpression_loadings(adata, registry, controls, n_components=100)
    assert full.shape[1] == min(len(controls), adata.n_vars) - 1
    assert (np.square(full.to_numpy()).sum(1) <= 1.0 + 1e-4).all()
    # cell order does not matter
    again = coexpression_loadings(adata, registry, controls[::-1], n_components=5)
    np.testing.assert_allclose(np.abs(again.to_numpy()), np.abs(loadings.to_numpy()), atol=1e-5)


def test_coexpression_needs_two_cells(data) -> None:
    adata, registry, controls = data
    with pytest.raises(DataValidationError, match="2 control cells"):
        coexpression_loadings(adata, registry, controls[:1])


def test_build_descriptors_flags_availability(data) -> None:
    adata, registry, controls = data
    features = pd.DataFrame(np.arange(6, dtype=float).reshape(2, 3) + 1.0,
                            index=[adata.var_names[0], "EXTERNAL"], columns=["f0", "f1", "f2"])
    d = build_descriptors(adata, registry, controls, features, n_components=4)
    assert d.block_names == ("coexpression", "gene_features")
    assert d.block_sizes == (4, 3)
    assert d.n_features == 4 + 3 + 2
    assert set(d.genes) == set(adata.var_names) | {"EXTERNAL"}
    values, has = d.lookup(["EXTERNAL", adata.var_names[0], adata.var_names[1], "UNKNOWN"])
    assert values.shape == (4, 9) and values.dtype == np.float32
    np.testing.assert_array_equal(has, [True, True, True, False])
    # only in gene_features: coexpression zeros and flag 0
    np.testing.assert_array_equal(values[0, :4], 0.0)
    np.testing.assert_array_equal(values[0, 4:7], [4.0, 5.0, 6.0])
    np.testing.assert_array_equal(values[0, 7:], [0.0, 1.0])
    # in both blocks
    np.testing.assert_array_equal(values[1, 4:7], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(values[1, 7:], [1.0, 1.0])
    # measured only: gene-feature zeros and flag 0
    loadings = coexpression_loadings(adata, registry, controls, n_components=4)
    np.testing.assert_allclose(values[2, :4], loadings.loc[adata.var_names[1]].to_numpy())
    np.testing.assert_array_equal(values[2, 4:], [0.0, 0.0, 0.0, 1.0, 0.0])
    # unknown gene: nothing
    np.testing.assert_array_equal(values[3], 0.0)


def test_build_descriptors_without_features(data) -> None:
    adata, registry, controls = data
    d = build_descriptors(adata, registry, controls, None, n_components=3)
    assert d.block_names == ("coexpression",) and d.n_features == 4
    values, has = d.lookup(list(adata.var_names))
    assert has.all()
    np.testing.assert_array_equal(values[:, -1], 1.0)


def test_gene_features_are_validated(data) -> None:
    adata, registry, controls = data
    duplicated = pd.DataFrame(np.ones((2, 2)), index=["A", "A"])
    with pytest.raises(DataValidationError, match="unique"):
        build_descriptors(adata, registry, controls, duplicated)
    bad = pd.DataFrame([[1.0, np.nan]], index=["A"])
    with pytest.raises(DataValidationError, match="NaN"):
        build_descriptors(adata, registry, controls, bad)


def test_log1p_normalised() -> None:
    counts = np.array([[1.0, 3.0], [0.0, 2.0]])
    np.testing.assert_allclose(log1p_normalised(counts, "counts", 4.0),
                               np.log1p([[1.0, 3.0], [0.0, 4.0]]))
    assert log1p_normalised(counts, "log1p") is counts


def test_coexpression_loadings_equal_the_svd_of_standardised_cells(data) -> None:
    adata, registry, controls = data
    loadings = coexpression_loadings(adata, registry, controls, n_components=6).to_numpy()
    x = log1p_normalised(np.asarray(adata.X[np.sort(controls)].toarray(), float), registry.scale)
    std = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    _, singular, vt = np.linalg.svd(z, full_matrices=False)
    expected = vt[:6].T * singular[:6] / np.sqrt(len(controls))
    np.testing.assert_allclose(np.abs(loadings), np.abs(expected), atol=1e-5)  # up to each sign
    largest = np.abs(loadings).argmax(axis=0)
    assert (loadings[largest, np.arange(6)] > 0).all()
