"""Alignment of learned programs under the model's own transition density.

Stochastic training of the VAE leaves the learned z close to an invertible map of the true
programs, but turned by an arbitrary rotation: the ELBO prefers the true orientation, yet the
valley of rotations is nearly flat and minibatch gradients do not cross it (DEVELOPERS.md, session
5). The orientation is pinned by full-batch maximum likelihood instead. With y = G(z) (z
standardised), every transition of a lineage in condition k is scored under MODEL.md section 2,

    (I - L_k) y_t - h(y_{t-1}) - m_k ~ N(0, diag s_k^2),   h(y) = y + MLP(y) shared by all k,

with L_k strictly lower-triangular and L = 0, m = 0, s = 1 at control, plus log|det dG/dz| at y_t.
This is the model's transition with the drift shared by all conditions (``perturbed_drift=False``;
with the default, a condition's own drift is represented here only by its constant m_k).
Because the drift h is shared and sits inside (I - L_k)^{-1}, a rotation cannot be absorbed by the
condition-specific edges (without the lag it can: any covariance has an LDL factorisation in a
fixed order), so y is identified up to permutation and scale when edges and noise vary.

G is fitted in two stages: a linear map W from several random orthogonal starts (the best
likelihood wins), then, from there, G(x) = W'x + V tanh(Ux + b) on the linearly aligned x, which
also undoes the smooth warp that the VAE's encoder leaves (exact log-determinant per cell).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from citevae.errors import CiteVAEError

__all__ = ["Alignment", "align_latents"]

DRIFT_WIDTH = 64
LEARNING_RATE = 0.02
WARP_LEARNING_RATE = 0.005
"""Adam rate of the nonlinear stage, which starts from the linear stage's fitted density: at
LEARNING_RATE it could leave that optimum (seed 2 of the identifiability benchmark: MCC 0.85 ->
0.56)."""
WARP_INIT_SCALE = 0.3
"""Standard deviation of the warp's input weights U at the start (its output weights V start at 0,
so the warp starts as the identity)."""


class Alignment(NamedTuple):
    """Result of ``align_latents``."""

    programs: np.ndarray
    """Aligned programs of every cell, (cells, n)."""
    linear_map: np.ndarray
    """W of the linear stage, (n, n), acting on the standardised z."""
    log_likelihood: float
    """Mean log-density of a transition of the standardised z under the fitted map and
    transition model (nats)."""


def align_latents(z: np.ndarray, condition: np.ndarray, previous: np.ndarray, control: str, *,
                  lagged: bool = True, instantaneous: bool = True, warp_width: int = 32,
                  n_starts: int = 5, n_iterations: int = 2000, seed: int = 0) -> Alignment:
    """Map learned programs to the coordinates in which the model's transition density fits best.

    Args:
        z: learned programs of every cell, (cells, n), e.g. ``CiteVAE.get_latent``'s z.
        condition: condition label of every cell (cells,), e.g. its perturbation.
        previous: row of each cell's previous observation of the same lineage, -1 if none
            (cells,), as ``DataRegistry.previous_observations`` gives it. The cells with a previous
            observation are the transitions scored.
        control: the label of the control condition (no edges, noise mean 0 and scale 1).
        lagged: score y_t given the drift h(y_{t-1}) (the model's ``lagged``); False scores y_t
            under the condition's noise and edges alone.
        instantaneous: fit strictly lower-triangular edges L_k per condition (the model's
            ``instantaneous``); False keeps L = 0.
        warp_width: hidden units of the nonlinear stage; 0 stops after the linear map.
        n_starts: random orthogonal starting points of W; the one of highest likelihood wins.
        n_iterations: full-batch Adam steps (cosine-decayed learning rate) of each start and of
            the nonlinear stage.
        seed: seed of the starting points and of the networks' initial weights.

    Returns:
        ``Alignment``: the aligned programs (cells, n), the linear stage's W and the likelihood.
    """
    z, condition, previous = _checked(z, condition, previous, n_starts, n_iterations, warp_width)
    later = np.flatnonzero(previous >= 0)
    if not (condition[later] == control).any():
        raise CiteVAEError(f"align_latents needs transitions (cells with a previous observation) "
                           f"of the control condition {control!r}; found none")
    spread = z.std(0)
    standard = torch.from_numpy((z - z.mean(0)) / np.where(spread > 0, spread, 1.0)).float()
    labels, codes = np.unique(condition[later], return_inverse=True)
    generator = torch.Generator().manual_seed(seed)
    fits = []
    for _ in range(n_starts):
        density = _TransitionDensity(torch.from_numpy(codes), labels != control, standard.shape[1],
                                     lagged, instantaneous, generator)
        linear = _LinearMap(standard.shape[1], generator)
        loglik = _fit(density, linear, standard[previous[later]], standard[later], n_iterations,
                      LEARNING_RATE)
        fits.append((loglik, linear, density))
    loglik, linear, density = max(fits, key=lambda fit: fit[0])
    with torch.no_grad():
        programs = linear(standard)[0]
    if warp_width:
        warp = _Warp(standard.shape[1], warp_width, generator)
        before, after = programs[previous[later]], programs[later]
        with torch.no_grad():
            start = float(_mean_loglik(density, warp, before, after))
        warped = _fit(density, warp, before, after, n_iterations, WARP_LEARNING_RATE)
        if warped > start:  # kept only where it raises the likelihood
            loglik += warped - start
            with torch.no_grad():
                programs = warp(programs)[0]
    return Alignment(programs.double().numpy(), linear.weight.detach().double().numpy(), loglik)


def _checked(z, condition, previous, n_starts: int, n_iterations: int, warp_width: int):
    """Arrays of ``align_latents`` checked, with each problem named."""
    z = np.asarray(z, dtype=np.float64)
    condition = np.asarray(condition).astype(str)
    previous = np.asarray(previous)
    if z.ndim != 2 or z.shape[0] < 2 or z.shape[1] == 0:
        raise CiteVAEError(f"z must be 2-D (cells, programs) with >= 2 cells, got shape {z.shape}")
    for name, values in (("condition", condition), ("previous", previous)):
        if values.shape != (len(z),):
            raise CiteVAEError(f"{name} must have one entry per cell ({len(z)}), got shape "
                               f"{values.shape}")
    if not np.issubdtype(previous.dtype, np.integer) or previous.min() < -1 or previous.max() >= len(z):
        raise CiteVAEError("previous must hold row numbers of z (or -1 for no previous observation)")
    if n_starts < 1 or n_iterations < 1 or warp_width < 0:
        raise CiteVAEError(f"n_starts and n_iterations must be >= 1 and warp_width >= 0, got "
                           f"{n_starts}, {n_iterations} and {warp_width}")
    return z, condition, previous


def _seeded(module: nn.Module, generator: torch.Generator, scale: float) -> nn.Module:
    """``module`` with every parameter drawn from N(0, scale^2) by ``generator`` (not the global RNG)."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(scale * torch.randn(parameter.shape, generator=generator))
    return module


class _TransitionDensity(nn.Module):
    """log p(y_t | y_{t-1}, condition) of MODEL.md section 2, control's parameters held fixed."""

    def __init__(self, codes: torch.Tensor, perturbed: np.ndarray, n: int, lagged: bool,
                 instantaneous: bool, generator: torch.Generator) -> None:
        super().__init__()
        self.codes = codes
        self.gate = torch.from_numpy(perturbed).float()[:, None]  # (conditions, 1): 0 at control
        k = len(perturbed)
        self.mean, self.log_scale = nn.Parameter(torch.zeros(k, n)), nn.Parameter(torch.zeros(k, n))
        self.edges = nn.Parameter(torch.zeros(k, n, n)) if instantaneous else None
        self.drift = _seeded(nn.Sequential(nn.Linear(n, DRIFT_WIDTH), nn.Tanh(),
                                           nn.Linear(DRIFT_WIDTH, n)), generator, 0.1) if lagged else None

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """Log-density of each transition, (transitions,)."""
        residual = after - (self.mean * self.gate)[self.codes]
        if self.edges is not None:
            lower = torch.tril(self.edges, diagonal=-1) * self.gate[:, :, None]
            residual = residual - torch.einsum("cij,cj->ci", lower[self.codes], after)
        if self.drift is not None:
            residual = residual - before - self.drift(before)
        noise = torch.distributions.Normal(0.0, (self.log_scale * self.gate).exp()[self.codes])
        return noise.log_prob(residual).sum(-1)


class _LinearMap(nn.Module):
    """y = W x from a random orthogonal W; returns (y, log|det W|)."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.linalg.qr(torch.randn(n, n, generator=generator))[0])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x @ self.weight.T, torch.linalg.slogdet(self.weight)[1].expand(len(x))


class _Warp(nn.Module):
    """y = W x + V tanh(U x + b), starting at the identity; returns (y, log|det dy/dx| per row)."""

    def __init__(self, n: int, width: int, generator: torch.Generator) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(n))
        self.inner = nn.Parameter(WARP_INIT_SCALE * torch.randn(width, n, generator=generator))
        self.bias = nn.Parameter(torch.zeros(width))
        self.outer = nn.Parameter(torch.zeros(n, width))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = torch.tanh(x @ self.inner.T + self.bias)
        jacobian = self.weight + torch.einsum("iw,rw,wj->rij", self.outer, 1 - hidden**2, self.inner)
        return x @ self.weight.T + hidden @ self.outer.T, torch.linalg.slogdet(jacobian)[1]


def _mean_loglik(density: _TransitionDensity, mapping: nn.Module, before: torch.Tensor,
                 after: torch.Tensor) -> torch.Tensor:
    """Mean log-density of the mapped transitions, with the map's log-determinant at y_t."""
    mapped_after, log_det = mapping(after)
    return (density(mapping(before)[0], mapped_after) + log_det).mean()


def _fit(density: _TransitionDensity, mapping: nn.Module, before: torch.Tensor,
         after: torch.Tensor, n_iterations: int, learning_rate: float) -> float:
    """Maximise ``_mean_loglik`` over ``mapping`` and ``density`` (full batch, Adam,
    cosine-decayed rate); returns the final value (nats)."""
    optimiser = torch.optim.Adam([*density.parameters(), *mapping.parameters()], lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, n_iterations)
    for _ in range(n_iterations):
        loss = -_mean_loglik(density, mapping, before, after)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    with torch.no_grad():
        return float(_mean_loglik(density, mapping, before, after))
