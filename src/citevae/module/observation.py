"""The observation model p(x | mean) of CITE-VAE and the plain VAE (MODEL.md section 2, step 4).

Negative binomial on counts (``likelihood`` "nb"), Gaussian otherwise; ``log_dispersion`` (G,) is
log theta (NB inverse dispersion) or log sigma_x (Gaussian) per gene. Also the expectation of
log1p-normalised expression under the negative binomial, which count-model predictions report.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Distribution, NegativeBinomial, Normal


def distribution(mean: torch.Tensor, likelihood: str, log_dispersion: torch.Tensor) -> Distribution:
    """p(x | mean) with ``mean`` (B, G) on the data scale."""
    if likelihood == "nb":
        theta = log_dispersion.exp()
        return NegativeBinomial(total_count=theta, logits=torch.log(mean + 1e-8) - torch.log(theta))
    return Normal(mean, log_dispersion.exp())


def log_normaliser(x: torch.Tensor, likelihood: str, log_dispersion: torch.Tensor) -> torch.Tensor:
    """The part of log p(x | mean) that does not depend on the mean, summed over genes, (B,).

    NB: lgamma(x + theta) - lgamma(x + 1) - lgamma(theta); Gaussian: -log sigma - log(2 pi) / 2.
    Computed once per batch and shared by the terms that score x (the lgamma calls and their
    digamma gradients dominate a training step's time).
    """
    if likelihood == "nb":
        theta = log_dispersion.exp()
        return (torch.lgamma(x + theta) - torch.lgamma(x + 1.0)).sum(-1) - torch.lgamma(theta).sum()
    return -(log_dispersion.sum() + 0.5 * math.log(2 * math.pi) * x.shape[-1]).expand(x.shape[0])


def log_kernel(x: torch.Tensor, mean: torch.Tensor, likelihood: str,
               log_dispersion: torch.Tensor) -> torch.Tensor:
    """log p(x | mean) - ``log_normaliser(x)``, summed over genes, (B,); with the normaliser it
    equals ``distribution(mean).log_prob(x).sum(-1)``.

    NB with logits l = log(mean + 1e-8) - log(theta), r = e^l: theta logsigmoid(-l) +
    x logsigmoid(l) = x log(r) - (theta + x) log1p(r) (one log and one log1p per entry);
    Gaussian: -(x - mean)^2 / (2 sigma^2).
    """
    if likelihood == "nb":
        theta = log_dispersion.exp()
        ratio = (mean + 1e-8) / theta
        return (x * torch.log(ratio) - (theta + x) * torch.log1p(ratio)).sum(-1)
    return -((x - mean) / log_dispersion.exp()).pow(2).sum(-1) / 2


def draw(mean: torch.Tensor, likelihood: str, log_dispersion: torch.Tensor,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """A draw of p(x | mean) with ``generator`` (gamma-Poisson for NB), (B, G)."""
    scale = log_dispersion.exp()
    if likelihood == "nb":
        shape = scale.expand_as(mean).contiguous()
        rate = torch._standard_gamma(shape, generator=generator) * mean / scale
        return torch.poisson(rate, generator=generator)
    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return mean + scale * noise


def log1p_normalise(counts: torch.Tensor, library_scale: float) -> torch.Tensor:
    """log1p(counts / total * library_scale) per cell, as the data are normalised."""
    total = counts.sum(-1, keepdim=True).clamp_min(1.0)
    return torch.log1p(counts / total * library_scale)


def expected_log1p(mean: torch.Tensor, library: torch.Tensor, log_dispersion: torch.Tensor,
                   library_scale: float, max_count: int = 64,
                   rows_per_chunk: int = 32) -> torch.Tensor:
    """E[log1p(x / library * library_scale)] for x ~ NB(mean, theta), (B, G).

    Exact (a sum over counts 0..max_count) where the mean + 10 sd lies within ``max_count``;
    elsewhere the second-order expansion log1p(a m) - a^2 var / (2 (1 + a m)^2), accurate for
    the large counts it is used on. No sampling, so predictions are deterministic.
    """
    theta = log_dispersion.exp()
    variance = mean + mean.pow(2) / theta
    scale = library_scale / library.unsqueeze(-1)
    expansion = torch.log1p(scale * mean) - scale.pow(2) * variance / (2 * (1 + scale * mean).pow(2))
    small = mean + 10 * variance.sqrt() <= max_count
    counts = torch.arange(max_count + 1, dtype=mean.dtype, device=mean.device).view(-1, 1, 1)
    exact = []
    for start in range(0, mean.shape[0], rows_per_chunk):
        block = slice(start, start + rows_per_chunk)
        pmf = nb_pmf(mean[block], theta, max_count)
        exact.append((pmf * torch.log1p(counts * scale[block].unsqueeze(0))).sum(0))
    return torch.where(small, torch.cat(exact), expansion)


def nb_pmf(mean: torch.Tensor, theta: torch.Tensor, max_count: int) -> torch.Tensor:
    """NB(mean, theta) probabilities of counts 0..max_count, (max_count + 1, B, G), by the
    recurrence P(k + 1) = P(k) (k + theta) / (k + 1) * mean / (theta + mean)."""
    success = mean / (theta + mean)
    first = torch.exp(theta * (torch.log(theta) - torch.log(theta + mean)))
    k = torch.arange(max_count, dtype=mean.dtype, device=mean.device).view(-1, 1, 1)
    ratios = (k + theta) / (k + 1) * success
    return first * torch.cat([torch.ones_like(first).unsqueeze(0), torch.cumprod(ratios, 0)])
