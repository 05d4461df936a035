"""The linear baseline (Ahlmann-Eltze et al. 2025) on the toy of ``test_simple``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_simple import held_controls, toy

from citevae.baselines import Linear
from citevae.errors import DataValidationError


def test_exact_fit_reproduces_deltas_and_is_additive():
    adata, train = toy()
    # genes "A", "B" are measured: P = rows of G (2 x 2, full rank); with ridge -> 0 the fit is exact,
    # so A+B gets delta_A + delta_B = [1, -1] in context x
    model = Linear(ridge=1e-10).fit(adata, train)
    controls = held_controls(adata, "x")
    out = model.predict(controls, ["A", "B", "A+B"])
    np.testing.assert_allclose(out.X, [[1.2, 0.3], [3.0, 3.0], [0.2, 0.0], [2.0, 2.0],
                                       [1.2, 0.0], [3.0, 2.0]], atol=1e-5)


def test_ridge_matches_closed_form():
    adata, train = toy()
    model = Linear(ridge=0.1).fit(adata, train)
    G = model.G
    Y = np.array([[1.0, 0.0], [0.0, -1.0]])  # columns: deltas of A, B in context x
    P = G[[0, 1]]
    W = np.linalg.inv(G.T @ G + 0.1 * np.eye(2)) @ G.T @ Y @ P @ np.linalg.inv(P.T @ P + 0.1 * np.eye(2))
    out = model.predict(held_controls(adata, "x")[1:], ["A+B"])
    np.testing.assert_allclose(out.X[0], np.array([2.0, 3.0]) + G @ W @ (P[0] + P[1]), rtol=1e-5)


def test_targets_without_embedding_predict_delta_zero():
    adata, train = toy()
    controls = held_controls(adata, "x")
    out = Linear().fit(adata, train).predict(controls, ["NEW"])
    np.testing.assert_allclose(out.X, controls.X)
    features = pd.DataFrame({"f0": [1.0, 0.0, 1.0], "f1": [0.0, 1.0, 0.0]}, index=["A", "B", "NEW"])
    with_features = Linear(gene_features=features).fit(adata, train).predict(controls, ["NEW"])
    assert np.all(np.isfinite(with_features.X)) and not np.allclose(with_features.X, controls.X)


def test_bad_arguments():
    with pytest.raises(DataValidationError, match="n_components"):
        Linear(n_components=0)
    with pytest.raises(DataValidationError, match="gene_features"):
        Linear(gene_features=pd.DataFrame({"f": [1.0, 2.0]}, index=["A", "A"]))
