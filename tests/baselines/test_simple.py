"""Mean baselines on a hand-computed toy: 2 genes "A", "B"; contexts x and y.

Context x: control mean [1.25, 2.25]; A mean [2.25, 2.25] (delta [1, 0]); B mean [1.25, 1.25]
(delta [0, -1]); A+B held out. Context y: control mean [0.5, 0.5]; A mean [2.5, 0.5] (delta [2, 0]).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from citevae.baselines import (
    BASELINES,
    Additive,
    ContextTransfer,
    ControlMean,
    TrainingMean,
    get_baseline,
)
from citevae.data import setup_anndata
from citevae.errors import CiteVAEError, DataValidationError

CELLS = [  # (condition, context, expression, set)
    ("control", "x", [1.0, 2.0], "train"), ("control", "x", [1.5, 2.5], "train"),
    ("control", "x", [0.2, 0.3], "test"), ("control", "x", [2.0, 3.0], "test"),
    ("A", "x", [2.0, 2.0], "train"), ("A", "x", [2.5, 2.5], "train"),
    ("B", "x", [1.0, 1.5], "train"), ("B", "x", [1.5, 1.0], "train"),
    ("A+B", "x", [1.75, 2.75], "test"), ("A+B", "x", [1.75, 2.75], "test"),
    ("control", "y", [0.5, 0.5], "train"), ("control", "y", [0.5, 0.5], "train"),
    ("control", "y", [1.0, 1.0], "test"),
    ("A", "y", [2.25, 0.25], "train"), ("A", "y", [2.75, 0.75], "train"),
]


def toy() -> tuple[ad.AnnData, np.ndarray]:
    """The toy AnnData (set up with covariate "cell") and its train mask."""
    obs = pd.DataFrame({"perturbation": [c[0] for c in CELLS], "cell": [c[1] for c in CELLS]},
                       index=[f"cell{i}" for i in range(len(CELLS))])
    adata = ad.AnnData(np.array([c[2] for c in CELLS], dtype=np.float32), obs=obs,
                       var=pd.DataFrame(index=["A", "B"]))
    setup_anndata(adata, "perturbation", "control", covariate_keys=["cell"])
    return adata, np.array([c[3] == "train" for c in CELLS])


def held_controls(adata: ad.AnnData, context: str) -> ad.AnnData:
    """Test control cells of one context."""
    mask = [c[0] == "control" and c[1] == context and c[3] == "test" for c in CELLS]
    return adata[np.array(mask)].copy()


def predicted(baseline, adata, train, context: str, perturbation: str) -> np.ndarray:
    model = baseline.fit(adata, train)
    return model.predict(held_controls(adata, context), [perturbation]).X


def test_control_mean_returns_the_controls():
    adata, train = toy()
    np.testing.assert_allclose(predicted(ControlMean(), adata, train, "x", "A+B"), [[0.2, 0.3], [2.0, 3.0]])


def test_training_mean_per_context_and_clipped():
    adata, train = toy()
    # x: mean of deltas [1, 0] and [0, -1] = [0.5, -0.5]; the first cell clips at 0
    np.testing.assert_allclose(predicted(TrainingMean(), adata, train, "x", "A+B"),
                               [[0.7, 0.0], [2.5, 2.5]], atol=1e-6)
    # y: only A trained there, delta [2, 0]; any label is accepted
    np.testing.assert_allclose(predicted(TrainingMean(), adata, train, "y", "UNSEEN"), [[3.0, 1.0]])


def test_additive_sums_singles_with_pooled_fallback():
    adata, train = toy()
    np.testing.assert_allclose(predicted(Additive(), adata, train, "x", "B+A"),
                               [[1.2, 0.0], [3.0, 2.0]], atol=1e-6)
    # y: A in y [2, 0] + B pooled from x [0, -1]
    np.testing.assert_allclose(predicted(Additive(), adata, train, "y", "A+B"), [[3.0, 0.0]])
    # a target never trained as a single contributes 0
    np.testing.assert_allclose(predicted(Additive(), adata, train, "x", "A+NEW"),
                               [[1.2, 0.3], [3.0, 3.0]], atol=1e-6)


def test_context_transfer_uses_other_contexts_only():
    adata, train = toy()
    np.testing.assert_allclose(predicted(ContextTransfer(), adata, train, "x", "A"),
                               [[2.2, 0.3], [4.0, 3.0]], atol=1e-6)
    np.testing.assert_allclose(predicted(ContextTransfer(), adata, train, "y", "A"), [[2.0, 1.0]])
    with pytest.raises(CiteVAEError, match="'B'"):
        predicted(ContextTransfer(), adata, train, "x", "B")
    with pytest.raises(CiteVAEError, match="'NEW'"):
        predicted(ContextTransfer(), adata, train, "y", "NEW")


def test_prediction_layout():
    adata, train = toy()
    controls = held_controls(adata, "x")
    out = Additive().fit(adata, train).predict(controls, ["A+B", "control", "A"])
    assert out.shape == (6, 2)
    assert list(out.var_names) == ["A", "B"]
    assert list(out.obs.columns) == ["perturbation", "time", "step", "control_cell", "cell"]
    assert list(out.obs["perturbation"]) == ["A+B", "A+B", "control", "control", "A", "A"]
    assert list(out.obs["control_cell"]) == ["cell2", "cell3"] * 3
    assert list(out.obs["step"]) == [4, 4, 0, 0, 4, 4]
    assert set(out.obs["cell"]) == {"x"}
    assert out.uns["citevae"]["scale"] == "log1p"
    np.testing.assert_allclose(out.X[2:4], [[0.2, 0.3], [2.0, 3.0]])
    np.testing.assert_allclose(out.X[4:], [[1.2, 0.3], [3.0, 3.0]], atol=1e-6)


@pytest.mark.parametrize("name", ["training_mean", "additive", "context_transfer", "linear"])
def test_fit_ignores_cells_outside_train_mask(name):
    adata, train = toy()
    controls = held_controls(adata, "x").copy()
    perturbation = "A" if name == "context_transfer" else "A+B"
    before = get_baseline(name).fit(adata, train).predict(controls, [perturbation]).X
    changed = adata.copy()
    changed.X[~train] = 7.5
    after = get_baseline(name).fit(changed, train).predict(controls, [perturbation]).X
    np.testing.assert_array_equal(before, after)


def test_counts_are_predicted_on_log1p_scale():
    obs = pd.DataFrame({"perturbation": ["control", "control", "A", "A"]}, index=list("abcd"))
    adata = ad.AnnData(np.array([[1, 3], [2, 2], [3, 1], [3, 1]], dtype=np.float32), obs=obs,
                       var=pd.DataFrame(index=["A", "B"]))
    setup_anndata(adata, "perturbation", "control")
    out = TrainingMean().fit(adata, np.array([False, True, True, True])).predict(adata[:1], ["A"])
    delta = np.log1p([7500.0, 2500.0]) - np.log1p([5000.0, 5000.0])
    np.testing.assert_allclose(out.X[0], np.log1p([2500.0, 7500.0]) + delta, rtol=1e-5)
    assert out.uns["citevae"]["scale"] == "log1p"


def test_bad_inputs():
    adata, train = toy()
    with pytest.raises(DataValidationError, match="train_mask"):
        ControlMean().fit(adata, train[:3])
    with pytest.raises(CiteVAEError, match="not fitted"):
        ControlMean().predict(adata[:1], ["A"])
    with pytest.raises(CiteVAEError, match="'nope'"):
        get_baseline("nope")
    controls = held_controls(adata, "x")
    del controls.obs["cell"]
    with pytest.raises(DataValidationError, match="'cell'"):
        ControlMean().fit(adata, train).predict(controls, ["A"])


def test_registry_names():
    assert set(BASELINES) == {"control_mean", "training_mean", "additive", "linear", "context_transfer",
                              "nearest_time", "linear_interpolation"}
    assert all(cls.name == name for name, cls in BASELINES.items())
    assert get_baseline("linear", ridge=0.5).ridge == 0.5
