"""The CITE-VAE module in pure torch: inference -> generative -> loss (MODEL.md sections 2, 5, 6)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Normal

from citevae.module import observation
from citevae.module.causal import causal_dynamics
from citevae.module.config import ModuleConfig
from citevae.module.conv import decoder, gaussian_encoders
from citevae.module.distances import energy_distance, mmd
from citevae.module.embedding import PerturbationEmbedding
from citevae.module.networks import (
    AdditiveDecoder,
    GaussianHead,
    gaussian_kl,
    one_hot_covariates,
    reparameterize,
)

ROLE_SOURCE, ROLE_TARGET, ROLE_PREVIOUS = 0, 1, 2

POPULATION_LIBRARY_LEVELS = 8
"""Library sizes (quantiles of a condition's real cells) at which the NB population term takes
the expected log1p expression of the rollouts' mean."""
POPULATION_VARIANCE_FLOOR = 1e-2
"""Added to each gene's variance among a condition's real cells in the NB population term (log1p
scale), so genes that are zero in every cell of a small group keep a finite weight."""


@dataclass
class Inference:
    """Posterior of c (invariant state) and z (programs at the cell's own step), (B, m) / (B, n)."""

    c_mean: torch.Tensor
    c_log_var: torch.Tensor
    c: torch.Tensor
    z_mean: torch.Tensor
    z_log_var: torch.Tensor
    z: torch.Tensor


@dataclass
class LossOutput:
    """Total loss (scalar) and its named terms (scalars, unweighted)."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]


class CiteVAEModule(nn.Module):
    """Encoders of c and z, the perturbation embedding, the causal dynamics and the decoder.

    Args:
        config: sizes and objective weights.
        descriptors: (K, d_a) descriptors of the training targets (zeros where absent).
        has_descriptor: (K,) bool.

    Batches are dicts of tensors: ``x`` (B, G) on the data scale (counts or log1p),
    ``library`` (B,), ``targets`` (B, K) multi-hot, ``step`` (B,), ``covariates`` (B, C) codes,
    ``group`` (B,) condition group within the batch, ``role`` (B,) source control / target cell.
    """

    def __init__(self, config: ModuleConfig, descriptors: torch.Tensor,
                 has_descriptor: torch.Tensor) -> None:
        super().__init__()
        self.config = cfg = config
        n_cov = sum(cfg.covariate_sizes)
        hidden, layers, drop = cfg.n_hidden, cfg.n_layers, cfg.dropout
        image = {"image_channels": cfg.image_channels, "conv_channels": cfg.conv_channels}
        heads = [(n_cov, cfg.n_invariant), (cfg.n_invariant + n_cov, cfg.n_programs)]
        self.c_encoder, self.z_encoder = gaussian_encoders(cfg.architecture, cfg.n_genes, heads, hidden,
                                                           layers, drop, **image)
        self.z0_prior = GaussianHead(cfg.n_invariant + n_cov, cfg.n_programs, hidden, 1)
        self.embedding = PerturbationEmbedding(descriptors, has_descriptor, cfg.n_embedding, hidden)
        self.dynamics = causal_dynamics(cfg)
        if cfg.decoder != "mlp":
            self.decoder = AdditiveDecoder(cfg.n_programs, cfg.n_invariant + n_cov, cfg.n_genes, hidden,
                                           layers, drop, linear=cfg.decoder == "linear")
        else:
            self.decoder = decoder(cfg.architecture, cfg.n_programs + cfg.n_invariant + n_cov,
                                   cfg.n_genes, hidden, layers, drop, **image)
        self.log_dispersion = nn.Parameter(torch.zeros(cfg.n_genes))
        """log theta (NB inverse dispersion) or log sigma_x (Gaussian), per gene."""

    # inference -----------------------------------------------------------------------------
    def normalise(self, x: torch.Tensor, library: torch.Tensor) -> torch.Tensor:
        """Encoder input: log1p(x / library * library_scale) for counts, x for log1p data."""
        if self.config.likelihood == "nb":
            return torch.log1p(x / library.unsqueeze(-1) * self.config.library_scale)
        return x

    def inference(self, x: torch.Tensor, library: torch.Tensor, covariates: torch.Tensor,
                  sample: bool = True, generator: torch.Generator | None = None) -> Inference:
        """q(c | x, s) and q(z | x, c, s) with draws (or means when ``sample`` is False)."""
        s = one_hot_covariates(covariates, self.config.covariate_sizes)
        h = self.normalise(x, library)
        c_mean, c_log_var = self.c_encoder(torch.cat([h, s], -1))
        c = reparameterize(c_mean, c_log_var, sample, generator)
        z_mean, z_log_var = self.z_encoder(torch.cat([h, c, s], -1))
        z = reparameterize(z_mean, z_log_var, sample, generator)
        return Inference(c_mean, c_log_var, c, z_mean, z_log_var, z)

    # generative ----------------------------------------------------------------------------
    def decode_logits(self, z: torch.Tensor, c: torch.Tensor, covariates: torch.Tensor) -> torch.Tensor:
        """f([z, c, s]): (B, G) gene logits (NB) or means (Gaussian)."""
        s = one_hot_covariates(covariates, self.config.covariate_sizes)
        return self.decoder(torch.cat([z, c, s], -1))

    def expression_mean(self, z: torch.Tensor, c: torch.Tensor, covariates: torch.Tensor,
                        library: torch.Tensor) -> torch.Tensor:
        """Mean expression (B, G) on the data scale: library * softmax(f) or f."""
        return self._mean_of_logits(self.decode_logits(z, c, covariates), library)

    def expression_log1p(self, z: torch.Tensor, c: torch.Tensor,
                         covariates: torch.Tensor) -> torch.Tensor:
        """Mean expression (B, G) on the log1p-normalised scale, where distributions are matched."""
        return self._log1p_of_logits(self.decode_logits(z, c, covariates))

    def likelihood(self, mean: torch.Tensor) -> torch.distributions.Distribution:
        """p(x | z, c, s) given the mean on the data scale."""
        return observation.distribution(mean, self.config.likelihood, self.log_dispersion)

    def embed(self, targets: torch.Tensor, descriptors: torch.Tensor | None = None,
              has_descriptor: torch.Tensor | None = None) -> torch.Tensor:
        """u = phi(P): (B, d_u) from multi-hot targets (B, K')."""
        return self.embedding(targets, descriptors, has_descriptor)

    # loss ----------------------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor], kl_weight: float = 1.0,
             match_weight: float = 1.0) -> LossOutput:
        """The objective of MODEL.md section 6 for one condition-grouped batch.

        ``kl_weight`` scales the beta terms (warm-up) and ``match_weight`` the distribution and
        invariance terms (switched on after a few epochs). Rows of role ``ROLE_PREVIOUS`` (earlier
        observations of a lineage, paired data) only feed the transition term.
        """
        cfg = self.config
        x, library, cov, step = batch["x"], batch["library"], batch["covariates"], batch["step"]
        observed = batch["role"] != ROLE_PREVIOUS
        inf = self.inference(x, library, cov)
        u = self.embed(batch["targets"])
        logits = self.decode_logits(inf.z, inf.c, cov)
        normaliser = self._log_normaliser(x)
        log_lik = normaliser + self._log_kernel(x, self._mean_of_logits(logits, library))
        reconstruction = _masked_mean(-log_lik, observed)
        kl_c = _masked_mean(gaussian_kl(inf.c_mean, inf.c_log_var), observed)
        terms = {"reconstruction": reconstruction, "kl_c": kl_c}
        prior_mean, prior_log_var = self.z0_prior(torch.cat(
            [inf.c, one_hot_covariates(cov, cfg.covariate_sizes)], -1))
        terms["kl_z0"] = _masked_mean(
            gaussian_kl(inf.z_mean, inf.z_log_var, prior_mean, prior_log_var), observed & (step == 0))
        terms["kl_zt"] = self._transition_term(inf, u, step, observed & (step > 0),
                                               batch.get("previous"), prior_mean, prior_log_var)
        terms.update(self._matching_terms(batch, inf, u, logits.detach(), normaliser))
        terms["lineage"] = _lineage_spread(inf.c_mean, batch.get("previous"))
        lam = self.dynamics.causal_matrix(u[observed])
        terms["sparsity"] = lam.abs().sum((-2, -1)).mean()
        terms["residual"] = self.embedding.residual.pow(2).sum()
        terms["log_det"] = self.dynamics.log_abs_det(lam).mean()
        loss = (
            reconstruction
            + kl_weight * (cfg.beta_c * kl_c + cfg.beta_0 * terms["kl_z0"] + cfg.beta_z * terms["kl_zt"])
            + match_weight * (cfg.alpha * terms["distribution"] + cfg.gamma * terms["population"]
                              + cfg.lambda_invariance * terms["invariance"]
                              + cfg.lambda_latent * terms["latent"])
            + cfg.lambda_lineage * terms["lineage"]
            + cfg.lambda_sparsity * terms["sparsity"]
            + cfg.lambda_residual * terms["residual"]
        )
        return LossOutput(loss, terms)

    def _transition_term(self, inf: Inference, u: torch.Tensor, step: torch.Tensor,
                         later: torch.Tensor, previous: torch.Tensor | None,
                         prior_mean: torch.Tensor, prior_log_var: torch.Tensor) -> torch.Tensor:
        """E_q[log q(z_t | x) - log p(z_t | z_{t-1}, u)] for the ``later`` cells (t > 0).

        z_{t-1} is rolled out from a draw of p(z_0 | c) of the same cell (unpaired data) or, where
        ``previous`` gives the row of the cell's own earlier observation (paired data), from that
        observation's posterior draw.
        """
        if not bool(later.any()):
            return step.new_zeros((), dtype=inf.z.dtype)
        start = reparameterize(prior_mean[later], prior_log_var[later])
        steps_left = step[later] - 1
        if previous is not None and bool((previous[later] >= 0).any()):
            row = previous[later]
            paired = row >= 0
            row = row.clamp_min(0)
            start = torch.where(paired.unsqueeze(-1), inf.z[row], start)
            steps_left = torch.where(paired, step[later] - step[row] - 1, steps_left)
        z_prev = self.dynamics.rollout(start, u[later], steps_left, sample=True)
        log_q = Normal(inf.z_mean[later], (0.5 * inf.z_log_var[later]).exp()).log_prob(
            inf.z[later]).sum(-1)
        log_p = self.dynamics.log_prob(inf.z[later], z_prev, u[later])
        return (log_q - log_p).mean()

    def _matching_terms(self, batch: dict[str, torch.Tensor], inf: Inference, u: torch.Tensor,
                        logits: torch.Tensor, normaliser: torch.Tensor) -> dict[str, torch.Tensor]:
        """Terms that tie rollouts of each group's controls to the group's real cells.

        - distribution: MMD / energy distance between decoded rollouts and the decoded posterior
          of the real cells (log1p scale; ``logits`` (B, G) are the batch's decoded posterior);
        - population: mismatch of the real cells' mean expression and the rollouts' mean
          (``_population_term``; the Gaussian one shares the reconstruction's per-cell
          ``normaliser`` (B,));
        - latent (only when ``lambda_latent`` > 0): energy distance between the rollouts' z and
          the posterior draws of z of the real cells, each program divided by its spread among
          the rollouts' sources (detached);
        - invariance: MMD between q(c) means of the group's perturbed and control cells.
        Each is a mean over the groups it applies to. The controls of all groups are rolled out
        and decoded together (one pass); only the distances are computed group by group.
        """
        group, role, step = batch["group"], batch["role"], batch["step"]
        distance = mmd if self.config.distribution_distance == "mmd" else energy_distance
        terms: dict[str, list[torch.Tensor]] = {"distribution": [], "population": [], "invariance": [],
                                                "latent": []}
        rolled: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # source, target, step
        for g in torch.unique(group[group >= 0]):
            source = torch.nonzero((group == g) & (role == ROLE_SOURCE)).squeeze(-1)
            target = torch.nonzero((group == g) & (role == ROLE_TARGET)).squeeze(-1)
            if not len(source) or not len(target):
                continue
            perturbed = bool(u[target].abs().sum() > 0)
            target_step = step[target[0]]
            if not perturbed and self.config.stationary_control and bool(target_step == 0):
                target_step = torch.full_like(target_step, self.config.n_steps)
            if perturbed or bool(target_step > 0):
                rolled.append((source, target, target_step))
            if perturbed:
                terms["invariance"].append(mmd(inf.c_mean[target], inf.c_mean[source]))
        if rolled:
            source = torch.cat([s for s, _, _ in rolled])
            u_source = torch.cat([u[t[0]].expand(len(s), -1) for s, t, _ in rolled])
            steps = torch.cat([n.expand(len(s)) for s, _, n in rolled])
            z_pred = self.dynamics.rollout(inf.z[source], u_source, steps, sample=True)
            latent_match = bool(self.config.lambda_latent)
            spread = inf.z[source].detach().std(0).clamp_min(1e-3) if latent_match else None
            all_logits = self.decode_logits(z_pred, inf.c[source], batch["covariates"][source])
            all_predicted = self._log1p_of_logits(all_logits)
            offset = 0
            for source, target, _ in rolled:
                rows = slice(offset, offset + len(source))
                offset += len(source)
                observed = self._log1p_of_logits(logits[target])
                terms["distribution"].append(distance(all_predicted[rows], observed))
                if latent_match:
                    terms["latent"].append(energy_distance(z_pred[rows] / spread,
                                                           inf.z[target] / spread))
                terms["population"].append(self._population_term(
                    all_logits[rows], batch["x"][target], batch["library"][target], normaliser[target]))
        zero = inf.z.new_zeros(())
        return {name: torch.stack(values).mean() if values else zero for name, values in terms.items()}

    def _log1p_of_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Decoder output -> mean expression on the log1p-normalised scale."""
        if self.config.likelihood == "nb":
            return torch.log1p(torch.softmax(logits, -1) * self.config.library_scale)
        return logits

    def _population_term(self, logits: torch.Tensor, x: torch.Tensor, library: torch.Tensor,
                         normaliser: torch.Tensor) -> torch.Tensor:
        """Mismatch between a condition's real cells x (cells, G) and the mean expression of the
        rollouts of its controls (decoder output ``logits`` (rollouts, G)).

        Gaussian (log1p data): -log p(x_i | rollout mean), averaged over real cells i
        (``normaliser`` (cells,) is ``_log_normaliser(x)``), i.e. the squared error of the
        population mean per gene in units of the learned noise variance, plus a constant.
        NB (counts): the same squared error on the log1p-normalised scale that predictions are
        read on: the real cells' mean log1p(x / library * library_scale) against its expectation
        under the rollouts' mean proportions (``expected_log1p``), averaged over
        ``POPULATION_LIBRARY_LEVELS`` quantiles of the real cells' library sizes (per cell costs
        ~4x a training step), per gene in units of the real cells' variance plus
        ``POPULATION_VARIANCE_FLOOR``, halved and summed over genes. The NB likelihood of the
        counts under that mean, used before, weighs genes by their counts and predicted held-out
        pairs of the count simulator worse than the Gaussian model of the same cells normalised.
        """
        if self.config.likelihood == "nb":
            levels = min(POPULATION_LIBRARY_LEVELS, len(library))
            sizes = torch.quantile(library, (torch.arange(levels, dtype=library.dtype,
                                                          device=library.device) + 0.5) / levels)
            mean = sizes.unsqueeze(-1) * torch.softmax(logits, -1).mean(0)
            expected = self.expected_log1p(mean, sizes).mean(0)
            observed = torch.log1p(x / library.unsqueeze(-1) * self.config.library_scale)
            variance = observed.var(0, correction=0).detach() + POPULATION_VARIANCE_FLOOR
            return ((observed.mean(0) - expected).pow(2) / (2 * variance)).sum()
        return -(normaliser + self._log_kernel(x, logits.mean(0).expand_as(x))).mean()

    def _mean_of_logits(self, logits: torch.Tensor, library: torch.Tensor) -> torch.Tensor:
        """Decoder output -> mean expression on the data scale (see ``expression_mean``)."""
        if self.config.likelihood == "nb":
            return library.unsqueeze(-1) * torch.softmax(logits, -1)
        return logits

    def _log_normaliser(self, x: torch.Tensor) -> torch.Tensor:
        """``observation.log_normaliser`` of x (B,), shared by the reconstruction and population
        terms of a batch."""
        return observation.log_normaliser(x, self.config.likelihood, self.log_dispersion)

    def _log_kernel(self, x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """``observation.log_kernel``: log p(x | mean) - ``_log_normaliser(x)``, (B,)."""
        return observation.log_kernel(x, mean, self.config.likelihood, self.log_dispersion)

    # prediction ----------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, x: torch.Tensor, library: torch.Tensor, covariates: torch.Tensor,
                targets: torch.Tensor, steps: torch.Tensor, sample: bool = False,
                generator: torch.Generator | None = None, descriptors: torch.Tensor | None = None,
                has_descriptor: torch.Tensor | None = None,
                observation_noise: bool = True,
                posterior_draws: bool = True) -> dict[str, torch.Tensor]:
        """Counterfactual expression of control cells under perturbations at latent steps.

        Encodes (c, z_0) of each control cell (B rows), embeds its row of ``targets`` (B, K'),
        rolls out ``steps`` (B,) and decodes. With ``sample`` False the posterior, the noise and
        the likelihood are at their means (deterministic); with True they are drawn from
        ``generator``, the posterior only if ``posterior_draws``, the likelihood only if
        ``observation_noise``. Returns ``expression`` (B, G) on the data scale, ``log1p`` (B, G)
        on the log1p-normalised scale, ``z`` (B, n) and ``c`` (B, m). For counts, ``log1p`` is
        the expectation of log1p(counts / library * library_scale) under the negative binomial
        (the mean of log1p data is not log1p of the mean), or that of the drawn cell when the
        likelihood is drawn.
        """
        inf = self.inference(x, library, covariates, sample=sample and posterior_draws,
                             generator=generator)
        u = self.embed(targets, descriptors, has_descriptor)
        z = self.dynamics.rollout(inf.z, u, steps, sample=sample, generator=generator)
        mean = self.expression_mean(z, inf.c, covariates, library)
        draw = sample and observation_noise
        if self.config.likelihood != "nb":
            expression = self._draw(mean, generator) if draw else mean
            return {"expression": expression, "log1p": expression, "z": z, "c": inf.c}
        if draw:
            counts = self._draw(mean, generator)
            log1p = observation.log1p_normalise(counts, self.config.library_scale)
            return {"expression": counts, "log1p": log1p, "z": z, "c": inf.c}
        return {"expression": mean, "log1p": self.expected_log1p(mean, library), "z": z, "c": inf.c}

    def expected_log1p(self, mean: torch.Tensor, library: torch.Tensor) -> torch.Tensor:
        """E[log1p(x / library * library_scale)] for x ~ NB(mean, theta), (B, G)
        (``observation.expected_log1p``)."""
        return observation.expected_log1p(mean, library, self.log_dispersion,
                                          self.config.library_scale)

    def _draw(self, mean: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """A draw of the likelihood with ``generator`` (``observation.draw``)."""
        return observation.draw(mean, self.config.likelihood, self.log_dispersion, generator)


def _lineage_spread(c_mean: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
    """How much the invariant state moves along lineages (paired data), scale-free: the mean of
    ||c_i - c_prev(i)||^2 over cells with a previous observation in the batch, divided by twice the
    total variance of c over the batch. 0 when c is constant along lineages, about 1 when the two
    observations are unrelated; 0 without paired rows."""
    if previous is None or not bool((previous >= 0).any()):
        return c_mean.new_zeros(())
    later = previous >= 0
    moved = (c_mean[later] - c_mean[previous[later]]).pow(2).sum(-1).mean()
    return moved / (2 * c_mean.var(0).sum() + 1e-6)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over rows where ``mask`` holds (0 if none)."""
    if not bool(mask.any()):
        return values.new_zeros(())
    return values[mask].mean()
