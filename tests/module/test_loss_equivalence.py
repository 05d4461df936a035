"""The batched loss (one rollout and decode for all groups, a shared likelihood normaliser) equals
the group-by-group loss written directly with ``torch.distributions``, in value and gradient.

Noise is switched off (posterior and latent noise at their means) so both sides are deterministic.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from citevae.data import CiteDataModule, setup_anndata
from citevae.module import CiteVAEModule, ModuleConfig
from citevae.module import citevae as module_code
from citevae.module.distances import energy_distance, mmd
from citevae.sim import simulate_counts


def _reference_terms(module: CiteVAEModule, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reconstruction and matching terms, one group at a time (the unbatched formulation)."""
    x, library, cov = batch["x"], batch["library"], batch["covariates"]
    group, role, step = batch["group"], batch["role"], batch["step"]
    inf = module.inference(x, library, cov, sample=False)
    u = module.embed(batch["targets"])
    mean = module.expression_mean(inf.z, inf.c, cov, library)
    terms = {"reconstruction": -module.likelihood(mean).log_prob(x).sum(-1).mean()}
    distance = mmd if module.config.distribution_distance == "mmd" else energy_distance
    found: dict[str, list[torch.Tensor]] = {"distribution": [], "population": [], "invariance": []}
    for g in torch.unique(group):
        source, target = (group == g) & (role == 0), (group == g) & (role == 1)
        perturbed = bool(u[target].abs().sum() > 0)
        n_steps = int(step[target][0]) or (module.config.n_steps * module.config.stationary_control)
        if perturbed or n_steps > 0:
            z = module.dynamics.rollout(inf.z[source], u[target][:1].expand(int(source.sum()), -1),
                                        torch.full((int(source.sum()),), n_steps), sample=False)
            logits = module.decode_logits(z, inf.c[source], cov[source])
            observed = module.expression_log1p(inf.z[target], inf.c[target], cov[target]).detach()
            found["distribution"].append(distance(module._log1p_of_logits(logits), observed))
            found["population"].append(_reference_population(module, logits, x[target],
                                                             library[target]))
        if perturbed:
            found["invariance"].append(mmd(inf.c_mean[target], inf.c_mean[source]))
    terms.update({name: torch.stack(values).mean() for name, values in found.items()})
    return terms


def _reference_population(module: CiteVAEModule, logits: torch.Tensor, x: torch.Tensor,
                          library: torch.Tensor) -> torch.Tensor:
    """Gaussian: NLL of the real cells under the rollouts' mean. NB: squared error of the real
    cells' mean log1p-normalised expression and its expectation under the rollouts' mean
    proportions at library-size quantiles, one at a time, in units of the real cells' variance + the floor."""
    if module.config.likelihood != "nb":
        return -module.likelihood(logits.mean(0).expand_as(x)).log_prob(x).sum(-1).mean()
    proportions = torch.softmax(logits, -1).mean(0)
    levels = min(module_code.POPULATION_LIBRARY_LEVELS, len(library))
    sizes = np.quantile(library.numpy(), (np.arange(levels) + 0.5) / levels)
    expected = torch.stack([module.expected_log1p((float(size) * proportions)[None],
                                                  torch.tensor([float(size)]))[0]
                            for size in sizes]).mean(0)
    observed = torch.log1p(x / library[:, None] * module.config.library_scale)
    variance = ((observed - observed.mean(0)) ** 2).mean(0) + module_code.POPULATION_VARIANCE_FLOOR
    return ((observed.mean(0) - expected) ** 2 / (2 * variance)).sum()


@pytest.mark.parametrize("likelihood", ["nb", "gaussian"])
def test_batched_loss_equals_group_by_group_loss(monkeypatch, likelihood) -> None:
    adata = simulate_counts(n_genes=40, n_targets=4, n_pairs=1, n_cells_per_condition=30, n_steps=2,
                            seed=0)
    registry = setup_anndata(adata, "perturbation", "control", covariate_keys=["cell_type"])
    data = CiteDataModule(adata, registry, np.ones(adata.n_obs, bool), n_steps=2, cells_per_group=8,
                          groups_per_batch=5, seed=0)
    batch = next(iter(data.train_dataloader()))
    if likelihood == "gaussian":
        batch["x"] = torch.log1p(batch["x"] / batch["x"].sum(1, keepdim=True) * 1e4)
    assert len(torch.unique(batch["group"])) == 5
    k = registry.vocabulary.n_targets
    torch.manual_seed(0)
    config = ModuleConfig(n_genes=registry.n_genes, n_targets=k, descriptor_dim=3,
                          covariate_sizes=(1,), likelihood=likelihood, n_programs=4, n_invariant=3,
                          n_embedding=5, n_hidden=32, n_steps=2, stationary_control=True)
    module = CiteVAEModule(config, torch.randn(k, 3), torch.ones(k, dtype=torch.bool))
    with torch.no_grad():
        module.log_dispersion.normal_(0.0, 0.3)
    monkeypatch.setattr(module_code, "reparameterize", lambda mean, log_var, *args, **kw: mean)
    monkeypatch.setattr(module.dynamics, "sample_noise", lambda u, *args, **kw:
                        module.dynamics.noise_params(u)[0])
    names = ["reconstruction", "distribution", "population", "invariance"]
    batched = module.loss(batch).terms
    reference = _reference_terms(module, batch)
    for name in names:
        torch.testing.assert_close(batched[name], reference[name], rtol=1e-5, atol=1e-5, msg=name)
    params = [p for p in module.parameters() if p.requires_grad]
    weights = torch.tensor([1.0, 10.0, 50.0, 1.0])
    grads = [torch.autograd.grad(sum(w * terms[n] for w, n in zip(weights, names, strict=True)),
                                 params, allow_unused=True) for terms in (batched, reference)]
    for a, b in zip(*grads, strict=True):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))
