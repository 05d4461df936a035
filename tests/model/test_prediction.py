"""Tests of prediction requests (rows) and their AnnData output."""

from __future__ import annotations

import numpy as np
import pytest

from citevae.data import setup_anndata
from citevae.errors import CiteVAEError
from citevae.model.prediction import build_prediction_rows, predictions_to_anndata
from citevae.sim import simulate_counts

SMALL = {"n_genes": 20, "n_targets": 3, "n_pairs": 1, "n_cells_per_condition": 6, "n_steps": 2}


@pytest.fixture(scope="module")
def endpoint():
    adata = simulate_counts(**SMALL, seed=0)
    registry = setup_anndata(adata, "perturbation", "control")
    return adata, registry


@pytest.fixture(scope="module")
def timed():
    adata = simulate_counts(**SMALL, paired=True, seed=1)
    registry = setup_anndata(adata, "perturbation", "control", time_key="time")
    return adata, registry


def controls_of(adata, n: int = 3):
    return adata[(adata.obs["perturbation"] == "control").to_numpy()][:n].copy()


def test_rows_endpoint_layout(endpoint) -> None:
    adata, registry = endpoint
    t = [str(x) for x in adata.uns["sim"]["targets"]]
    rows = build_prediction_rows(registry, controls_of(adata), ["control", t[0], f"{t[1]}+{t[0]}"],
                                 None, n_steps=4)
    assert rows.perturbations == ["control", t[0], "+".join(sorted(t[:2]))]
    np.testing.assert_array_equal(rows.source, np.tile(np.arange(3), 3))
    np.testing.assert_array_equal(rows.perturbation_index, np.repeat(np.arange(3), 3))
    np.testing.assert_array_equal(rows.steps, [0] * 3 + [4] * 6)
    with pytest.raises(CiteVAEError, match="time"):
        build_prediction_rows(registry, controls_of(adata), [t[0]], [1], n_steps=4)
    with pytest.raises(CiteVAEError, match="no perturbations"):
        build_prediction_rows(registry, controls_of(adata), [], None, n_steps=4)


def test_rows_with_times(timed) -> None:
    adata, registry = timed
    target = str(adata.uns["sim"]["targets"][0])
    controls = controls_of(adata, 2)
    rows = build_prediction_rows(registry, controls, [target, "control"], [0, 2], n_steps=9)
    # perturbation-major, then time, then cell
    np.testing.assert_array_equal(rows.perturbation_index, [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(rows.source, [0, 1, 0, 1, 0, 1, 0, 1])
    np.testing.assert_array_equal(rows.steps, registry.time_mapping.step_of(
        np.array([0, 0, 2, 2, 0, 0, 2, 2])))
    assert rows.steps[0] == 0 and rows.steps[2] > 0
    default = build_prediction_rows(registry, controls, [target], None, n_steps=9)
    assert set(default.time_labels) == {registry.time_mapping.labels[-1]}


def test_rows_refuse_perturbed_sources(endpoint) -> None:
    adata, registry = endpoint
    target = str(adata.uns["sim"]["targets"][0])
    cells = adata[(adata.obs["perturbation"] == target).to_numpy()][:2].copy()
    with pytest.raises(CiteVAEError, match=target):
        build_prediction_rows(registry, cells, ["control"], None, n_steps=4)


def test_rows_refuse_other_genes(endpoint) -> None:
    adata, registry = endpoint
    with pytest.raises(CiteVAEError, match=str(adata.var_names[0])):
        build_prediction_rows(registry, controls_of(adata)[:, 1:].copy(), ["control"], None, 4)


def test_anndata_output(endpoint) -> None:
    adata, registry = endpoint
    controls = controls_of(adata)
    target = str(adata.uns["sim"]["targets"][0])
    rows = build_prediction_rows(registry, controls, ["control", target], None, n_steps=4)
    values = np.random.default_rng(0).gamma(2.0, 3.0, size=(6, adata.n_vars))
    log1p = np.log1p(values / values.sum(1, keepdims=True) * 1e4)
    out = predictions_to_anndata(values, rows, controls, registry, sample=False, seed=None, log1p=log1p)
    assert out.shape == (6, adata.n_vars) and out.X.dtype == np.float32
    assert list(out.var_names) == list(adata.var_names)
    assert list(out.obs["control_cell"]) == list(controls.obs_names) * 2
    assert list(out.obs["perturbation"].astype(str)) == ["control"] * 3 + [target] * 3
    assert out.uns["citevae"]["scale"] == "counts" and out.uns["citevae"]["seed"] == -1
    np.testing.assert_allclose(out.layers["log1p"], log1p, rtol=1e-5)
    assert "log1p" not in predictions_to_anndata(values, rows, controls, registry, False, None).layers
