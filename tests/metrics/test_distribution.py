"""Tests of citevae.metrics.distribution: PCA projection and distances in PCA space."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from citevae.errors import CiteVAEError
from citevae.metrics import PCAProjection, energy_distance_pca, fit_pca, mmd_pca
from citevae.module.distances import energy_distance, mmd


def test_fit_pca_basic_properties():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 10)) @ rng.normal(size=(10, 10))
    pca = fit_pca(x, n_components=4, seed=0)
    assert isinstance(pca, PCAProjection) and pca.n_components == 4
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(4), atol=1e-10)
    proj = pca(x)
    assert proj.shape == (60, 4)
    np.testing.assert_allclose(proj.mean(0), 0.0, atol=1e-10)
    # first component variance = top eigenvalue of the covariance (independent formula)
    top_eig = np.linalg.eigvalsh(np.cov(x, rowvar=False))[-1]
    assert proj[:, 0].var(ddof=1) == pytest.approx(top_eig, rel=1e-8)


def test_fit_pca_caps_components_and_accepts_sparse():
    x = np.random.default_rng(1).normal(size=(5, 8))
    assert fit_pca(x, n_components=50).n_components == 5
    dense, sparse = fit_pca(x, n_components=3), fit_pca(sp.csr_matrix(x), n_components=3)
    np.testing.assert_allclose(np.abs(dense(x)), np.abs(sparse(x)), atol=1e-10)


def test_energy_on_a_line_hand_computed():
    # training cells on the line through the origin along (3, 4) / 5; one PC
    t = np.linspace(-2.0, 2.0, 9)[:, None]
    pca = fit_pca(t * np.array([[0.6, 0.8]]), n_components=1)
    pred, true = np.array([[0.0, 0.0]]), np.array([[3.0, 4.0]])  # 5 apart along the line
    assert energy_distance_pca(pred, true, pca) == pytest.approx(2.0 * 5.0, rel=1e-10)
    # an offset orthogonal to the line is projected away
    assert energy_distance_pca(pred + np.array([[4.0, -3.0]]), true, pca) == pytest.approx(10.0)


def test_full_rank_pca_preserves_distances():
    rng = np.random.default_rng(2)
    x_train = rng.normal(size=(40, 6))
    pca = fit_pca(x_train, n_components=6)
    a, b = rng.normal(size=(12, 6)), rng.normal(0.7, 1.0, size=(15, 6))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    assert energy_distance_pca(a, b, pca) == pytest.approx(float(energy_distance(ta, tb)), rel=1e-9)
    assert mmd_pca(a, b, pca) == pytest.approx(float(mmd(ta, tb)), rel=1e-9)
    assert mmd_pca(a, b, pca, bandwidths=[1.0]) == pytest.approx(float(mmd(ta, tb, [1.0])), rel=1e-9)


def test_identical_sets_and_subsampling():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 5))
    pca = fit_pca(x, n_components=3)
    assert energy_distance_pca(x, x, pca) == 0.0
    assert abs(mmd_pca(x, x, pca)) < 1e-12
    y = rng.normal(size=(20, 5))
    full = energy_distance_pca(x, y, pca)
    assert energy_distance_pca(x, y, pca, max_cells=30) == full  # no subsampling needed
    sub1 = energy_distance_pca(x, y, pca, max_cells=10, seed=4)
    assert sub1 == energy_distance_pca(x, y, pca, max_cells=10, seed=4)
    assert sub1 >= 0.0


def test_errors():
    pca = fit_pca(np.random.default_rng(4).normal(size=(10, 4)), n_components=2)
    with pytest.raises(CiteVAEError, match="genes"):
        pca(np.zeros((3, 5)))
    with pytest.raises(CiteVAEError, match="empty"):
        energy_distance_pca(np.zeros((0, 4)), np.zeros((3, 4)), pca)
    with pytest.raises(CiteVAEError):
        mmd_pca(np.zeros(4), np.zeros((3, 4)), pca)
    with pytest.raises(CiteVAEError, match="n_components"):
        fit_pca(np.zeros((3, 4)), n_components=0)
