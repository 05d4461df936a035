"""The staged fit: CITE-VAE's module fitted stage by stage instead of by the joint objective.

On the count simulator's held-out pairs the joint objective found programs that correlate only
0.65-0.72 with the true ones, while the stages below recover them at 0.91-0.97 and win more pairs
(DEVELOPERS.md, sessions 16-18). The stages, on the training cells (log1p-normalised scale):

1. programs: sparse principal components (``citevae.train.components``); the sparsest are the
   programs z, the rest carry the invariant state;
2. invariant state: c = the other components minus their regression (an MLP) on the programs;
3. order: one fit of the mechanisms with edges anywhere off the diagonal; the programs are ordered
   by their outgoing edge mass, so that the model's strictly lower-triangular Lambda(u) can hold
   the strongest edges;
4. the module's encoders are fitted to (c, z) by Gaussian likelihood, p(z_0 | c) to the control
   cells' programs, and the decoder (and dispersion) by the module's likelihood of the
   expression given (z, c);
5. mechanisms: the perturbation embedding and the causal dynamics, fitted so that control cells
   rolled out under each training condition (to its latent step) match the mean and covariance of
   the condition's programs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import nn

from citevae.errors import CiteVAEError, TrainingDivergedError
from citevae.module.causal import CausalDynamics, causal_dynamics
from citevae.module.citevae import CiteVAEModule
from citevae.module.config import ModuleConfig
from citevae.module.embedding import PerturbationEmbedding
from citevae.module.networks import mlp, one_hot_covariates
from citevae.train.components import SparseComponents, sparse_components


@dataclass
class StagedConfig:
    """Settings of the staged fit."""

    n_components: int | None = None
    """Sparse components (programs + the rest); None: the largest eigenvalue gap decides."""
    n_programs: int | None = None
    """Programs among the components; None: the largest gap of loading sparsity decides."""
    rotation_starts: int = 16
    """Starts of the sparse rotation (the sparsest result is kept)."""
    regression_steps: int = 3000
    """Adam steps of each network fit (encoders, prior, decoder, c's regression)."""
    regression_lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 4096
    """Cells per step of the network fits (all cells when there are fewer)."""
    mechanism_steps: int = 800
    """Adam steps of each mechanism fit (the ordering fit and the final one)."""
    mechanism_lr: float = 0.02
    rollouts_per_control: int = 4
    """Rollouts of each control cell per condition and step of the mechanism fit."""
    seed: int = 0

    def __post_init__(self) -> None:
        positive = ("rotation_starts", "regression_steps", "batch_size", "mechanism_steps",
                    "rollouts_per_control")
        for name in positive:
            if getattr(self, name) < 1:
                raise CiteVAEError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("regression_lr", "mechanism_lr"):
            if getattr(self, name) <= 0:
                raise CiteVAEError(f"{name} must be > 0, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        """JSON-ready dictionary."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> StagedConfig:
        """Inverse of ``to_dict``; unknown keys are refused by name."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise CiteVAEError(f"unknown staged-fit option(s): {', '.join(unknown)}")
        return cls(**data)


@dataclass
class StagedCells:
    """The training cells as the staged fit consumes them (N cells, G genes, K targets).

    Attributes:
        x: (N, G) expression on the data scale.
        log1p: (N, G) the module's normalised encoder input (log1p scale).
        library: (N,) library sizes (ones for log1p data).
        covariates: (N, C) covariate codes.
        targets: (N, K) multi-hot perturbation targets.
        steps: (N,) latent step of each cell.
        conditions: (N,) condition labels.
        is_control: (N,) bool.
    """

    x: torch.Tensor
    log1p: torch.Tensor
    library: torch.Tensor
    covariates: torch.Tensor
    targets: torch.Tensor
    steps: torch.Tensor
    conditions: np.ndarray
    is_control: np.ndarray

    @property
    def sources(self) -> torch.Tensor:
        """Rows of the control cells at step 0, whose rollouts stand for every condition."""
        return torch.from_numpy(np.flatnonzero(self.is_control & (self.steps.numpy() == 0)))


@dataclass
class StagedResult:
    """What the staged fit found: the components, the programs' order (index into the first
    ``n_programs`` components), the final loss of each stage and the seconds it took."""

    components: SparseComponents
    order: list[int]
    losses: dict[str, float]
    seconds: float


def fit_staged(cells: StagedCells, build_module: Callable[[int, int], CiteVAEModule],
               config: StagedConfig) -> tuple[CiteVAEModule, StagedResult]:
    """Fit a module stage by stage (module docstring) on ``cells``.

    ``build_module(n_programs, n_invariant)`` makes the module once stage 1 has chosen its sizes.
    Returns the fitted module (in eval mode) and a summary of the stages.
    """
    start = time.perf_counter()
    if not len(cells.sources):
        raise CiteVAEError("the staged fit needs control cells at the first step among the "
                           "training cells")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    log1p = cells.log1p.double().numpy()
    components = sparse_components(log1p, config.n_components, config.n_programs,
                                   config.rotation_starts, config.seed)
    scores = torch.from_numpy(components.transform(log1p)).float()
    n = components.n_programs
    module = build_module(n, scores.shape[1] - n)
    module.train()
    cfg = module.config
    fit = _Fitter(config, generator)
    z, others = scores[:, :n], scores[:, n:]
    leak = mlp(n, others.shape[1], cfg.n_hidden, cfg.n_layers)
    losses = {"invariant_state": fit.regression(leak, z, others)}
    with torch.no_grad():
        c = others - leak(z)
    directions = target_directions(cfg.n_targets, cfg.n_embedding, generator)
    order = (causal_order(cfg, directions, z, cells, fit) if cfg.instantaneous and n > 1
             else np.arange(n))
    z = z[:, torch.from_numpy(order)]
    covariates = one_hot_covariates(cells.covariates, cfg.covariate_sizes)
    losses["c_encoder"] = fit.gaussian(module.c_encoder, torch.cat([cells.log1p, covariates], -1), c)
    losses["z_encoder"] = fit.gaussian(module.z_encoder,
                                       torch.cat([cells.log1p, c, covariates], -1), z)
    sources = cells.sources
    losses["z0_prior"] = fit.gaussian(module.z0_prior,
                                      torch.cat([c, covariates], -1)[sources], z[sources])
    losses["decoder"] = fit.decoder(module, z, c, cells)
    losses["mechanisms"] = fit.mechanisms(module.dynamics, directions, z, cells,
                                          cfg.lambda_sparsity)
    losses["embedding"] = fit.embedding(module.embedding, directions)
    module.eval()
    return module, StagedResult(components, order.tolist(), losses, time.perf_counter() - start)


def target_directions(n_targets: int, n_embedding: int, generator: torch.Generator) -> torch.Tensor:
    """Fixed embeddings of the training targets in the mechanism fits, (K, d_u): orthonormal rows
    (a random rotation of one-hot codes) when K <= d_u, so that each target's edges and noise
    shifts are free parameters of the fit; random unit rows otherwise (the mechanisms of K
    targets then share d_u dimensions)."""
    draws = torch.randn(max(n_targets, n_embedding), n_embedding, generator=generator)
    if n_targets <= n_embedding:
        return torch.linalg.qr(draws)[0][:n_targets]
    return draws / draws.norm(dim=-1, keepdim=True)


def causal_order(config: ModuleConfig, directions: torch.Tensor, z: torch.Tensor,
                 cells: StagedCells, fit: _Fitter) -> np.ndarray:
    """Order of the programs (n,) for strictly lower-triangular edges: dynamics like those of a
    module with hyperparameters ``config``, but with edges anywhere off the diagonal, are fitted
    to the training conditions; programs with more outgoing edge mass (summed over the training
    targets' ``directions`` (K, d_u)) come first."""
    dynamics = causal_dynamics(config, acyclic=False)
    fit.mechanisms(dynamics, directions, z, cells, config.lambda_sparsity)
    with torch.no_grad():
        lam = dynamics.causal_matrix(directions)
    outgoing = lam.abs().sum((0, 1)).numpy()
    return np.argsort(-outgoing, kind="stable")


class _Fitter:
    """The optimisation loops of the stages, with the settings of ``config``."""

    def __init__(self, config: StagedConfig, generator: torch.Generator) -> None:
        self.config, self.generator = config, generator

    def minimise(self, loss_of_rows: Callable[[torch.Tensor | slice], torch.Tensor],
                 parameters: list[nn.Parameter], n_rows: int, stage: str, steps: int | None = None,
                 lr: float | None = None, weight_decay: float | None = None) -> float:
        """Adam on ``loss_of_rows`` over random batches of rows (all rows when they fit in one
        batch); returns the last batch's loss."""
        cfg = self.config
        optimiser = torch.optim.Adam(parameters, lr=lr or cfg.regression_lr,
                                     weight_decay=cfg.weight_decay if weight_decay is None
                                     else weight_decay)
        loss = torch.zeros(())
        for _ in range(steps or cfg.regression_steps):
            rows = slice(None) if n_rows <= cfg.batch_size else torch.randint(
                n_rows, (cfg.batch_size,), generator=self.generator)
            loss = loss_of_rows(rows)
            if not torch.isfinite(loss):
                raise TrainingDivergedError(f"the staged fit's {stage} loss became {loss.item()}")
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        return loss.item()

    def regression(self, network: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
        """Least squares of ``network(inputs)`` (N, a) -> ``targets`` (N, b)."""
        return self.minimise(lambda rows: (network(inputs[rows]) - targets[rows]).pow(2).mean(),
                             list(network.parameters()), len(inputs), "regression")

    def gaussian(self, head: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
        """Maximum likelihood of ``targets`` (N, b) under the diagonal Gaussian ``head(inputs)``
        (mean and log-variance), per target dimension."""
        def loss(rows: torch.Tensor | slice) -> torch.Tensor:
            mean, log_var = head(inputs[rows])
            return 0.5 * (log_var + (targets[rows] - mean).pow(2) * torch.exp(-log_var)).mean()

        return self.minimise(loss, list(head.parameters()), len(inputs), "encoder")

    def decoder(self, module: CiteVAEModule, z: torch.Tensor, c: torch.Tensor,
                cells: StagedCells) -> float:
        """The decoder and the dispersion by the module's likelihood of the cells' expression
        given their (z, c), per gene."""
        def loss(rows: torch.Tensor | slice) -> torch.Tensor:
            mean = module.expression_mean(z[rows], c[rows], cells.covariates[rows],
                                          cells.library[rows])
            return -module.likelihood(mean).log_prob(cells.x[rows]).mean()

        parameters = [*module.decoder.parameters(), module.log_dispersion]
        return self.minimise(loss, parameters, len(z), "decoder")

    def mechanisms(self, dynamics: CausalDynamics, directions: torch.Tensor, z: torch.Tensor,
                   cells: StagedCells, sparsity: float) -> float:
        """Fit ``dynamics`` so that the training controls' programs, rolled out under each
        (condition, step) group of the training cells to its step, match the mean and covariance
        of the group's programs ``z`` (N, n). A condition's embedding is the sum of its targets'
        fixed ``directions`` (K, d_u); ``sparsity`` weighs the edges' L1 (the module's
        ``lambda_sparsity``). Returns the final loss."""
        groups = _condition_groups(cells)
        if not groups:
            raise CiteVAEError("the staged fit needs perturbed cells or controls at later steps "
                               "among the training cells")
        u = torch.stack([cells.targets[rows[0]] for rows in groups]) @ directions
        steps = torch.stack([cells.steps[rows[0]] for rows in groups])
        observed_mean = torch.stack([z[rows].mean(0) for rows in groups])
        observed_cov = torch.stack([torch.cov(z[rows].T) for rows in groups])
        sources = z[cells.sources].repeat(self.config.rollouts_per_control, 1)
        n_sources, n_groups = len(sources), len(groups)
        starts = sources.repeat(n_groups, 1)
        u_rows, step_rows = u.repeat_interleave(n_sources, 0), steps.repeat_interleave(n_sources)
        _start_mechanisms(dynamics)

        def loss(_: torch.Tensor | slice) -> torch.Tensor:
            rolled = dynamics.rollout(starts, u_rows, step_rows, sample=True,
                                      generator=self.generator).view(n_groups, n_sources, -1)
            mean = rolled.mean(1)
            centred = rolled - mean.unsqueeze(1)
            cov = torch.einsum("gsi,gsj->gij", centred, centred) / max(n_sources - 1, 1)
            return ((mean - observed_mean).pow(2).sum() + (cov - observed_cov).pow(2).sum()
                    + sparsity * dynamics.causal_matrix(u).abs().sum((-2, -1)).mean())

        return self.minimise(loss, list(dynamics.parameters()), 0, "mechanism",
                             steps=self.config.mechanism_steps, lr=self.config.mechanism_lr,
                             weight_decay=0.0)

    def embedding(self, embedding: PerturbationEmbedding, directions: torch.Tensor) -> float:
        """Set ``embedding`` so that each training target embeds to its ``directions`` row
        (K, d_u): the descriptor network is fitted to the directions of the targets with a
        descriptor (least squares; what it predicts is the embedding of unseen targets), and the
        residuals hold the rest exactly. Returns the network's final loss (0 without
        descriptors)."""
        has = embedding.has_descriptor
        loss = 0.0
        if bool(has.any()):
            loss = self.regression(embedding.descriptor_net, embedding.descriptors[has],
                                   directions[has])
        with torch.no_grad():
            embedding.residual.zero_()
            embedding.residual.copy_(directions - embedding.target_embeddings())
        return loss


def _start_mechanisms(dynamics: CausalDynamics) -> None:
    """Start of a mechanism fit: no edges, no noise shifts and unit noise (from the module's
    random initialisation the edges grew until the solve diverged)."""
    with torch.no_grad():
        dynamics.edge_weights.zero_()
        dynamics.noise_mean.weight.zero_()
        dynamics.noise_log_scale.weight.zero_()
        dynamics.log_scale0.zero_()


def _condition_groups(cells: StagedCells) -> list[torch.Tensor]:
    """Rows of each (condition, step) group that rollouts of the controls must reach: every
    group except the controls at step 0 (the sources themselves); groups of one cell, which
    have no covariance, are left out."""
    steps = cells.steps.numpy()
    groups = []
    for condition, step in sorted({(c, int(s)) for c, s in zip(cells.conditions, steps, strict=True)}):
        rows = np.flatnonzero((cells.conditions == condition) & (steps == step))
        if (step == 0 and cells.is_control[rows[0]]) or len(rows) < 2:
            continue
        groups.append(torch.from_numpy(rows))
    return groups
