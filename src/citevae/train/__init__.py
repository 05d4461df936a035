"""citevae.train."""
