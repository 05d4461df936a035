"""User-facing model: CiteVAE, and the alignment of its learned programs."""

from citevae.model.alignment import Alignment, align_latents
from citevae.model.citevae import CiteVAE

__all__ = ["Alignment", "CiteVAE", "align_latents"]
