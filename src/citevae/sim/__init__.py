"""Ground-truth simulators: AnnData with known latents, mechanisms and causal graph (MODEL.md §8)."""

from citevae.sim.counts import counterfactual_counts, simulate_counts
from citevae.sim.images import render, sample_causal3dident_latents, simulate_images
from citevae.sim.vector import simulate_vector

__all__ = [
    "counterfactual_counts",
    "render",
    "sample_causal3dident_latents",
    "simulate_counts",
    "simulate_images",
    "simulate_vector",
]
