"""CITE-VAE: latent dynamical causal generative model of single-cell perturbation responses."""

from citevae import data, sim
from citevae._settings import seed_everything, set_num_threads
from citevae.data import Split, get_registry, setup_anndata
from citevae.model import CiteVAE, align_latents
from citevae.module import ModuleConfig
from citevae.train import TrainingConfig

__version__ = "0.1.0"

__all__ = [
    "CiteVAE",
    "ModuleConfig",
    "Split",
    "TrainingConfig",
    "__version__",
    "align_latents",
    "data",
    "get_registry",
    "seed_everything",
    "set_num_threads",
    "setup_anndata",
    "sim",
]
