"""Tests of the vector simulator: layout, ground-truth mechanisms, exact recursion, mixing, h5ad."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from scipy.linalg import solve_triangular

from citevae.sim import simulate_vector
from citevae.sim._mechanisms import Basal, Transition
from citevae.sim.vector import mix, unmix

SMALL = {"n_latents": 3, "n_individuals_per_regime": 40, "n_steps": 3}


@pytest.fixture(scope="module")
def adata() -> ad.AnnData:
    return simulate_vector(**SMALL, seed=1)


def test_shapes_and_obs(adata: ad.AnnData) -> None:
    n, K, N, T = 3, 7, 40, 3
    assert adata.shape == (K * N * (T + 1), 2 * n)
    assert adata.X.dtype == np.float32 and isinstance(adata.X, np.ndarray)
    assert list(adata.obs.columns) == ["individual", "regime", "perturbation", "time"]
    assert list(adata.obs["perturbation"].cat.categories) == ["control"] + [f"R{r}" for r in range(1, K)]
    regime = adata.obs["regime"].to_numpy()
    assert np.array_equal(np.unique(regime), np.arange(K))
    assert (adata.obs["perturbation"][regime == 0] == "control").all()
    assert (adata.obs["perturbation"][regime == 2] == "R2").all()
    for key in ("z_true", "noise_true", "c_true"):
        assert adata.obsm[key].shape == (adata.n_obs, n)
    sim = adata.uns["sim"]
    assert sim["kind"] == "vector"
    assert sim["weights"].shape == (K, n, n) and sim["graph"].shape == (n, n)
    assert sim["noise_mean"].shape == sim["noise_scale"].shape == (K, n)


def test_every_individual_at_every_step_in_one_regime(adata: ad.AnnData) -> None:
    obs = adata.obs
    per_ind = obs.groupby("individual", observed=True).agg(
        n_steps=("time", "nunique"), n_rows=("time", "size"), n_regimes=("regime", "nunique")
    )
    assert len(per_ind) == 7 * 40
    assert (per_ind["n_steps"] == 4).all() and (per_ind["n_rows"] == 4).all()
    assert (per_ind["n_regimes"] == 1).all()


def test_control_regime_and_mechanism_structure(adata: ad.AnnData) -> None:
    sim = adata.uns["sim"]
    W, graph = sim["weights"], sim["graph"]
    assert np.all(W[0] == 0.0)
    assert np.all(sim["noise_mean"][0] == 0.0) and np.all(sim["noise_scale"][0] == 1.0)
    assert not np.any(np.triu(graph)), "graph must be strictly lower-triangular"
    assert graph.any()
    assert np.all(W[:, ~graph] == 0.0), "weights must vanish off the graph"
    assert np.all(W[1:, graph] != 0.0)
    # every non-control regime changes every node's noise mean and scale
    assert np.all(np.abs(sim["noise_mean"][1:]) >= 0.3)
    assert np.all(np.abs(np.log(sim["noise_scale"][1:])) >= 0.2)
    # regimes differ from each other
    assert len({W[r].tobytes() for r in range(7)}) == 7


def test_z_follows_recursion_exactly(adata: ad.AnnData) -> None:
    sim = adata.uns["sim"]
    h = Transition.from_uns(sim)
    z, noise = adata.obsm["z_true"], adata.obsm["noise_true"]
    time, regime = adata.obs["time"].to_numpy(), adata.obs["regime"].to_numpy()
    rows = np.flatnonzero(time > 0)  # rows are individual-major, so the previous row is t - 1
    for r in range(7):
        sel = rows[regime[rows] == r]
        rhs = h(z[sel - 1]) + noise[sel]
        expected = solve_triangular(np.eye(3) - sim["weights"][r], rhs.T, lower=True, unit_diagonal=True).T
        np.testing.assert_allclose(z[sel], expected, rtol=1e-12, atol=1e-12)
    # t = 0: noise_true is the basal deviation z_0 - mu_0(c)
    t0 = time == 0
    basal = Basal(C=sim["basal_C"], sigma=sim["basal_sigma"])
    np.testing.assert_allclose(z[t0] - basal.mean(adata.obsm["c_true"][t0]), noise[t0], atol=1e-12)


def test_noise_has_the_regime_mean_and_scale() -> None:
    a = simulate_vector(n_latents=2, n_individuals_per_regime=600, n_steps=2, seed=3)
    sim, noise = a.uns["sim"], a.obsm["noise_true"]
    time, regime = a.obs["time"].to_numpy(), a.obs["regime"].to_numpy()
    for r in range(5):
        e = noise[(time > 0) & (regime == r)]
        standardised = (e - sim["noise_mean"][r]) / sim["noise_scale"][r]
        np.testing.assert_allclose(standardised.mean(0), 0.0, atol=0.1)
        np.testing.assert_allclose(standardised.std(0), 1.0, atol=0.1)


def test_lag_strength_zero_gives_identity_transition() -> None:
    a = simulate_vector(n_latents=2, n_individuals_per_regime=5, n_steps=2, lag_strength=0.0, seed=0)
    sim = a.uns["sim"]
    z, noise = a.obsm["z_true"], a.obsm["noise_true"]
    rows = np.flatnonzero(a.obs["time"].to_numpy() > 0)
    for i in rows:
        W = sim["weights"][a.obs["regime"].iloc[i]]
        np.testing.assert_allclose((np.eye(2) - W) @ z[i], z[i - 1] + noise[i], atol=1e-12)


def test_mixing_is_injective_and_reproducible(adata: ad.AnnData) -> None:
    sim, z = adata.uns["sim"], adata.obsm["z_true"]
    np.testing.assert_allclose(adata.X, mix(z, sim).astype(np.float32))
    np.testing.assert_allclose(unmix(adata.X, sim), z, atol=1e-4)
    assert np.linalg.matrix_rank(sim["mixing_projection"]) == 3
    # nonlinear: the best linear map from z to x leaves a clear residual
    design = np.hstack([z, np.ones((len(z), 1))])
    coef, *_ = np.linalg.lstsq(design, adata.X, rcond=None)
    assert np.linalg.norm(adata.X - design @ coef) / np.linalg.norm(adata.X - adata.X.mean(0)) > 0.05


def test_obs_dim_and_regime_count_options() -> None:
    a = simulate_vector(n_latents=1, n_regimes=2, obs_dim=1, n_individuals_per_regime=3, n_steps=1)
    assert a.shape == (2 * 3 * 2, 1)
    assert list(a.obs["perturbation"].cat.categories) == ["control", "R1"]


def test_determinism_per_seed() -> None:
    a, b = simulate_vector(**SMALL, seed=5), simulate_vector(**SMALL, seed=5)
    c = simulate_vector(**SMALL, seed=6)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.obsm["z_true"], b.obsm["z_true"])
    np.testing.assert_array_equal(a.uns["sim"]["weights"], b.uns["sim"]["weights"])
    assert not np.allclose(a.X, c.X)
    assert not np.allclose(a.obsm["z_true"], c.obsm["z_true"])


def test_global_rng_untouched() -> None:
    state = np.random.get_state()[1].copy()
    simulate_vector(**SMALL, seed=0)
    assert np.array_equal(np.random.get_state()[1], state)


def test_h5ad_round_trip(adata: ad.AnnData, tmp_path) -> None:
    path = tmp_path / "vector.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    np.testing.assert_array_equal(back.X, adata.X)
    np.testing.assert_array_equal(back.obsm["z_true"], adata.obsm["z_true"])
    assert back.obs.equals(adata.obs)
    assert set(back.uns["sim"]) == set(adata.uns["sim"])
    for key, value in adata.uns["sim"].items():
        np.testing.assert_array_equal(np.asarray(back.uns["sim"][key]), np.asarray(value), err_msg=key)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_latents": 0}, "n_latents"),
        ({"n_latents": 2.5}, "n_latents"),
        ({"n_regimes": 0}, "n_regimes"),
        ({"n_individuals_per_regime": 0}, "n_individuals_per_regime"),
        ({"n_steps": 0}, "n_steps"),
        ({"obs_dim": 2}, "obs_dim"),
        ({"lag_strength": -1.0}, "lag_strength"),
        ({"lag_strength": float("nan")}, "lag_strength"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        simulate_vector(**{"n_latents": 3, "n_individuals_per_regime": 2, **kwargs})
