"""citevae.model."""
