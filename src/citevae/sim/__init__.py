"""citevae.sim."""
