"""Tests of the user-facing CiteVAE model: setup, train, predict, latents, causal graph."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from citevae.errors import CiteVAEError, VocabularyError
from citevae.model import CiteVAE
from citevae.sim import simulate_counts

SMALL = {"n_genes": 50, "n_targets": 4, "n_pairs": 2, "n_cells_per_condition": 40, "n_steps": 2}
FIT = {"max_epochs": 2, "progress_bar": False, "cells_per_group": 32, "match_start_epoch": 1}


def simulated(seed: int = 0):
    adata = simulate_counts(**SMALL, n_contexts=2, seed=seed)
    CiteVAE.setup_anndata(adata, "perturbation", "control", covariate_keys=["cell_type"])
    return adata


@pytest.fixture(scope="module")
def trained():
    adata = simulated()
    model = CiteVAE(adata, n_hidden=32, n_programs=4, n_invariant=3, n_steps=2)
    model.train(**FIT)
    return adata, model


@pytest.fixture(scope="module")
def controls(trained):
    adata, _ = trained
    return adata[adata.obs["perturbation"] == "control"][::8].copy()


def test_train_records_history(trained) -> None:
    _, model = trained
    result = model.training_result
    assert model.is_trained and result.epochs_run == 2
    assert len(result.history) == 2
    assert all(np.isfinite(row["train_loss"]) for row in result.history)
    assert "trained=True" in repr(model)


def test_predict_layout(trained, controls) -> None:
    adata, model = trained
    targets = list(adata.uns["sim"]["targets"])
    perturbations = ["control", targets[0], f"{targets[0]}+{targets[1]}"]
    pred = model.predict(controls, perturbations)
    n = controls.n_obs
    assert pred.shape == (n * len(perturbations), adata.n_vars)
    assert list(pred.var_names) == list(adata.var_names)
    assert {"perturbation", "time", "control_cell", "cell_type"} <= set(pred.obs.columns)
    assert list(pred.obs["perturbation"].astype(str)) == [p for p in perturbations for _ in range(n)]
    assert list(pred.obs["control_cell"]) == list(controls.obs_names) * len(perturbations)
    np.testing.assert_array_equal(pred.obs["cell_type"].astype(str).to_numpy(),
                                  np.tile(controls.obs["cell_type"].astype(str), len(perturbations)))
    assert list(pred.obs["step"]) == [0] * n + [2] * (2 * n)
    assert pred.uns["citevae"]["scale"] == "counts"
    assert "log1p" in pred.layers
    assert np.isfinite(pred.X).all() and np.isfinite(pred.layers["log1p"]).all()
    assert (pred.X >= 0).all()
    # expected counts at the source cell's library size
    np.testing.assert_allclose(pred.X.sum(1), np.tile(controls.obs["library_size"], 3), rtol=1e-3)


def test_predict_means_are_deterministic(trained, controls) -> None:
    adata, model = trained
    target = str(adata.uns["sim"]["targets"][1])
    a = model.predict(controls, [target])
    b = model.predict(controls, [target])
    np.testing.assert_array_equal(a.X, b.X)
    assert a.uns["citevae"]["sample"] is False


def test_sampled_predictions_reproducible_per_seed(trained, controls) -> None:
    adata, model = trained
    target = str(adata.uns["sim"]["targets"][1])
    a = model.predict(controls, [target], sample=True, seed=5)
    b = model.predict(controls, [target], sample=True, seed=5)
    c = model.predict(controls, [target], sample=True, seed=6)
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.array_equal(a.X, c.X)
    assert np.array_equal(a.X, np.round(a.X))
    assert a.uns["citevae"]["seed"] == 5 and a.uns["citevae"]["sample"] is True


def test_sampled_relative_predictions_draw_latents_not_counts(trained, controls) -> None:
    """relative + sample: each cell's change is drawn (reproducibly per seed) from the latent
    process, with the likelihood at its mean, so the control's own prediction is the observed
    cell and perturbed predictions are not count draws."""
    adata, model = trained
    target = str(adata.uns["sim"]["targets"][1])
    observed = model.predict(controls, ["control"], relative=True).X
    np.testing.assert_array_equal(
        model.predict(controls, ["control"], relative=True, sample=True, seed=5).X, observed)
    a, b, c = (model.predict(controls, [target], relative=True, sample=True, seed=seed).X
               for seed in (5, 5, 6))
    means = model.predict(controls, [target], relative=True).X
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, means)
    # the change is a difference of expected log1p values: no count noise in it
    drawn = model.predict(controls, [target], sample=True, seed=5).layers["log1p"]
    assert np.abs(a - observed).mean() < np.abs(drawn - observed).mean()


def test_combination_differs_from_singles(trained, controls) -> None:
    adata, model = trained
    t0, t1 = (str(t) for t in adata.uns["sim"]["targets"][:2])
    pred = model.predict(controls, [t0, t1, f"{t1}+{t0}"])
    n = controls.n_obs
    assert pred.obs["perturbation"].astype(str).iloc[-1] == f"{t0}+{t1}"
    assert not np.array_equal(pred.X[2 * n:], pred.X[:n])


def test_unseen_measured_target_is_predicted(trained, controls) -> None:
    adata, model = trained
    unseen = next(g for g in adata.var_names if g not in set(adata.uns["sim"]["targets"]))
    assert unseen not in model.registry.vocabulary.targets
    pred = model.predict(controls, [unseen, f"{unseen}+{adata.uns['sim']['targets'][0]}"])
    assert pred.n_obs == 2 * controls.n_obs
    assert np.isfinite(pred.X).all()
    control = model.predict(controls, ["control"])
    assert not np.array_equal(pred.X[: controls.n_obs], control.X)


def test_unseen_target_without_descriptor_is_refused(trained, controls) -> None:
    _, model = trained
    with pytest.raises(VocabularyError, match="NOTAGENE"):
        model.predict(controls, ["NOTAGENE"])
    with pytest.raises(VocabularyError, match="NOTAGENE"):
        model.causal_graph("NOTAGENE")


def test_unseen_gene_from_gene_features_is_predicted() -> None:
    adata = simulated(seed=1)
    features = pd.DataFrame(np.random.default_rng(0).normal(size=(adata.n_vars + 1, 3)),
                            index=[*adata.var_names, "EXTERNAL"])
    model = CiteVAE(adata, gene_features=features, n_hidden=32, n_programs=4, n_steps=2)
    model.train(**FIT)
    controls = adata[adata.obs["perturbation"] == "control"][:5].copy()
    pred = model.predict(controls, ["EXTERNAL"])
    assert pred.n_obs == 5 and np.isfinite(pred.X).all()


def test_get_latent(trained) -> None:
    adata, model = trained
    view = adata[:30].copy()
    model.get_latent(view)
    assert view.obsm["citevae_c"].shape == (30, 3)
    assert view.obsm["citevae_z"].shape == (30, 4)
    latent = model.get_latent(view, inplace=False)
    np.testing.assert_array_equal(latent["z"], view.obsm["citevae_z"])
    assert np.isfinite(latent["c"]).all()


def test_causal_graph(trained) -> None:
    adata, model = trained
    names = [f"z{i}" for i in range(4)]
    control = model.causal_graph("control")
    assert isinstance(control, pd.DataFrame) and control.shape == (4, 4)
    assert list(control.index) == names and list(control.columns) == names
    assert (control.to_numpy() == 0).all()
    graph = model.causal_graph(str(adata.uns["sim"]["targets"][0])).to_numpy()
    assert np.array_equal(graph, np.tril(graph, -1))
    assert (np.abs(np.tril(graph, -1)[np.tril_indices(4, -1)]) > 0).all()


def test_unknown_hyperparameter_is_refused() -> None:
    adata = simulated()
    with pytest.raises(CiteVAEError, match="n_hiddden"):
        CiteVAE(adata, n_hiddden=32)


def test_predict_before_training_is_refused() -> None:
    adata = simulated()
    model = CiteVAE(adata, n_hidden=32)
    controls = adata[adata.obs["perturbation"] == "control"][:3].copy()
    with pytest.raises(CiteVAEError, match="not trained"):
        model.predict(controls, ["control"])
    with pytest.raises(CiteVAEError, match="not trained"):
        model.get_latent()


def test_predict_refuses_perturbed_cells_as_controls(trained) -> None:
    adata, model = trained
    target = str(adata.uns["sim"]["targets"][0])
    with pytest.raises(CiteVAEError, match=target):
        model.predict(adata[adata.obs["perturbation"] == target][:3].copy(), ["control"])


def test_same_seed_data_and_threads_give_identical_predictions() -> None:
    """Determinism (README "Reliability"): two runs from scratch agree bit for bit."""
    adata = simulate_counts(n_genes=15, n_targets=2, n_pairs=1, n_cells_per_condition=10, n_steps=2,
                            n_programs=2, seed=5)
    CiteVAE.setup_anndata(adata, "perturbation", "control")
    controls = adata[adata.obs["perturbation"] == "control"].copy()
    target = str(adata.uns["sim"]["targets"][0])

    def run(seed: int) -> np.ndarray:
        model = CiteVAE(adata, n_hidden=16, n_programs=2, n_steps=2, seed=seed)
        model.train(max_epochs=2, progress_bar=False, seed=seed, num_threads=1)
        return model.predict(controls, [target], sample=True, seed=0).X

    first = run(0)
    assert np.array_equal(first, run(0))
    assert not np.array_equal(first, run(1))
