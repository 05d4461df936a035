"""User-facing model: CiteVAE."""

from citevae.model.citevae import CiteVAE

__all__ = ["CiteVAE"]
