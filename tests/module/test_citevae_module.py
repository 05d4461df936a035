"""Tests of the full CITE-VAE module: inference, decoding, likelihoods, loss and prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from citevae.data import CiteDataModule, setup_anndata
from citevae.module import CiteVAEModule, ModuleConfig
from citevae.module.citevae import _lineage_spread
from citevae.sim import simulate_counts

SMALL = {"n_genes": 50, "n_targets": 4, "n_pairs": 2, "n_cells_per_condition": 40, "n_steps": 2}
TINY = {"n_programs": 4, "n_invariant": 3, "n_embedding": 5, "n_hidden": 32, "n_steps": 2}


@pytest.fixture(scope="module")
def counts_data():
    adata = simulate_counts(**SMALL, n_contexts=2, seed=0)
    registry = setup_anndata(adata, "perturbation", "control", covariate_keys=["cell_type"])
    return adata, registry


def batch_of(adata, registry, log1p: bool = False) -> dict[str, torch.Tensor]:
    """The first training batch of a CiteDataModule over all cells."""
    dm = CiteDataModule(adata, registry, np.ones(adata.n_obs, bool), n_steps=2,
                        cells_per_group=16, groups_per_batch=3, seed=0)
    batch = next(iter(dm.train_dataloader()))
    if log1p:
        batch["x"] = torch.log1p(batch["x"] / batch["x"].sum(1, keepdim=True) * 1e4)
        batch["library"] = torch.ones_like(batch["library"])
    return batch


def make_module(registry, likelihood: str, seed: int = 0, **options) -> CiteVAEModule:
    torch.manual_seed(seed)
    k = registry.vocabulary.n_targets
    descriptors = torch.randn(k, 3, generator=torch.Generator().manual_seed(seed))
    config = ModuleConfig(n_genes=registry.n_genes, n_targets=k, descriptor_dim=3,
                          covariate_sizes=(len(registry.covariate_categories["cell_type"]),),
                          likelihood=likelihood, **{**TINY, **options})
    return CiteVAEModule(config, descriptors, torch.ones(k, dtype=torch.bool))


@pytest.mark.parametrize(("likelihood", "options"), [
    ("nb", {}),
    ("gaussian", {}),
    ("nb", {"nonlinear_mechanisms": True, "distribution_distance": "energy"}),
    ("gaussian", {"linear_transition": True, "lambda_latent": 1.0}),
    ("nb", {"decoder": "additive"}),
    ("gaussian", {"decoder": "linear", "perturbed_drift": False}),
])
def test_loss_is_finite_with_gradients_everywhere(counts_data, likelihood, options) -> None:
    adata, registry = counts_data
    batch = batch_of(adata, registry, log1p=likelihood == "gaussian")
    assert set(batch["role"].tolist()) == {0, 1}
    assert (batch["step"] > 0).any() and (batch["targets"].sum(1) > 0).any()
    module = make_module(registry, likelihood, **options)
    torch.manual_seed(1)
    out = module.loss(batch)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    expected = {"reconstruction", "kl_c", "kl_z0", "kl_zt", "distribution", "population", "invariance",
                "latent", "lineage", "sparsity", "residual", "log_det"}
    assert set(out.terms) == expected
    assert all(torch.isfinite(v) for v in out.terms.values())
    assert out.terms["log_det"] == 0.0
    assert out.terms["distribution"] > 0 and out.terms["population"] > 0 and out.terms["kl_zt"] != 0
    assert (out.terms["latent"] > 0) == bool(module.config.lambda_latent)  # computed only if weighted
    out.loss.backward()
    lacking = [name for name, p in module.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not lacking, f"no finite gradient for {lacking}"
    zero = [name for name, p in module.named_parameters()
            if p.requires_grad and name != "embedding.residual" and not p.grad.abs().sum() > 0]
    assert len(zero) < len(list(module.parameters())) // 2, zero


def test_loss_weights_switch_terms_off(counts_data) -> None:
    adata, registry = counts_data
    batch = batch_of(adata, registry)
    module = make_module(registry, "nb")
    torch.manual_seed(2)
    full = module.loss(batch, kl_weight=1.0, match_weight=1.0)
    torch.manual_seed(2)
    bare = module.loss(batch, kl_weight=0.0, match_weight=0.0)
    cfg, t = module.config, bare.terms
    expected = (t["reconstruction"] + cfg.lambda_sparsity * t["sparsity"]
                + cfg.lambda_residual * t["residual"])
    torch.testing.assert_close(bare.loss, expected)
    assert full.loss > bare.loss


def test_latent_match_enters_with_its_weight(counts_data) -> None:
    """lambda_latent (default 0, term not computed) adds exactly lambda * the latent term."""
    adata, registry = counts_data
    batch = batch_of(adata, registry)
    module = make_module(registry, "nb")
    weighted = make_module(registry, "nb", lambda_latent=2.5)
    torch.manual_seed(3)
    plain = module.loss(batch)
    torch.manual_seed(3)
    out = weighted.loss(batch)
    assert plain.terms["latent"] == 0 and out.terms["latent"] > 0
    torch.testing.assert_close(out.loss - plain.loss, 2.5 * out.terms["latent"])


def test_reconstruction_matches_likelihood(counts_data) -> None:
    adata, registry = counts_data
    batch = batch_of(adata, registry)
    module = make_module(registry, "nb")
    inf = module.inference(batch["x"], batch["library"], batch["covariates"], sample=False)
    mean = module.expression_mean(inf.z, inf.c, batch["covariates"], batch["library"])
    # NB mean is library * softmax: rows sum to the library size
    torch.testing.assert_close(mean.sum(1), batch["library"], rtol=1e-4, atol=1e-2)
    dist = module.likelihood(mean)
    torch.testing.assert_close(dist.mean, mean, rtol=1e-3, atol=1e-3)
    log1p = module.expression_log1p(inf.z, inf.c, batch["covariates"])
    torch.testing.assert_close(log1p, torch.log1p(mean / batch["library"][:, None] * 1e4),
                               rtol=1e-4, atol=1e-4)
    gaussian = make_module(registry, "gaussian")
    out = gaussian.expression_mean(inf.z, inf.c, batch["covariates"], batch["library"])
    assert torch.equal(out, gaussian.decode_logits(inf.z, inf.c, batch["covariates"]))
    assert isinstance(gaussian.likelihood(out), torch.distributions.Normal)


def test_inference_deterministic_without_sampling(counts_data) -> None:
    adata, registry = counts_data
    batch = batch_of(adata, registry)
    module = make_module(registry, "nb")
    a = module.inference(batch["x"], batch["library"], batch["covariates"], sample=False)
    b = module.inference(batch["x"], batch["library"], batch["covariates"], sample=False)
    assert torch.equal(a.c, a.c_mean) and torch.equal(a.z, a.z_mean)
    assert torch.equal(a.z, b.z)
    assert a.c.shape == (len(batch["x"]), TINY["n_invariant"])
    assert a.z.shape == (len(batch["x"]), TINY["n_programs"])


@pytest.mark.parametrize("likelihood", ["nb", "gaussian"])
def test_predict_mean_and_draws(counts_data, likelihood) -> None:
    adata, registry = counts_data
    batch = batch_of(adata, registry, log1p=likelihood == "gaussian")
    module = make_module(registry, likelihood).eval()
    args = (batch["x"], batch["library"], batch["covariates"], batch["targets"], batch["step"])
    mean1, mean2 = module.predict(*args), module.predict(*args)
    assert torch.equal(mean1["expression"], mean2["expression"])
    assert mean1["expression"].shape == batch["x"].shape
    assert torch.isfinite(mean1["expression"]).all()

    def draw(seed: int) -> torch.Tensor:
        return module.predict(*args, sample=True,
                              generator=torch.Generator().manual_seed(seed))["expression"]

    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))
    if likelihood == "nb":
        sample = draw(3)
        assert torch.equal(sample, sample.round()) and (sample >= 0).all()


def test_draws_without_posterior_draws_start_from_the_posterior_mean(counts_data) -> None:
    """posterior_draws=False keeps each cell's encoded (c, z_0) at the posterior mean and still
    draws the process noise."""
    adata, registry = counts_data
    batch = batch_of(adata, registry)
    module = make_module(registry, "nb").eval()
    args = (batch["x"], batch["library"], batch["covariates"], batch["targets"], batch["step"])
    means = module.inference(batch["x"], batch["library"], batch["covariates"], sample=False)

    def draw(seed: int, posterior_draws: bool) -> dict[str, torch.Tensor]:
        return module.predict(*args, sample=True, generator=torch.Generator().manual_seed(seed),
                              posterior_draws=posterior_draws)

    fixed, other, drawn = draw(3, False), draw(4, False), draw(3, True)
    assert torch.equal(fixed["c"], means.c_mean) and torch.equal(other["c"], means.c_mean)
    assert not torch.equal(drawn["c"], means.c_mean)
    assert not torch.equal(fixed["z"], other["z"])


@pytest.mark.parametrize("likelihood", ["nb", "gaussian"])
def test_latent_draws_without_observation_noise(counts_data, likelihood) -> None:
    """observation_noise=False draws the posterior and the process noise as a full draw does (same
    z for the same generator) but returns the likelihood's mean at that z."""
    adata, registry = counts_data
    batch = batch_of(adata, registry, log1p=likelihood == "gaussian")
    module = make_module(registry, likelihood).eval()
    args = (batch["x"], batch["library"], batch["covariates"], batch["targets"], batch["step"])
    full, latent = (module.predict(*args, sample=True, generator=torch.Generator().manual_seed(3),
                                   observation_noise=noise) for noise in (True, False))
    assert torch.equal(full["z"], latent["z"]) and torch.equal(full["c"], latent["c"])
    mean = module.expression_mean(latent["z"], latent["c"], batch["covariates"], batch["library"])
    assert torch.equal(latent["expression"], mean)
    assert not torch.equal(full["expression"], mean)
    if likelihood == "nb":
        assert torch.allclose(latent["log1p"], module.expected_log1p(mean, batch["library"]))


def test_control_prediction_at_step_zero_reconstructs(counts_data) -> None:
    """A control cell at step 0 under u = 0 is decoded from its own posterior mean."""
    adata, registry = counts_data
    batch = batch_of(adata, registry)
    module = make_module(registry, "nb").eval()
    n = len(batch["x"])
    out = module.predict(batch["x"], batch["library"], batch["covariates"],
                         torch.zeros_like(batch["targets"]), torch.zeros(n, dtype=torch.long))
    inf = module.inference(batch["x"], batch["library"], batch["covariates"], sample=False)
    assert torch.equal(out["z"], inf.z_mean)
    expected = module.expression_mean(inf.z_mean, inf.c_mean, batch["covariates"], batch["library"])
    assert torch.equal(out["expression"], expected)


def test_config_refuses_bad_values() -> None:
    from citevae.errors import CiteVAEError

    with pytest.raises(CiteVAEError, match="n_programs"):
        ModuleConfig(n_programs=0)
    with pytest.raises(CiteVAEError, match="likelihood"):
        ModuleConfig(likelihood="poisson")
    with pytest.raises(CiteVAEError, match="decoder"):
        ModuleConfig(decoder="transformer")
    with pytest.raises(CiteVAEError, match="architecture 'mlp'"):
        ModuleConfig(decoder="linear", architecture="conv")
    with pytest.raises(CiteVAEError, match="bogus"):
        ModuleConfig.from_dict({"bogus": 1})
    config = ModuleConfig(covariate_sizes=(2, 3), n_programs=7)
    assert ModuleConfig.from_dict(config.to_dict()) == config


def test_previous_rows_feed_only_the_transition_term() -> None:
    from citevae.data import CiteDataModule, setup_anndata, split_combinations
    from citevae.sim import simulate_counts

    adata = simulate_counts(n_genes=30, n_targets=3, n_pairs=1, n_cells_per_condition=20,
                            n_steps=2, paired=True, seed=0)
    registry = setup_anndata(adata, "perturbation", "control", time_key="time",
                             covariate_keys=["cell_type"], lineage_key="individual")
    split = split_combinations(adata, seed=0, fraction=0.5)
    data = CiteDataModule(adata, registry, split.mask("train"), None, n_steps=2,
                          cells_per_group=8, groups_per_batch=2)
    batch = next(b for b in data.train_dataloader() if (b["role"] == 2).any())
    module = make_module(registry, "nb")
    torch.manual_seed(3)
    paired = module.loss(batch)
    changed = dict(batch, x=torch.where((batch["role"] == 2).unsqueeze(-1), batch["x"] * 2, batch["x"]))
    torch.manual_seed(3)
    other = module.loss(changed)
    assert torch.equal(paired.terms["reconstruction"], other.terms["reconstruction"])
    assert not torch.equal(paired.terms["kl_zt"], other.terms["kl_zt"])
    torch.manual_seed(3)
    unpaired = module.loss(dict(batch, previous=torch.full_like(batch["previous"], -1)))
    assert not torch.equal(paired.terms["kl_zt"], unpaired.terms["kl_zt"])


def test_expected_log1p_of_negative_binomial_matches_draws() -> None:
    config = ModuleConfig(n_genes=5, n_targets=1, descriptor_dim=1, likelihood="nb")
    module = CiteVAEModule(config, torch.zeros(1, 1), torch.ones(1, dtype=torch.bool))
    with torch.no_grad():
        module.log_dispersion.copy_(torch.log(torch.tensor([0.5, 1.0, 5.0, 20.0, 100.0])))
        mean = torch.tensor([[0.03, 0.5, 3.0, 20.0, 150.0]]).repeat(2, 1)
        library = torch.tensor([60.0, 2000.0])
        expected = module.expected_log1p(mean, library)
        generator = torch.Generator().manual_seed(0)
        draws = torch.stack([torch.log1p(module._draw(mean, generator) / library[:, None] * 1e4)
                             for _ in range(4000)]).mean(0)
    torch.testing.assert_close(expected, draws, atol=0.05, rtol=0.02)


def test_lineage_spread_is_zero_for_a_shared_state_and_about_one_for_unrelated_ones() -> None:
    torch.manual_seed(0)
    c = torch.randn(2000, 3)
    previous = torch.cat([torch.full((1000,), -1), torch.arange(1000)])
    shared = torch.cat([c[:1000], c[:1000]])
    assert float(_lineage_spread(shared, previous)) == 0.0
    assert abs(float(_lineage_spread(c, previous)) - 1.0) < 0.1
    assert float(_lineage_spread(c, torch.full((2000,), -1))) == 0.0
    assert float(_lineage_spread(5 * c, previous)) == pytest.approx(float(_lineage_spread(c, previous)),
                                                                    rel=1e-4)
