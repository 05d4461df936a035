"""Linear alignment of learned programs by the regime structure of their transitions.

Stochastic training of the VAE leaves the learned z close to an invertible linear map of the true
programs, but turned by an arbitrary rotation: the ELBO prefers the true orientation, yet the
valley of rotations is nearly flat and minibatch gradients do not cross it (DEVELOPERS.md, session
5). The orientation is pinned by full-batch maximum likelihood instead: each cell's transition
residual e_t = z_t - g(z_{t-1}) (g: the control drift, fitted on control transitions) is mapped by
an invertible W so that, within each condition, the components of W e_t are independent Gaussians
with the condition's own means and scales (the noise model of MODEL.md section 2 without
instantaneous edges). Linear maps commute with the conditional mean, so W applies to z itself.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from citevae.errors import CiteVAEError

__all__ = ["align_latents"]


def align_latents(z: np.ndarray, condition: np.ndarray, previous: np.ndarray, control: str, *,
                  n_starts: int = 3, n_iterations: int = 3000,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rotate learned programs so that each condition's transition noise factorises.

    Args:
        z: learned programs of every cell, (cells, n), e.g. ``CiteVAE.get_latent``'s z.
        condition: condition label of every cell (cells,), e.g. its perturbation.
        previous: row of each cell's previous observation of the same lineage, -1 if none
            (cells,), as ``Registry.previous_observations`` gives it.
        control: the label of the control condition, whose transitions define the drift g.
        n_starts: random orthogonal starting points of W; the one of highest likelihood wins.
        n_iterations: full-batch Adam steps for each start (and a third as many for g).
        seed: seed of the drift fit and the starting points.

    Returns:
        The aligned programs (cells, n): standardised z times W^T, and W (n, n).
    """
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
    if n_starts < 1 or n_iterations < 1:
        raise CiteVAEError(f"n_starts and n_iterations must be >= 1, got {n_starts} and {n_iterations}")
    later = np.flatnonzero(previous >= 0)
    from_control = later[condition[later] == control]
    if len(from_control) < 2:
        raise CiteVAEError(f"align_latents needs transitions (cells with a previous observation) "
                           f"of the control condition {control!r}; found {len(from_control)}")
    generator = torch.Generator().manual_seed(seed)
    spread = z.std(0)
    standard = (z - z.mean(0)) / np.where(spread > 0, spread, 1.0)
    states = torch.from_numpy(standard)
    drift = _fit_drift(states[previous[from_control]], states[from_control], generator,
                       max(1, n_iterations // 3))
    with torch.no_grad():
        residual = states[later] - drift(states[previous[later]])
    codes = torch.from_numpy(np.unique(condition[later], return_inverse=True)[1])
    best_loglik, best_w = -np.inf, None
    for _ in range(n_starts):
        loglik, w = _fit_rotation(residual, codes, generator, n_iterations)
        if loglik > best_loglik:
            best_loglik, best_w = loglik, w
    return standard @ best_w.T, best_w


def _fit_drift(before: torch.Tensor, after: torch.Tensor, generator: torch.Generator,
               n_iterations: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """g with after ~ g(before): before + a small MLP, least squares, full batch."""
    n = before.shape[1]
    net = nn.Sequential(nn.Linear(n, 64), nn.Tanh(), nn.Linear(64, n)).double()
    with torch.no_grad():  # seeded here rather than through the global RNG
        for parameter in net.parameters():
            parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator,
                                              dtype=torch.float64))
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(n_iterations):
        loss = (before + net(before) - after).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    net.requires_grad_(False)
    return lambda states: states + net(states)


def _fit_rotation(residual: torch.Tensor, codes: torch.Tensor, generator: torch.Generator,
                  n_iterations: int) -> tuple[float, np.ndarray]:
    """Maximise mean log N(W e | m_k, diag s_k^2) + log|det W| from a random orthogonal W."""
    n, k = residual.shape[1], int(codes.max()) + 1
    start, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    w = nn.Parameter(start)
    mean = nn.Parameter(torch.zeros(k, n, dtype=torch.float64))
    log_scale = nn.Parameter(torch.zeros(k, n, dtype=torch.float64))
    optimiser = torch.optim.Adam([w, mean, log_scale], lr=1e-2)
    for _ in range(n_iterations):
        noise = torch.distributions.Normal(mean[codes], log_scale[codes].exp())
        loglik = noise.log_prob(residual @ w.T).sum(-1).mean() + torch.linalg.slogdet(w)[1]
        optimiser.zero_grad()
        (-loglik).backward()
        optimiser.step()
    return float(loglik.detach()), w.detach().numpy()
