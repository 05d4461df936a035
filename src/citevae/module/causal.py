"""Perturbation-modulated latent causal dynamics (MODEL.md section 2, step 3).

    n_t ~ N(m(u), diag exp(2 (log_s0 + S u)))
    z_t = Lambda(u) z_t + h(z_{t-1}, u) + n_t  =>  z_t = (I - Lambda(u))^{-1} (h(z_{t-1}, u) + n_t)

Lambda(u) is strictly lower triangular and linear and bias-free in u, m(u) = M u is bias-free, so
at the control condition (u = 0) there are no edges and the noise is N(0, diag s0^2). The inverse is
applied by a unit-triangular solve; log|det(I - Lambda)| = 0 because the diagonal is exactly one.
"""

from __future__ import annotations

import torch
from torch import nn

from citevae.module.config import ModuleConfig
from citevae.module.networks import mlp

LOG_SCALE_RANGE = (-7.0, 3.0)


class CausalDynamics(nn.Module):
    """Lambda(u), the exogenous noise, the lagged transition h and the rollout over latent steps.

    Args:
        n_programs: n, number of latent programs z.
        n_embedding: d_u, size of the perturbation embedding u.
        n_hidden: width of the transition MLP.
        instantaneous: learn Lambda(u) (False: Lambda = 0, lag-only dynamics).
        lagged: learn h (False: h = 0, instantaneous-only dynamics).
        linear_transition: h(z, u) = A z + b + B u instead of z + MLP([z, u]).
        perturbed_drift: u enters h (False: h(z) = z + MLP(z) or A z + b, the same drift for every
            condition, so perturbations act only through the noise and the edges).
        nonlinear_mechanisms: parents enter as Lambda(u) tanh(z) (additive-noise, unit Jacobian).
        acyclic: Lambda(u) strictly lower triangular (the model). False allows edges anywhere off
            the diagonal, solved by a general solve: only for the unconstrained fit that orders the
            programs (``citevae.train.staged``); linear parents only.
    """

    def __init__(
        self,
        n_programs: int,
        n_embedding: int,
        n_hidden: int = 128,
        instantaneous: bool = True,
        lagged: bool = True,
        linear_transition: bool = False,
        nonlinear_mechanisms: bool = False,
        perturbed_drift: bool = True,
        acyclic: bool = True,
    ) -> None:
        super().__init__()
        n, d = n_programs, n_embedding
        self.n_programs = n
        self.instantaneous = instantaneous
        self.lagged = lagged
        self.linear_transition = linear_transition
        self.nonlinear_mechanisms = nonlinear_mechanisms
        self.perturbed_drift = perturbed_drift
        if not acyclic and nonlinear_mechanisms:
            raise ValueError("cyclic dynamics need linear parents")
        self.acyclic = acyclic
        edges = torch.tril(torch.ones(n, n), diagonal=-1) if acyclic else 1 - torch.eye(n)
        self.register_buffer("edge_mask", edges)
        self.edge_weights = nn.Parameter(0.01 * torch.randn(d, n, n))
        self.noise_mean = nn.Linear(d, n, bias=False)
        self.noise_log_scale = nn.Linear(d, n, bias=False)
        self.log_scale0 = nn.Parameter(torch.full((n,), -1.0))
        if linear_transition:
            self.transition_state = nn.Linear(n, n)
            nn.init.eye_(self.transition_state.weight)
            nn.init.zeros_(self.transition_state.bias)
            if perturbed_drift:
                self.transition_input = nn.Linear(d, n, bias=False)
                nn.init.zeros_(self.transition_input.weight)
        else:
            self.drift = mlp(n + (d if perturbed_drift else 0), n, n_hidden, 2)
            nn.init.zeros_(self.drift[-1].weight)
            nn.init.zeros_(self.drift[-1].bias)

    def causal_matrix(self, u: torch.Tensor) -> torch.Tensor:
        """Lambda(u): (B, n, n) strictly lower triangular (``acyclic``), exactly zero where u is
        zero."""
        if not self.instantaneous:
            return u.new_zeros((u.shape[0], self.n_programs, self.n_programs))
        return torch.einsum("bd,dij->bij", u, self.edge_weights) * self.edge_mask

    def noise_params(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean m(u) and log standard deviation log_s0 + S u of the exogenous noise, (B, n) each."""
        log_scale = (self.log_scale0 + self.noise_log_scale(u)).clamp(*LOG_SCALE_RANGE)
        return self.noise_mean(u), log_scale

    def transition(self, z_prev: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """h(z_{t-1}, u): (B, n); zero when the lag is switched off."""
        if not self.lagged:
            return torch.zeros_like(z_prev)
        if self.linear_transition:
            drift = self.transition_state(z_prev)
            return drift + self.transition_input(u) if self.perturbed_drift else drift
        inputs = torch.cat([z_prev, u], dim=-1) if self.perturbed_drift else z_prev
        return z_prev + self.drift(inputs)

    def parents(self, z: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """Instantaneous parent contribution Lambda z (or Lambda tanh(z)), (B, n)."""
        inputs = torch.tanh(z) if self.nonlinear_mechanisms else z
        return torch.einsum("bij,bj->bi", lam, inputs)

    def solve(self, drive: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """z with z = parents(z) + drive: a unit-triangular solve (sequential for tanh parents)."""
        if not self.instantaneous:
            return drive
        eye = torch.eye(self.n_programs, dtype=lam.dtype, device=lam.device)
        if not self.acyclic:
            return torch.linalg.solve(eye - lam, drive)
        if not self.nonlinear_mechanisms:
            solution = torch.linalg.solve_triangular(
                eye - lam, drive.unsqueeze(-1), upper=False, unitriangular=True
            )
            return solution.squeeze(-1)
        columns: list[torch.Tensor] = []
        for i in range(self.n_programs):
            parent = (lam[:, i, :i] * torch.tanh(torch.stack(columns, -1))).sum(-1) if i else 0.0
            columns.append(drive[:, i] + parent)
        return torch.stack(columns, dim=-1)

    def log_abs_det(self, lam: torch.Tensor) -> torch.Tensor:
        """log|det d eps / d z_t| = sum log|diag(I - Lambda)|, (B,): exactly zero by construction
        (``acyclic``; otherwise log|det(I - Lambda)|)."""
        if not self.acyclic:
            eye = torch.eye(self.n_programs, dtype=lam.dtype, device=lam.device)
            return torch.linalg.slogdet(eye - lam).logabsdet
        diagonal = 1.0 - torch.diagonal(lam, dim1=-2, dim2=-1)
        return torch.log(diagonal.abs()).sum(-1)

    def step(self, z_prev: torch.Tensor, u: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """One latent step z_t from z_{t-1} (B, n), embedding u (B, d_u) and noise n_t (B, n)."""
        return self.solve(self.transition(z_prev, u) + noise, self.causal_matrix(u))

    def sample_noise(self, u: torch.Tensor, sample: bool,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """Exogenous noise n_t (B, n): a draw, or its mean m(u) when ``sample`` is False."""
        mean, log_scale = self.noise_params(u)
        if not sample:
            return mean
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return mean + log_scale.exp() * eps

    def rollout(self, z0: torch.Tensor, u: torch.Tensor, steps: torch.Tensor, sample: bool = True,
                generator: torch.Generator | None = None,
                return_path: bool = False) -> torch.Tensor:
        """Roll z0 (B, n) forward ``steps`` (B,) latent steps under u (B, d_u).

        Returns z at each row's own step (B, n), or with ``return_path`` the whole path
        (B, max_step + 1, n) in which rows stop changing after their step.
        """
        z, path = z0, [z0]
        max_step = int(steps.max()) if steps.numel() else 0
        for t in range(1, max_step + 1):
            z_next = self.step(z, u, self.sample_noise(u, sample, generator))
            z = torch.where((steps >= t).unsqueeze(-1), z_next, z)
            path.append(z)
        return torch.stack(path, dim=1) if return_path else z

    def log_prob(self, z_t: torch.Tensor, z_prev: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """log p(z_t | z_{t-1}, u), (B,): noise density of eps = z_t - parents - h, plus log|det|."""
        lam = self.causal_matrix(u)
        eps = z_t - self.parents(z_t, lam) - self.transition(z_prev, u)
        mean, log_scale = self.noise_params(u)
        density = torch.distributions.Normal(mean, log_scale.exp()).log_prob(eps).sum(-1)
        return density + self.log_abs_det(lam)


def causal_dynamics(config: ModuleConfig, acyclic: bool = True) -> CausalDynamics:
    """The dynamics of a module with hyperparameters ``config`` (``acyclic`` False: the same
    dynamics with edges anywhere off the diagonal, for ordering fits)."""
    return CausalDynamics(config.n_programs, config.n_embedding, config.n_hidden,
                          config.instantaneous, config.lagged, config.linear_transition,
                          config.nonlinear_mechanisms, config.perturbed_drift, acyclic)
