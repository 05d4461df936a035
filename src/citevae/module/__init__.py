"""Pure-torch CITE-VAE module: encoders, perturbation embedding, causal dynamics, decoder, loss."""

from citevae.module.causal import CausalDynamics
from citevae.module.citevae import CiteVAEModule, Inference, LossOutput
from citevae.module.config import ModuleConfig
from citevae.module.embedding import PerturbationEmbedding

__all__ = [
    "CausalDynamics",
    "CiteVAEModule",
    "Inference",
    "LossOutput",
    "ModuleConfig",
    "PerturbationEmbedding",
]
