"""Vector simulator: latent causal dynamics under K regimes, injectively mixed to continuous x.

Ground truth for the identifiability check (MODEL.md sections 7 and 8). Regime 0 is control (zero
edge weights, noise mean 0, scale 1); regimes 1..K-1 each have their own edge weights on a DAG shared
by all regimes, their own noise mean (magnitudes U(0.3, 1.0)) and noise log-scale (magnitudes
U(0.2, 0.7)), so every non-control regime differs from control in every node's noise. Each individual
is observed at every step t = 0..T (paired sequences). x = mix(z_t) with an invertible 3-layer
leaky-ReLU MLP (orthogonal x diag(U(0.7, 1.3)) square weights) followed by a full-column-rank map to
obs_dim; x depends on z_t only (c sets z_0's mean). Use ``unmix`` to invert the mixing.
"""

from __future__ import annotations

from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from citevae.errors import CiteVAEError
from citevae.sim._mechanisms import (
    Basal,
    Transition,
    check_float,
    check_int,
    orthogonal,
    random_dag,
    rollout,
    signed_uniform,
    weights_on_graph,
)

LEAKY_SLOPE = 0.2
"""Negative-side slope of the mixing's leaky ReLUs."""
N_MIX_LAYERS = 3


def _draw_mixing(n: int, obs_dim: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Mixing parameters: square weights (3, n, n), biases (3, n), projection (obs_dim, n)."""
    weights = np.stack(
        [orthogonal(n, rng) * rng.uniform(0.7, 1.3, n) for _ in range(N_MIX_LAYERS)]
    )
    biases = 0.1 * rng.standard_normal((N_MIX_LAYERS, n))
    if obs_dim == n:
        projection = np.eye(n)
    else:  # orthonormal columns: full column rank, singular values all 1
        q, r = np.linalg.qr(rng.standard_normal((obs_dim, n)))
        projection = q * np.sign(np.diag(r))
    return {"mixing_weights": weights, "mixing_biases": biases, "mixing_projection": projection}


def _leaky(a: np.ndarray) -> np.ndarray:
    return np.where(a > 0, a, LEAKY_SLOPE * a)


def mix(z: np.ndarray, sim: dict[str, Any]) -> np.ndarray:
    """Apply the mixing stored in ``uns["sim"]``: z (N, n) -> x (N, obs_dim), float64."""
    weights, biases = np.asarray(sim["mixing_weights"]), np.asarray(sim["mixing_biases"])
    a = z
    for i in range(len(weights)):
        a = a @ weights[i].T + biases[i]
        if i < len(weights) - 1:
            a = _leaky(a)
    return a @ np.asarray(sim["mixing_projection"]).T


def unmix(x: np.ndarray, sim: dict[str, Any]) -> np.ndarray:
    """Invert ``mix`` (exact up to float error): x (N, obs_dim) -> z (N, n)."""
    weights, biases = np.asarray(sim["mixing_weights"]), np.asarray(sim["mixing_biases"])
    a = np.asarray(x, dtype=np.float64) @ np.linalg.pinv(np.asarray(sim["mixing_projection"])).T
    for i in reversed(range(len(weights))):
        if i < len(weights) - 1:
            a = np.where(a > 0, a, a / LEAKY_SLOPE)
        a = np.linalg.solve(weights[i], (a - biases[i]).T).T
    return a


def simulate_vector(
    n_latents: int = 5,
    n_regimes: int | None = None,
    n_individuals_per_regime: int = 500,
    n_steps: int = 4,
    obs_dim: int | None = None,
    lag_strength: float = 1.0,
    seed: int = 0,
) -> ad.AnnData:
    """Simulate paired latent sequences in K regimes and mix them injectively to continuous x.

    Args:
        n_latents: n, number of latent causal variables (>= 1).
        n_regimes: K including control (regime 0); default 2n + 1, the identifiability count.
        n_individuals_per_regime: individuals per regime, each observed at every step 0..n_steps.
        n_steps: T, number of latent steps after t = 0 (>= 1).
        obs_dim: D >= n observed dimensions; default 2n.
        lag_strength: scale of the nonlinear drift in h(z) = z + lag_strength * (A tanh(Bz) - g z);
            0 gives h(z) = z.
        seed: seed of ``np.random.default_rng``.

    Returns:
        AnnData with K * N * (T + 1) rows (regime-major, then individual, then time), X float32
        (rows, D). obs: "individual" (categorical str, unique across regimes), "regime" (int),
        "perturbation" (categorical: "control", "R1".."R{K-1}"), "time" (int step). obsm (float64):
        "z_true" (rows, n); "noise_true" (rows, n), the n_t that generated z_t for t >= 1 and the
        basal deviation z_0 - mu_0(c) at t = 0; "c_true" (rows, n), the invariant state.
        uns["sim"]: "kind" = "vector", "weights" (K, n, n), "graph" (n, n) bool, "noise_mean" (K, n),
        "noise_scale" (K, n), "noise_logscale" (K, n), the lag, basal and mixing parameters
        (see ``mix``), and the arguments.
    """
    n = check_int("n_latents", n_latents, 1)
    K = 2 * n + 1 if n_regimes is None else check_int("n_regimes", n_regimes, 1)
    N = check_int("n_individuals_per_regime", n_individuals_per_regime, 1)
    T = check_int("n_steps", n_steps, 1)
    D = 2 * n if obs_dim is None else check_int("obs_dim", obs_dim, 1)
    if n > D:
        raise CiteVAEError(
            f"obs_dim must be >= n_latents ({n}) for the mixing to be injective, got {obs_dim}"
        )
    lag = check_float("lag_strength", lag_strength)
    rng = np.random.default_rng(seed)

    graph = random_dag(n, rng)
    weights = np.zeros((K, n, n))
    noise_mean = np.zeros((K, n))
    noise_logscale = np.zeros((K, n))
    for r in range(1, K):
        weights[r] = weights_on_graph(graph, rng, 0.25, 1.0)
        noise_mean[r] = signed_uniform(rng, 0.3, 1.0, n)
        noise_logscale[r] = signed_uniform(rng, 0.2, 0.7, n)
    noise_scale = np.exp(noise_logscale)
    h = Transition.draw(n, lag, rng)
    basal = Basal.draw(n, n, rng)
    mixing = _draw_mixing(n, D, rng)

    z_all, noise_all, c_all = [], [], []
    for r in range(K):
        c = rng.standard_normal((N, n))
        z0, dev = basal.sample(c, 0.0, rng)
        z, noise = rollout(z0, weights[r], noise_mean[r], noise_scale[r], h, T, rng)
        noise[0] = dev
        # (T+1, N, n) -> (N, T+1, n): individual-major rows
        z_all.append(z.transpose(1, 0, 2).reshape(-1, n))
        noise_all.append(noise.transpose(1, 0, 2).reshape(-1, n))
        c_all.append(np.repeat(c, T + 1, axis=0))
    z_true = np.concatenate(z_all)
    sim: dict[str, Any] = {
        "kind": "vector",
        "weights": weights,
        "graph": graph,
        "noise_mean": noise_mean,
        "noise_scale": noise_scale,
        "noise_logscale": noise_logscale,
        **h.to_uns(),
        **basal.to_uns(),
        **mixing,
        "leaky_slope": LEAKY_SLOPE,
        "n_latents": n,
        "n_regimes": K,
        "n_individuals_per_regime": N,
        "n_steps": T,
        "obs_dim": D,
        "seed": int(seed),
        "noise_true_t0": "basal deviation z_0 - mu_0(c)",
    }
    x = mix(z_true, sim).astype(np.float32)

    regime = np.repeat(np.arange(K), N * (T + 1))
    labels = ["control"] + [f"R{r}" for r in range(1, K)]
    width = len(str(K * N - 1))
    individual = [f"ind{i:0{width}d}" for i in np.repeat(np.arange(K * N), T + 1)]
    obs = pd.DataFrame(
        {
            "individual": pd.Categorical(individual),
            "regime": regime,
            "perturbation": pd.Categorical.from_codes(regime, categories=labels),
            "time": np.tile(np.arange(T + 1), K * N),
        },
        index=[f"cell{i}" for i in range(len(regime))],
    )
    var = pd.DataFrame(index=[f"x{j}" for j in range(D)])
    adata = ad.AnnData(X=x, obs=obs, var=var)
    adata.obsm["z_true"] = z_true
    adata.obsm["noise_true"] = np.concatenate(noise_all)
    adata.obsm["c_true"] = np.concatenate(c_all)
    adata.uns["sim"] = sim
    return adata
