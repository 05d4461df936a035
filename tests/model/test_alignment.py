"""align_latents: recovers the orientation of rotated programs from their regime structure."""

from __future__ import annotations

import numpy as np
import pytest

from citevae import CiteVAE, get_registry, setup_anndata
from citevae.errors import CiteVAEError
from citevae.metrics import mcc
from citevae.model.alignment import align_latents
from citevae.sim import simulate_vector

N_PROGRAMS, N_CONDITIONS, N_LINEAGES, N_STEPS = 3, 8, 60, 4


def random_walks(seed: int = 0):
    """Lineages of z_t = z_{t-1} + n_t with condition-specific noise mean and scale (control:
    mean 0, scale 1), rows lineage-major. Returns z (cells, n), condition (cells,), previous (cells,)."""
    rng = np.random.default_rng(seed)
    means = np.vstack([np.zeros(N_PROGRAMS), rng.uniform(-1, 1, (N_CONDITIONS - 1, N_PROGRAMS))])
    scales = np.vstack([np.ones(N_PROGRAMS), np.exp(rng.uniform(-1, 1, (N_CONDITIONS - 1, N_PROGRAMS)))])
    z, condition, previous = [], [], []
    for k in range(N_CONDITIONS):
        for _ in range(N_LINEAGES):
            state = rng.standard_normal(N_PROGRAMS)
            for t in range(N_STEPS + 1):
                if t:
                    state = state + means[k] + scales[k] * rng.standard_normal(N_PROGRAMS)
                previous.append(len(z) - 1 if t else -1)
                z.append(state)
                condition.append("control" if k == 0 else f"R{k}")
    return np.array(z), np.array(condition), np.array(previous)


def plane_rotation(i: int, j: int, degrees: float = 45.0) -> np.ndarray:
    """Rotation by ``degrees`` in the plane of programs i and j, (n, n)."""
    angle = np.deg2rad(degrees)
    rotation = np.eye(N_PROGRAMS)
    rotation[[i, j], [i, j]] = np.cos(angle)
    rotation[i, j], rotation[j, i] = -np.sin(angle), np.sin(angle)
    return rotation


def test_recovers_rotated_programs():
    z, condition, previous = random_walks()
    rotated = z @ (plane_rotation(0, 1) @ plane_rotation(1, 2)).T
    aligned = align_latents(rotated, condition, previous, "control", n_starts=1, warp_width=0,
                            n_iterations=800)
    assert mcc(z, rotated) < 0.9
    assert mcc(z, aligned.programs) > 0.98
    assert aligned.linear_map.shape == (N_PROGRAMS, N_PROGRAMS)


def test_recovers_programs_with_instantaneous_edges():
    """Vector simulator (regime-specific edges, nonlinear lag): the true z under a random linear
    map is recovered with the edges in the density, not with diagonal noise alone."""
    adata = simulate_vector(n_latents=3, n_individuals_per_regime=100, seed=0)
    truth = adata.obsm["z_true"]
    mixed = truth @ np.random.default_rng(0).standard_normal((3, 3))
    previous = np.where(adata.obs["time"].to_numpy() > 0, np.arange(adata.n_obs) - 1, -1)
    regimes = adata.obs["perturbation"].to_numpy()
    options = {"warp_width": 0, "n_starts": 2, "n_iterations": 800}
    with_edges = align_latents(mixed, regimes, previous, "control", **options)
    without = align_latents(mixed, regimes, previous, "control", instantaneous=False, **options)
    assert mcc(truth, mixed) < 0.75
    assert mcc(truth, with_edges.programs) > 0.97
    assert mcc(truth, without.programs) < mcc(truth, with_edges.programs) - 0.05
    assert with_edges.log_likelihood > without.log_likelihood


def test_warp_undoes_a_smooth_distortion():
    z, condition, previous = random_walks()
    warped = (z + 0.5 * np.tanh(z)) @ plane_rotation(0, 2).T
    options = {"n_starts": 1, "n_iterations": 800}
    linear = align_latents(warped, condition, previous, "control", warp_width=0, **options)
    refined = align_latents(warped, condition, previous, "control", warp_width=16, **options)
    assert mcc(z, refined.programs) > mcc(z, linear.programs)
    assert refined.log_likelihood > linear.log_likelihood
    np.testing.assert_array_equal(refined.linear_map, linear.linear_map)


def test_deterministic_per_seed():
    z, condition, previous = random_walks()
    first = align_latents(z, condition, previous, "control", n_starts=2, n_iterations=30, seed=3)
    second = align_latents(z, condition, previous, "control", n_starts=2, n_iterations=30, seed=3)
    np.testing.assert_array_equal(first.programs, second.programs)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda z, c, p: (z[:, 0], c, p), "z must be 2-D"),
        (lambda z, c, p: (z, c[:-1], p), "condition must have one entry per cell"),
        (lambda z, c, p: (z, c, np.full(len(p), len(p))), "previous must hold row numbers"),
        (lambda z, c, p: (z, np.where(c == "control", "R1", c), p), "control condition 'control'"),
        (lambda z, c, p: (z, c, p.astype(float)), "previous must hold row numbers"),
    ],
)
def test_bad_inputs_are_named(change, message):
    z, condition, previous = random_walks()
    with pytest.raises(CiteVAEError, match=message):
        align_latents(*change(z, condition, previous), "control", n_starts=1)


@pytest.mark.parametrize("option", [{"n_starts": 0}, {"n_iterations": 0}, {"warp_width": -1}])
def test_bad_options_are_named(option):
    z, condition, previous = random_walks()
    with pytest.raises(CiteVAEError, match="n_starts and n_iterations must be >= 1"):
        align_latents(z, condition, previous, "control", **option)


def trained_on_vector_data(**registration) -> tuple[CiteVAE, object]:
    """A small CITE-VAE trained briefly on the vector simulator's regimes over time."""
    adata = simulate_vector(n_latents=3, n_individuals_per_regime=8, seed=1)
    setup_anndata(adata, perturbation_key="perturbation", control="control", time_key="time",
                  scale="continuous", **registration)
    model = CiteVAE(adata, n_programs=3, n_invariant=2, n_hidden=16, seed=0)
    model.train(max_epochs=2, seed=0, progress_bar=False)
    return model, adata


def test_model_aligns_its_programs_over_the_lineages_of_the_data():
    model, adata = trained_on_vector_data(lineage_key="individual")
    options = {"warp_width": 0, "n_starts": 1, "n_iterations": 20}
    aligned = model.aligned_programs(**options)
    previous = get_registry(adata).previous_observations(adata, adata.obs["time"].to_numpy())
    by_hand = align_latents(model.get_latent(inplace=False)["z"], adata.obs["perturbation"],
                            previous, "control", **options)
    assert aligned.programs.shape == (adata.n_obs, 3)
    np.testing.assert_array_equal(aligned.programs, by_hand.programs)


def test_model_alignment_needs_lineages():
    model, _ = trained_on_vector_data()
    with pytest.raises(CiteVAEError, match="lineage_key"):
        model.aligned_programs()
