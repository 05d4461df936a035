"""A plain (beta-)VAE of the same width as CITE-VAE: the reference point for identifiability and speed."""

from __future__ import annotations

import torch
from torch import nn

from citevae.module import observation
from citevae.module.citevae import LossOutput
from citevae.module.conv import Architecture, decoder, gaussian_encoders
from citevae.module.networks import gaussian_kl, one_hot_covariates, reparameterize


class PlainVAEModule(nn.Module):
    """x -> z ~ N(0, I) -> x, with ``beta`` weighting the KL term; no perturbation, no dynamics.

    Consumes the same batches as ``CiteVAEModule`` (``x``, ``library``, ``covariates``) and exposes
    the same ``loss(batch, kl_weight, match_weight)`` so the same training plan trains it.
    ``architecture`` "conv" gives it the convolutional encoder and decoder of ``citevae.module.conv``
    (images flattened in (height, width, channel) order), as CITE-VAE's option of the same name.
    """

    def __init__(self, n_genes: int, n_latent: int, covariate_sizes: tuple[int, ...] = (),
                 likelihood: str = "gaussian", n_hidden: int = 256, n_layers: int = 2,
                 beta: float = 1.0, library_scale: float = 1e4, architecture: Architecture = "mlp",
                 image_channels: int = 3, conv_channels: int = 32) -> None:
        super().__init__()
        n_cov = sum(covariate_sizes)
        self.covariate_sizes = tuple(covariate_sizes)
        self.likelihood_name = likelihood
        self.beta = beta
        self.library_scale = library_scale
        image = {"image_channels": image_channels, "conv_channels": conv_channels}
        (self.encoder,) = gaussian_encoders(architecture, n_genes, [(n_cov, n_latent)], n_hidden, n_layers,
                                            **image)
        self.decoder = decoder(architecture, n_latent + n_cov, n_genes, n_hidden, n_layers, **image)
        self.log_dispersion = nn.Parameter(torch.zeros(n_genes))

    def inference(self, x: torch.Tensor, library: torch.Tensor, covariates: torch.Tensor,
                  sample: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean, log_var, draw) of q(z | x, s), each (B, n_latent)."""
        h = torch.log1p(x / library.unsqueeze(-1) * self.library_scale) \
            if self.likelihood_name == "nb" else x
        s = one_hot_covariates(covariates, self.covariate_sizes)
        mean, log_var = self.encoder(torch.cat([h, s], -1))
        return mean, log_var, reparameterize(mean, log_var, sample)

    def loss(self, batch: dict[str, torch.Tensor], kl_weight: float = 1.0,
             match_weight: float = 1.0) -> LossOutput:
        """Negative ELBO with beta-weighted KL (``match_weight`` is ignored)."""
        x, library, cov = batch["x"], batch["library"], batch["covariates"]
        mean, log_var, z = self.inference(x, library, cov)
        out = self.decoder(torch.cat([z, one_hot_covariates(cov, self.covariate_sizes)], -1))
        expression = library.unsqueeze(-1) * torch.softmax(out, -1) if self.likelihood_name == "nb" else out
        dist = observation.distribution(expression, self.likelihood_name, self.log_dispersion)
        reconstruction = -dist.log_prob(x).sum(-1).mean()
        kl = gaussian_kl(mean, log_var).mean()
        loss = reconstruction + kl_weight * self.beta * kl
        return LossOutput(loss, {"reconstruction": reconstruction, "kl": kl})
