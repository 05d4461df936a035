"""Small building blocks: MLPs and diagonal-Gaussian heads."""

from __future__ import annotations

import torch
from torch import nn


def mlp(n_in: int, n_out: int, n_hidden: int, n_layers: int, dropout: float = 0.0) -> nn.Sequential:
    """``n_layers`` hidden layers of width ``n_hidden`` (LayerNorm, SiLU), then a linear output."""
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(n_layers):
        layers += [nn.Linear(width, n_hidden), nn.LayerNorm(n_hidden), nn.SiLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = n_hidden
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class AdditiveDecoder(nn.Module):
    """f([z, rest]) = g(rest) + sum_k f_k(z_k): one function per program, added (B, n_out).

    An additive decoder in the sense of Lachapelle et al. 2023: the decoded change of a cell is the
    sum of each program's own contribution, so combinations of program values never seen together
    (a pair of perturbations moving different programs) decode to the sum of their parts. g is an
    MLP of ``rest`` (invariant state and covariates). Each f_k is linear (``linear``: f_k(z_k) =
    z_k l_k, the linearly decoded VAE of Svensson et al. 2020, which also extrapolates linearly
    beyond the programs' observed range) or a one-hidden-layer MLP (1 -> ``n_program_hidden`` ->
    n_out, SiLU).
    """

    def __init__(self, n_programs: int, n_rest: int, n_out: int, n_hidden: int, n_layers: int,
                 dropout: float = 0.0, linear: bool = False, n_program_hidden: int = 16) -> None:
        super().__init__()
        self.n_programs, self.linear = n_programs, linear
        self.rest = mlp(n_rest, n_out, n_hidden, n_layers, dropout)
        if not linear:
            self.program_weight = nn.Parameter(torch.randn(n_programs, n_program_hidden))
            self.program_bias = nn.Parameter(torch.randn(n_programs, n_program_hidden))
        n_features = n_programs if linear else n_programs * n_program_hidden
        self.program_out = nn.Linear(n_features, n_out, bias=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        z, rest = inputs[:, :self.n_programs], inputs[:, self.n_programs:]
        features = z if self.linear else nn.functional.silu(
            z.unsqueeze(-1) * self.program_weight + self.program_bias).flatten(1)
        return self.rest(rest) + self.program_out(features)


class GaussianHead(nn.Module):
    """Maps inputs (B, n_in) to a diagonal Gaussian: mean and log-variance (B, n_out) each."""

    def __init__(self, n_in: int, n_out: int, n_hidden: int, n_layers: int, dropout: float = 0.0):
        super().__init__()
        self.net = mlp(n_in, 2 * n_out, n_hidden, n_layers, dropout)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.net(inputs).chunk(2, dim=-1)
        return mean, log_var.clamp(-12.0, 8.0)


def reparameterize(mean: torch.Tensor, log_var: torch.Tensor, sample: bool = True,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """A draw mean + exp(log_var / 2) * eps (or the mean when ``sample`` is False)."""
    if not sample:
        return mean
    eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return mean + torch.exp(0.5 * log_var) * eps


def gaussian_kl(mean_q: torch.Tensor, log_var_q: torch.Tensor, mean_p: torch.Tensor | None = None,
                log_var_p: torch.Tensor | None = None) -> torch.Tensor:
    """KL(N(mean_q, var_q) || N(mean_p, var_p)) summed over the last axis; p defaults to N(0, I)."""
    if mean_p is None:
        mean_p = torch.zeros_like(mean_q)
        log_var_p = torch.zeros_like(log_var_q)
    return 0.5 * (
        log_var_p - log_var_q + (log_var_q.exp() + (mean_q - mean_p) ** 2) / log_var_p.exp() - 1.0
    ).sum(-1)


def one_hot_covariates(codes: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
    """Concatenated one-hot codes (B, sum(sizes)) of covariate codes (B, len(sizes))."""
    if not sizes:
        return codes.new_zeros((codes.shape[0], 0), dtype=torch.float32)
    parts = [nn.functional.one_hot(codes[:, j], size).float() for j, size in enumerate(sizes)]
    return torch.cat(parts, dim=-1)
