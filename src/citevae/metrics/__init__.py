"""citevae.metrics."""
