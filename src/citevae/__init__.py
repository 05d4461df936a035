"""CITE-VAE: latent dynamical causal generative model of single-cell perturbation responses."""

from citevae._settings import seed_everything, set_num_threads

__version__ = "0.1.0"

__all__ = ["__version__", "seed_everything", "set_num_threads"]
