"""Ground-truth simulators: AnnData with known latents, mechanisms and causal graph (MODEL.md §8)."""

from citevae.sim.counts import simulate_counts
from citevae.sim.vector import simulate_vector

__all__ = ["simulate_counts", "simulate_vector"]
