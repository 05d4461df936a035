"""User-facing model: CiteVAE, and the alignment of its learned programs."""

from citevae.model.alignment import align_latents
from citevae.model.citevae import CiteVAE

__all__ = ["CiteVAE", "align_latents"]
