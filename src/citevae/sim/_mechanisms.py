"""Latent causal dynamics shared by the simulators (MODEL.md sections 2 and 8).

One step of the latent process for a regime with edge weights W (strictly lower-triangular on a DAG
shared by all regimes), noise mean m and noise scale s:

    n_t ~ N(m, diag s^2),   z_t = W z_t + h(z_{t-1}) + n_t   <=>   (I - W) z_t = h(z_{t-1}) + n_t,

solved by forward substitution (unit lower-triangular system, no inverse). The lagged transition is
h(z) = z + lag_strength * (A tanh(B z) - gamma z), the same for every regime; with lag_strength <= 1
its Lipschitz constant is at most 1 - gamma + |A||B| = 0.95, so trajectories stay bounded.
Basal programs: z_0 = tanh(C c) + shift + sigma_0 * eps, with c the invariant state (cell identity).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.linalg import solve_triangular

from citevae.errors import CiteVAEError

EDGE_PROB = 0.5
"""Probability of each edge j -> i (j < i) in the shared random DAG."""
LAG_GAMMA = 0.5
"""Mean reversion of the lagged drift."""
LAG_B_NORM = 1.5
"""Spectral norm of B in tanh(B z) (large enough for tanh to bend on the scale of z)."""
LAG_A_NORM = 0.3
"""Spectral norm of A; |A| |B| = 0.45 < gamma keeps h contracting for lag_strength <= 1."""
BASAL_SIGMA = 1.0
"""Standard deviation of z_0 around tanh(C c); 1.0 makes the control process near-stationary
(marginal sd of z about 1.2 at every step), so a null perturbation at t = T resembles t = 0 controls."""


def check_int(name: str, value: Any, minimum: int) -> int:
    """Return ``value`` as int, or raise naming ``name`` when it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise CiteVAEError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_float(
    name: str, value: Any, *, minimum: float = 0.0, strict: bool = False, allow_inf: bool = False
) -> float:
    """Return ``value`` as float, or raise naming ``name`` when below (or at, if strict) ``minimum``."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise CiteVAEError(f"{name} must be a number, got {value!r}") from None
    bad = np.isnan(out) or (np.isinf(out) and not allow_inf) or out < minimum
    if bad or (strict and out == minimum):
        rel = ">" if strict else ">="
        raise CiteVAEError(f"{name} must be a finite number {rel} {minimum}, got {value!r}")
    return out


def orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    """Haar-random orthogonal matrix, shape (n, n)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def signed_uniform(
    rng: np.random.Generator, low: float, high: float, size: int | tuple[int, ...]
) -> np.ndarray:
    """Values with magnitude ~ U(low, high) and a random sign."""
    return rng.uniform(low, high, size) * rng.choice([-1.0, 1.0], size)


def random_dag(n: int, rng: np.random.Generator, edge_prob: float = EDGE_PROB) -> np.ndarray:
    """Random DAG in causal order 0..n-1: bool (n, n), entry [i, j] = edge j -> i, strictly lower."""
    return np.tril(rng.random((n, n)) < edge_prob, k=-1)


def weights_on_graph(
    graph: np.ndarray, rng: np.random.Generator, low: float, high: float
) -> np.ndarray:
    """Edge weights (n, n) with magnitude ~ U(low, high), random sign, zero off ``graph``."""
    return np.where(graph, signed_uniform(rng, low, high, graph.shape), 0.0)


@dataclass(frozen=True)
class Transition:
    """Lagged transition h(z) = z + lag_strength * (A tanh(B z) - gamma z); A, B (n, n)."""

    A: np.ndarray
    B: np.ndarray
    gamma: float
    lag_strength: float

    @classmethod
    def draw(cls, n: int, lag_strength: float, rng: np.random.Generator) -> Transition:
        """Random well-conditioned A, B with spectral norms LAG_A_NORM, LAG_B_NORM."""
        A = LAG_A_NORM * orthogonal(n, rng)
        B = LAG_B_NORM * orthogonal(n, rng)
        return cls(A=A, B=B, gamma=LAG_GAMMA, lag_strength=float(lag_strength))

    def __call__(self, z: np.ndarray) -> np.ndarray:
        """Apply h row-wise: z (N, n) -> (N, n)."""
        drift = np.tanh(z @ self.B.T) @ self.A.T - self.gamma * z
        return z + self.lag_strength * drift

    def to_uns(self) -> dict[str, Any]:
        """Parameters as h5ad-writable entries (keys lag_A, lag_B, lag_gamma, lag_strength)."""
        return {
            "lag_A": self.A,
            "lag_B": self.B,
            "lag_gamma": self.gamma,
            "lag_strength": self.lag_strength,
        }

    @classmethod
    def from_uns(cls, sim: dict[str, Any]) -> Transition:
        """Rebuild from ``adata.uns["sim"]``."""
        return cls(
            A=np.asarray(sim["lag_A"]),
            B=np.asarray(sim["lag_B"]),
            gamma=float(sim["lag_gamma"]),
            lag_strength=float(sim["lag_strength"]),
        )


@dataclass(frozen=True)
class Basal:
    """Basal programs z_0 = tanh(C c) + shift + sigma * eps; C (n, m)."""

    C: np.ndarray
    sigma: float

    @classmethod
    def draw(cls, n: int, m: int, rng: np.random.Generator) -> Basal:
        """Random C with entries N(0, 2/m) so tanh(C c) spans most of (-1, 1)."""
        return cls(C=rng.standard_normal((n, m)) * np.sqrt(2.0 / m), sigma=BASAL_SIGMA)

    def mean(self, c: np.ndarray) -> np.ndarray:
        """mu_0(c): c (N, m) -> (N, n)."""
        return np.tanh(c @ self.C.T)

    def sample(
        self, c: np.ndarray, shift: np.ndarray | float, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw z_0 (N, n) given c (N, m); also return its deviation z_0 - mu_0(c) - shift."""
        dev = self.sigma * rng.standard_normal((c.shape[0], self.C.shape[0]))
        return self.mean(c) + shift + dev, dev

    def to_uns(self) -> dict[str, Any]:
        """Parameters as h5ad-writable entries (keys basal_C, basal_sigma)."""
        return {"basal_C": self.C, "basal_sigma": self.sigma}


def step(z_prev: np.ndarray, weights: np.ndarray, noise: np.ndarray, h: Transition) -> np.ndarray:
    """One latent step: solve (I - W) z_t = h(z_{t-1}) + n_t; z_prev, noise (N, n), W (n, n)."""
    rhs = h(z_prev) + noise
    lhs = np.eye(weights.shape[0]) - weights
    return solve_triangular(lhs, rhs.T, lower=True, unit_diagonal=True).T


def rollout(
    z0: np.ndarray,
    weights: np.ndarray,
    noise_mean: np.ndarray,
    noise_scale: np.ndarray,
    h: Transition,
    n_steps: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Roll z0 (N, n) forward ``n_steps`` steps in one regime.

    Returns z (n_steps + 1, N, n) with z[0] = z0, and the noise n_t (n_steps + 1, N, n) that made
    each z_t (noise[0] is zero; callers store the basal deviation there).
    """
    z = np.empty((n_steps + 1, *z0.shape))
    noise = np.zeros_like(z)
    z[0] = z0
    for t in range(1, n_steps + 1):
        noise[t] = noise_mean + noise_scale * rng.standard_normal(z0.shape)
        z[t] = step(z[t - 1], weights, noise[t], h)
    return z, noise
