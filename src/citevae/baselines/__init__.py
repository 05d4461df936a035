"""citevae.baselines."""
