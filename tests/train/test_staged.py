"""Tests of the staged fit: its stages, and CiteVAE.train_staged end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from citevae.errors import CiteVAEError
from citevae.model import CiteVAE
from citevae.module.config import ModuleConfig
from citevae.module.embedding import PerturbationEmbedding
from citevae.sim import simulate_counts
from citevae.train.staged import (
    StagedCells,
    StagedConfig,
    _Fitter,
    causal_order,
    target_directions,
)

QUICK = {"rotation_starts": 1, "regression_steps": 150, "mechanism_steps": 60,
         "n_components": 6, "n_programs": 3}


def simulated(seed: int = 0):
    adata = simulate_counts(n_programs=3, n_genes=40, n_targets=4, n_pairs=2,
                            n_cells_per_condition=40, n_steps=2, seed=seed)
    CiteVAE.setup_anndata(adata, "perturbation", "control")
    return adata


def fitted(adata, seed: int = 0) -> CiteVAE:
    model = CiteVAE(adata, n_hidden=32, n_steps=2)
    pairs = adata.obs["perturbation"].astype(str).str.contains("+", regex=False).to_numpy()
    model.train_staged(train_mask=~pairs, seed=seed, **QUICK)
    return model


@pytest.fixture(scope="module")
def staged():
    adata = simulated()
    return adata, fitted(adata)


@pytest.fixture(scope="module")
def controls(staged):
    adata, _ = staged
    return adata[adata.obs["perturbation"] == "control"][::4].copy()


def pair_of(adata) -> str:
    return next(p for p in adata.obs["perturbation"].astype(str).unique() if "+" in p)


def test_staged_model_has_the_chosen_sizes(staged) -> None:
    _, model = staged
    assert model.is_trained and model.staged_config.n_programs == 3
    assert (model.config.n_programs, model.config.n_invariant) == (3, 3)
    assert not model.config.perturbed_drift and not model.config.stationary_control
    assert model.training_result is None


def test_staged_model_keeps_the_invariants(staged) -> None:
    adata, model = staged
    assert (model.causal_graph("control").to_numpy() == 0).all()
    lam = model.causal_graph(pair_of(adata)).to_numpy()
    assert (np.triu(lam) == 0).all()


def test_staged_model_embeds_seen_targets_additively(staged) -> None:
    adata, model = staged
    pair = pair_of(adata)
    codes = [model._target_codes([p])[0] for p in [pair, *pair.split("+")]]
    with torch.no_grad():
        u = [model.module.embed(c) for c in codes]
    torch.testing.assert_close(u[0], u[1] + u[2])


def test_staged_predicted_changes_correlate_with_the_observed_ones(staged, controls) -> None:
    adata, model = staged
    labels = [p for p in adata.obs["perturbation"].astype(str).unique() if p != "control"]
    pred = model.predict(controls, ["control", *labels], relative=True)
    means = pred.X.reshape(len(labels) + 1, controls.n_obs, -1).mean(1)
    assert np.isfinite(means).all()

    def observed_log1p(label: str) -> np.ndarray:
        counts = adata[adata.obs["perturbation"] == label].X.toarray()
        return np.log1p(counts / counts.sum(1, keepdims=True) * 1e4).mean(0)

    control = observed_log1p("control")
    correlations = [np.corrcoef(means[i + 1] - means[0], observed_log1p(label) - control)[0, 1]
                    for i, label in enumerate(labels)]
    # 40 cells per condition make the observed changes noisy: each correlation is positive
    # (0.18-0.66 for this seed, the held-out pairs included), not necessarily large.
    assert min(correlations) > 0.1, dict(zip(labels, correlations, strict=True))


def test_staged_fit_is_deterministic_and_survives_save_load(staged, controls, tmp_path) -> None:
    adata, model = staged
    pair = pair_of(adata)
    again = fitted(adata)
    first = model.predict(controls, [pair], sample=True, seed=3)
    np.testing.assert_array_equal(first.X, again.predict(controls, [pair], sample=True, seed=3).X)
    model.save(tmp_path / "staged")
    loaded = CiteVAE.load(tmp_path / "staged", adata)
    assert loaded.staged_config == model.staged_config
    np.testing.assert_array_equal(first.X, loaded.predict(controls, [pair], sample=True, seed=3).X)


def test_staged_draws_start_from_the_cells_posterior_means(staged, controls) -> None:
    adata, model = staged
    pair = pair_of(adata)

    def draw(**options: object) -> np.ndarray:
        return model.predict(controls, [pair], sample=True, seed=3, relative=True, **options).X

    np.testing.assert_array_equal(draw(), draw(posterior_draws=False))
    assert not np.array_equal(draw(), draw(posterior_draws=True))


def test_target_directions() -> None:
    generator = torch.Generator().manual_seed(0)
    few = target_directions(5, 8, generator)
    torch.testing.assert_close(few @ few.T, torch.eye(5))
    many = target_directions(12, 8, generator)
    torch.testing.assert_close(many.norm(dim=-1), torch.ones(12))


def test_embedding_stage_reproduces_the_directions() -> None:
    generator = torch.Generator().manual_seed(0)
    descriptors = torch.randn(6, 3, generator=generator)
    has = torch.tensor([True, True, True, True, False, False])
    embedding = PerturbationEmbedding(descriptors, has, n_embedding=8, n_hidden=16)
    directions = target_directions(6, 8, generator)
    fit = _Fitter(StagedConfig(regression_steps=20), generator)
    fit.embedding(embedding, directions)
    with torch.no_grad():
        torch.testing.assert_close(embedding.target_embeddings(), directions)
        assert not torch.equal(embedding.descriptor_net(descriptors), torch.zeros(6, 8))


def test_causal_order_puts_the_parent_first() -> None:
    """Under target A program 1 drives program 0 (z0 = z0 + 1.5 z1); under B program 0 only
    shifts. The ordering fit must put program 1 before program 0."""
    rng = np.random.default_rng(0)
    n_cells = 300
    control = rng.standard_normal((n_cells, 2))
    a = rng.standard_normal((n_cells, 2))
    a[:, 1] += 1.0
    a[:, 0] += 1.5 * a[:, 1]
    b = rng.standard_normal((n_cells, 2)) + np.array([1.0, 0.0])
    z = torch.tensor(np.vstack([control, a, b]), dtype=torch.float32)
    labels = np.repeat(["control", "A", "B"], n_cells)
    targets = torch.zeros(3 * n_cells, 2)
    targets[labels == "A", 0] = 1.0
    targets[labels == "B", 1] = 1.0
    cells = StagedCells(x=z, log1p=z, library=torch.ones(3 * n_cells),
                        covariates=torch.zeros(3 * n_cells, 0, dtype=torch.long), targets=targets,
                        steps=torch.from_numpy((labels != "control").astype(np.int64)),
                        conditions=labels, is_control=labels == "control")
    config = ModuleConfig(n_targets=2, n_programs=2, n_embedding=4, n_hidden=16,
                          perturbed_drift=False)
    generator = torch.Generator().manual_seed(0)
    fit = _Fitter(StagedConfig(mechanism_steps=300), generator)
    order = causal_order(config, target_directions(2, 4, generator), z, cells, fit)
    assert order.tolist() == [1, 0]


@pytest.mark.parametrize(("options", "message"), [
    ({"mechanism_steps": 0}, "mechanism_steps must be >= 1"),
    ({"regression_lr": 0.0}, "regression_lr must be > 0"),
    ({"epochs": 3}, "unknown staged-fit option"),
])
def test_bad_staged_options_are_refused(options, message) -> None:
    with pytest.raises(CiteVAEError, match=message):
        StagedConfig.from_dict(options)


def test_train_staged_refuses_bad_options_and_cells(staged) -> None:
    adata, _ = staged
    model = CiteVAE(adata, n_hidden=16)
    with pytest.raises(CiteVAEError, match="unknown staged-fit option"):
        model.train_staged(max_epochs=3)
    perturbed = (adata.obs["perturbation"] != "control").to_numpy()
    with pytest.raises(CiteVAEError, match="needs control cells"):
        model.train_staged(train_mask=perturbed, **QUICK)
