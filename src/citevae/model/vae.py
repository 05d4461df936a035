"""A plain (beta-)VAE on the same data, batches and trainer: the reference for CITE-VAE."""

from __future__ import annotations

import numpy as np
import torch
from anndata import AnnData

from citevae._settings import set_num_threads
from citevae.data.batching import CiteDataModule
from citevae.data.registry import get_registry
from citevae.model.tensors import iter_cell_tensors
from citevae.module.conv import Architecture
from citevae.module.vae import PlainVAEModule
from citevae.train.plan import TrainingConfig
from citevae.train.trainer import TrainingResult, fit

BATCH = 2048
"""Cells per forward pass when encoding."""


class PlainVAE:
    """A (beta-)VAE with an N(0, I) prior and no perturbation or dynamics, on a registered AnnData.

    Args:
        adata: data set up with ``setup_anndata``.
        n_latent: latent size.
        beta: KL weight (1: plain VAE; > 1: beta-VAE).
        n_hidden, n_layers: MLP width and depth (match CITE-VAE's for a fair comparison).
        architecture, image_channels, conv_channels: "conv" for images (see ``ModuleConfig``).
    """

    def __init__(self, adata: AnnData, n_latent: int = 16, beta: float = 1.0, n_hidden: int = 256,
                 n_layers: int = 2, architecture: Architecture = "mlp", image_channels: int = 3,
                 conv_channels: int = 32) -> None:
        self.adata = adata
        self.registry = get_registry(adata)
        sizes = tuple(len(self.registry.covariate_categories[k]) for k in self.registry.covariate_keys)
        likelihood = "nb" if self.registry.scale == "counts" else "gaussian"
        self.module = PlainVAEModule(self.registry.n_genes, n_latent, sizes, likelihood, n_hidden,
                                     n_layers, beta, architecture=architecture,
                                     image_channels=image_channels, conv_channels=conv_channels)

    def train(self, max_epochs: int = 100, train_mask: np.ndarray | None = None,
              val_mask: np.ndarray | None = None, progress_bar: bool = False,
              num_threads: int | None = None, accelerator: str = "cpu", devices: int | str = 1,
              strategy: str = "auto", num_nodes: int = 1, **training: object) -> TrainingResult:
        """Fit with the same Lightning trainer and condition-grouped batches as CITE-VAE
        (``devices``, ``strategy``, ``num_nodes``: as ``CiteVAE.train``)."""
        set_num_threads(num_threads)
        config = TrainingConfig(max_epochs=max_epochs, **training)
        if train_mask is None:
            val_mask = np.random.default_rng(config.seed).random(self.adata.n_obs) < 0.1
            train_mask = ~val_mask
        datamodule = CiteDataModule(self.adata, self.registry, train_mask, val_mask,
                                    cells_per_group=config.cells_per_group,
                                    groups_per_batch=config.groups_per_batch, seed=config.seed)
        result = fit(self.module, datamodule, config, accelerator, devices, strategy, num_nodes,
                     progress_bar=progress_bar)
        self.module.eval()
        return result

    def get_latent(self, adata: AnnData | None = None) -> np.ndarray:
        """Posterior means (N, n_latent) of the cells of ``adata`` (default: the training data)."""
        cells = self.adata if adata is None else adata
        with torch.no_grad():
            means = [self.module.inference(x, library, covariates, sample=False)[0].numpy()
                     for x, library, covariates in iter_cell_tensors(self.registry, cells, BATCH)]
        return np.concatenate(means)
