"""citevae.module."""
