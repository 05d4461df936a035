"""Tests of the causal dynamics: Lambda(u), noise, transition, solve, log|det|, rollout, log_prob."""

from __future__ import annotations

import pytest
import torch

from citevae.module.causal import CausalDynamics

N, D, B = 6, 5, 7


def make(seed: int = 0, **options) -> CausalDynamics:
    """A fresh module with seeded initialisation and non-trivial edge weights."""
    torch.manual_seed(seed)
    dyn = CausalDynamics(N, D, n_hidden=16, **options)
    with torch.no_grad():
        dyn.edge_weights.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(seed))
    return dyn


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_lambda_is_exactly_zero_at_control() -> None:
    dyn = make()
    lam = dyn.causal_matrix(torch.zeros(B, D))
    assert lam.shape == (B, N, N)
    assert torch.equal(lam, torch.zeros(B, N, N))
    mean, log_scale = dyn.noise_params(torch.zeros(B, D))
    assert torch.equal(mean, torch.zeros(B, N))
    assert torch.equal(log_scale, dyn.log_scale0.detach().expand(B, N))


def test_lambda_strictly_lower_triangular_and_nonzero() -> None:
    dyn = make()
    lam = dyn.causal_matrix(randn(B, D, seed=1))
    upper = torch.triu(torch.ones(N, N, dtype=torch.bool))
    assert torch.equal(lam[:, upper], torch.zeros(B, int(upper.sum())))
    assert (lam[:, ~upper].abs() > 0).all()


def test_lambda_is_linear_in_u() -> None:
    dyn = make()
    u1, u2 = randn(B, D, seed=2), randn(B, D, seed=3)
    a, b = 0.7, -1.3
    combined = dyn.causal_matrix(a * u1 + b * u2)
    separate = a * dyn.causal_matrix(u1) + b * dyn.causal_matrix(u2)
    torch.testing.assert_close(combined, separate, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dyn.noise_params(a * u1 + b * u2)[0],
                               a * dyn.noise_params(u1)[0] + b * dyn.noise_params(u2)[0],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nonlinear", [False, True])
def test_log_abs_det_is_exactly_zero(nonlinear: bool) -> None:
    dyn = make(nonlinear_mechanisms=nonlinear)
    for seed in range(3):
        lam = dyn.causal_matrix(5.0 * randn(B, D, seed=seed))
        log_det = dyn.log_abs_det(lam)
        assert log_det.shape == (B,)
        assert (log_det == 0.0).all()


@pytest.mark.parametrize("nonlinear", [False, True])
def test_solve_satisfies_structural_equation(nonlinear: bool) -> None:
    dyn = make(nonlinear_mechanisms=nonlinear)
    lam = dyn.causal_matrix(randn(B, D, seed=4))
    drive = randn(B, N, seed=5)
    z = dyn.solve(drive, lam)
    residual = z - dyn.parents(z, lam) - drive
    assert residual.abs().max() < 1e-5
    # the first node in the causal order has no parents
    torch.testing.assert_close(z[:, 0], drive[:, 0])


def test_control_rollout_with_mean_noise_stays_put() -> None:
    dyn = make()
    z0 = randn(B, N, seed=6)
    steps = torch.full((B,), 4)
    path = dyn.rollout(z0, torch.zeros(B, D), steps, sample=False, return_path=True)
    assert path.shape == (B, 5, N)
    assert torch.equal(path, z0.unsqueeze(1).expand(B, 5, N))


def test_rollout_stops_at_each_rows_step() -> None:
    dyn = make()
    with torch.no_grad():
        dyn.noise_mean.weight.normal_(generator=torch.Generator().manual_seed(7))
    z0, u = randn(B, N, seed=8), randn(B, D, seed=9)
    steps = torch.arange(B) % 4
    path = dyn.rollout(z0, u, steps, sample=False, return_path=True)
    final = dyn.rollout(z0, u, steps, sample=False)
    for row in range(B):
        s = int(steps[row])
        assert torch.equal(final[row], path[row, s])
        assert torch.equal(path[row, s:], path[row, s].expand(path.shape[1] - s, N))
    assert torch.equal(final[steps == 0], z0[steps == 0])


def test_sampled_rollout_reproducible_per_generator() -> None:
    dyn = make()
    z0, u, steps = randn(B, N, seed=10), randn(B, D, seed=11), torch.full((B,), 3)

    def draw(seed: int) -> torch.Tensor:
        return dyn.rollout(z0, u, steps, sample=True, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(1), draw(1))
    assert not torch.equal(draw(1), draw(2))


@pytest.mark.parametrize("nonlinear", [False, True])
def test_log_prob_is_normal_density_of_residual(nonlinear: bool) -> None:
    dyn = make(nonlinear_mechanisms=nonlinear)
    with torch.no_grad():
        dyn.noise_mean.weight.normal_(generator=torch.Generator().manual_seed(12))
        dyn.noise_log_scale.weight.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(13))
    z_t, z_prev, u = randn(B, N, seed=14), randn(B, N, seed=15), randn(B, D, seed=16)
    lam = dyn.causal_matrix(u)
    inputs = torch.tanh(z_t) if nonlinear else z_t
    eps = z_t - torch.einsum("bij,bj->bi", lam, inputs) - dyn.transition(z_prev, u)
    mean, log_scale = dyn.noise_params(u)
    var = torch.exp(2 * log_scale)
    expected = (-0.5 * (eps - mean) ** 2 / var - log_scale
                - 0.5 * torch.log(torch.tensor(2 * torch.pi))).sum(-1)
    torch.testing.assert_close(dyn.log_prob(z_t, z_prev, u), expected, rtol=1e-5, atol=1e-4)


def test_log_prob_of_step_output_uses_the_drawn_noise() -> None:
    """z_t = step(z_prev, u, n): the residual recovered by log_prob is n itself."""
    dyn = make()
    z_prev, u, noise = randn(B, N, seed=17), randn(B, D, seed=18), randn(B, N, seed=19)
    z_t = dyn.step(z_prev, u, noise)
    mean, log_scale = dyn.noise_params(u)
    expected = torch.distributions.Normal(mean, log_scale.exp()).log_prob(noise).sum(-1)
    torch.testing.assert_close(dyn.log_prob(z_t, z_prev, u), expected, rtol=1e-4, atol=1e-3)


def test_fresh_transition_is_identity_at_control() -> None:
    for options in ({}, {"linear_transition": True}):
        dyn = CausalDynamics(N, D, n_hidden=16, **options)
        z = randn(B, N, seed=20)
        assert torch.equal(dyn.transition(z, torch.zeros(B, D)), z)


def test_instantaneous_off_gives_no_edges() -> None:
    dyn = make(instantaneous=False)
    u, drive = randn(B, D, seed=21), randn(B, N, seed=22)
    lam = dyn.causal_matrix(u)
    assert torch.equal(lam, torch.zeros(B, N, N))
    assert torch.equal(dyn.solve(drive, lam), drive)
    noise = randn(B, N, seed=23)
    z_prev = randn(B, N, seed=24)
    assert torch.equal(dyn.step(z_prev, u, noise), dyn.transition(z_prev, u) + noise)


def test_lagged_off_gives_zero_transition() -> None:
    dyn = make(lagged=False)
    z_prev, u, noise = randn(B, N, seed=25), randn(B, D, seed=26), randn(B, N, seed=27)
    assert torch.equal(dyn.transition(z_prev, u), torch.zeros(B, N))
    # z_t no longer depends on z_{t-1}
    other = randn(B, N, seed=28)
    assert torch.equal(dyn.step(z_prev, u, noise), dyn.step(other, u, noise))
    torch.testing.assert_close(dyn.step(z_prev, u, noise), dyn.solve(noise, dyn.causal_matrix(u)))


def test_linear_transition_is_affine() -> None:
    dyn = make(linear_transition=True)
    assert not hasattr(dyn, "drift")
    with torch.no_grad():
        dyn.transition_state.weight.normal_(generator=torch.Generator().manual_seed(29))
        dyn.transition_state.bias.normal_(generator=torch.Generator().manual_seed(28))
        dyn.transition_input.weight.normal_(generator=torch.Generator().manual_seed(30))
    z1, z2 = randn(B, N, seed=31), randn(B, N, seed=32)
    u1, u2 = randn(B, D, seed=33), randn(B, D, seed=34)
    origin = dyn.transition(torch.zeros(B, N), torch.zeros(B, D))
    torch.testing.assert_close(origin, dyn.transition_state.bias.expand(B, N))
    torch.testing.assert_close(dyn.transition(z1 + z2, u1 + u2) + origin,
                               dyn.transition(z1, u1) + dyn.transition(z2, u2),
                               rtol=1e-5, atol=1e-5)
    expected = (z1 @ dyn.transition_state.weight.T + dyn.transition_state.bias
                + u1 @ dyn.transition_input.weight.T)
    torch.testing.assert_close(dyn.transition(z1, u1), expected)


@pytest.mark.parametrize("options", [{}, {"linear_transition": True}])
def test_unperturbed_drift_is_the_same_under_every_perturbation(options: dict) -> None:
    dyn = make(perturbed_drift=False, **options)
    parameters = dyn.drift if not options else dyn.transition_state
    with torch.no_grad():
        for parameter in parameters.parameters():
            parameter.normal_(generator=torch.Generator().manual_seed(35))
    z_prev = randn(B, N, seed=36)
    drift = dyn.transition(z_prev, torch.zeros(B, D))
    assert not torch.equal(drift, z_prev)
    assert torch.equal(dyn.transition(z_prev, randn(B, D, seed=37)), drift)


def test_cyclic_dynamics_solve_their_equation() -> None:
    dyn = make(acyclic=False)
    u, drive = randn(B, D, seed=1), randn(B, N, seed=2)
    lam = dyn.causal_matrix(u)
    assert torch.equal(torch.diagonal(lam, dim1=-2, dim2=-1), torch.zeros(B, N))
    assert bool((lam[:, 0, 1:] != 0).all())  # edges above the diagonal too
    z = dyn.solve(drive, lam)
    torch.testing.assert_close(z, dyn.parents(z, lam) + drive, atol=1e-4, rtol=1e-4)
    eye = torch.eye(N)
    torch.testing.assert_close(dyn.log_abs_det(lam), torch.linalg.slogdet(eye - lam).logabsdet)


def test_cyclic_dynamics_refuse_nonlinear_parents() -> None:
    with pytest.raises(ValueError, match="linear parents"):
        CausalDynamics(N, D, acyclic=False, nonlinear_mechanisms=True)
