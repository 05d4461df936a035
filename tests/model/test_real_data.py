"""CITE-VAE end to end on real data (PerturBench devel, K562 held-out pairs): Python and CLI."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from typer.testing import CliRunner

from citevae import CiteVAE, setup_anndata
from citevae.cli import app
from citevae.data import split_combinations
from citevae.metrics import pearson_delta

PERTURBENCH = "norman2019_mcfaline2023_perturbench_devel.h5ad"


@pytest.fixture(scope="module")
def k562(shared_data):
    adata = ad.read_h5ad(shared_data / PERTURBENCH)
    adata = adata[adata.obs["cell_type"] == "k562"].copy()
    setup_anndata(adata, "condition", "control")
    return adata, split_combinations(adata, seed=0, fraction=0.3)


def test_python_train_predict_held_out_pairs(k562):
    adata, split = k562
    model = CiteVAE(adata, seed=0)
    model.train(max_epochs=15, split=split, seed=0, progress_bar=False)
    labels = adata.obs["condition"].astype(str).to_numpy()
    test = split.mask("test")
    controls = adata[test & (labels == "control")].copy()
    pairs = sorted({k.split("@")[0] for k in split.test_groups})
    for relative in (False, True):
        prediction = model.predict(controls, pairs, relative=relative)
        values = np.asarray(prediction.X)
        assert prediction.shape == (len(pairs) * controls.n_obs, adata.n_vars)
        assert np.isfinite(values).all()
        control_mean = np.asarray(adata.X[test & (labels == "control")].mean(0)).ravel()
        correlations = []
        for pair in pairs:
            observed = np.asarray(adata.X[test & (labels == pair)].mean(0)).ravel()
            predicted = values[(prediction.obs["condition"] == pair).to_numpy()].mean(0)
            correlations.append(pearson_delta(predicted, observed, control_mean))
        assert np.mean(correlations) > 0, (relative, correlations)


def test_cli_train_predict_real_file(shared_data, tmp_path):
    source = shared_data / PERTURBENCH
    before = source.read_bytes()
    runner = CliRunner()
    model_dir = tmp_path / "model"
    result = runner.invoke(app, ["train", str(source), "--perturbation-key", "condition",
                                 "--control", "control", "--covariate-key", "cell_type",
                                 "--max-epochs", "1", "--out", str(model_dir)])
    assert result.exit_code == 0, result.output
    adata = ad.read_h5ad(source)
    controls = adata[(adata.obs["condition"] == "control") & (adata.obs["cell_type"] == "k562")]
    controls_file = tmp_path / "controls.h5ad"
    controls.copy().write_h5ad(controls_file)
    out = tmp_path / "pred.h5ad"
    result = runner.invoke(app, ["predict", str(model_dir), str(controls_file), "--perturbations",
                                 "KLF1,KLF1+MAP2K6", "--out", str(out)])
    assert result.exit_code == 0, result.output
    prediction = ad.read_h5ad(out)
    assert prediction.n_obs == 2 * controls.n_obs
    assert np.isfinite(np.asarray(prediction.X)).all()
    assert source.read_bytes() == before
