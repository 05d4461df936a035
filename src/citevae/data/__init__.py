"""citevae.data."""
