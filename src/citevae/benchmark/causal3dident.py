"""Causal3DIdent-style image benchmark: latent causal factors recovered from pixels.

Scenes come from ``citevae.sim.simulate_images`` (temporal variant: each scene evolves for
``n_steps`` steps, CITRIS-style). The object class is the perturbation regime ("Teapot" is the
control: its position and hue means do not depend on the environment), the frame index is the
observed time and the scene the lineage, so CITE-VAE sees the class-dependent mechanisms it needs
for identifiability (MODEL.md section 7). CITE-VAE and plain / beta-VAEs with the same
convolutional encoder and decoder (``architecture="conv"``) and the same total latent size train
on the same scenes (``VAE_BETAS``); each is scored on held-out scenes by MCC, per-factor R^2 of a
kernel ridge fitted on training latents, and class accuracy of a logistic regression.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from citevae.data.registry import setup_anndata
from citevae.errors import CiteVAEError
from citevae.metrics.latent import abs_correlation_matrix, class_accuracy_heldout, mcc, r2_heldout
from citevae.model.citevae import CiteVAE
from citevae.model.vae import PlainVAE
from citevae.sim.images import simulate_images

VAE_BETAS = {"vae": 1.0, "betavae": 4.0, "lowbetavae": 0.01}
"""KL weights of the VAE references: plain VAE, beta-VAE, and a VAE with CITE-VAE's KL weight
(``ModuleConfig.beta_*`` = 0.01), so that a gain of CITE-VAE is not just its weaker KL term."""
METHODS = ("citevae", *VAE_BETAS)
Decoder = Callable[[np.ndarray], np.ndarray]
"""Representation (B, p) -> flat images (B, S * S * 3)."""


@dataclass
class ImageBenchmarkConfig:
    """Data, model and training sizes of one benchmark run (defaults: ~4 minutes per seed for the
    four methods on 2 CPU cores)."""

    n_individuals: int = 1500
    """Training scenes, each a sequence of n_steps + 1 frames (1500 x 10 epochs: about the
    optimiser steps of 500 x 25, on three times as many scenes)."""
    n_test: int = 200
    """Held-out scenes (different seed) on which every score is computed."""
    n_steps: int = 3
    image_size: int = 32
    """Side in pixels (the spec's 64 costs about 4x the CPU time of 32)."""
    epochs: int = 10
    conv_channels: int = 16
    n_hidden: int = 128
    n_programs: int = 10
    """CITE-VAE's z; the VAEs get n_programs + n_invariant latents, and both are scored on all."""
    n_invariant: int = 2
    n_regression: int = 2000
    """Training frames (at most) on which the R^2 and class-accuracy regressions are fitted."""
    seed: int = 0
    citevae: dict = field(default_factory=lambda: {"alpha": 0.0, "gamma": 0.0})
    """Further ``ModuleConfig`` fields of CITE-VAE. The distribution and population terms are off:
    they fit rollouts to held-out conditions' cells, which is not asked here, and on pixels the
    population term (each real scene against its class's mean image) shares the reconstruction's
    noise scale and inflates it (3 seeds with them at 1: MCC 0.237 / R^2 0.277, against 0.306 /
    0.397 without; DEVELOPERS.md, session 11)."""
    training: dict = field(default_factory=lambda: {"cells_per_group": 32, "groups_per_batch": 2})
    """``TrainingConfig`` fields shared by all methods (small batches: more steps per epoch)."""


def simulate_scenes(n: int, config: ImageBenchmarkConfig, seed: int) -> AnnData:
    """Temporal scenes registered for training: class as perturbation, frame as time, scene as lineage."""
    adata = simulate_images(n, seed=seed, temporal=True, n_steps=config.n_steps,
                            image_size=config.image_size)
    setup_anndata(adata, perturbation_key="perturbation", control=adata.uns["sim"]["control"],
                  time_key="time", lineage_key="individual", scale="continuous")
    return adata


def train_method(method: str, adata: AnnData, config: ImageBenchmarkConfig) -> CiteVAE | PlainVAE:
    """Fit one of ``METHODS`` on ``adata`` with the shared convolutional architecture."""
    conv = {"architecture": "conv", "conv_channels": config.conv_channels, "n_hidden": config.n_hidden}
    training = {"seed": config.seed, "early_stopping_patience": 0, **config.training}
    if method == "citevae":
        model = CiteVAE(adata, seed=config.seed, n_programs=config.n_programs,
                        n_invariant=config.n_invariant, **conv, **config.citevae)
        model.train(max_epochs=config.epochs, progress_bar=False, **training)
        return model
    if method not in METHODS:
        raise CiteVAEError(f"unknown method {method!r}; choose from {METHODS}")
    with torch.random.fork_rng():  # seeded weights without touching the caller's RNG state
        torch.manual_seed(config.seed)
        model = PlainVAE(adata, n_latent=config.n_programs + config.n_invariant,
                         beta=VAE_BETAS[method], **conv)
    model.train(max_epochs=config.epochs, **training)
    return model


def representation(model: CiteVAE | PlainVAE, adata: AnnData) -> np.ndarray:
    """Posterior means (cells, p): [z, c] for CITE-VAE, z for the VAEs."""
    if isinstance(model, CiteVAE):
        latent = model.get_latent(adata, inplace=False)
        return np.hstack([latent["z"], latent["c"]])
    return model.get_latent(adata)


def decoder_of(model: CiteVAE | PlainVAE) -> Decoder:
    """The mean image of a representation as returned by ``representation``."""
    module = model.module

    def decode(rep: np.ndarray) -> np.ndarray:
        latent = torch.as_tensor(rep, dtype=torch.float32)
        with torch.no_grad():
            if isinstance(model, CiteVAE):
                n = model.config.n_programs
                empty = torch.zeros((len(latent), 0), dtype=torch.long)
                return module.decode_logits(latent[:, :n], latent[:, n:], empty).numpy()
            return module.decoder(latent).numpy()

    return decode


def score(rep_train: np.ndarray, train: AnnData, rep_test: np.ndarray, test: AnnData,
          n_regression: int = 2000, seed: int = 0) -> dict[str, float]:
    """MCC on the test scenes, R^2 per factor and class accuracy (regressions fitted on at most
    ``n_regression`` training frames, scored on the test frames). Keys: "MCC", "R2 mean",
    "R2 <factor>" for each latent, "class acc"."""
    sim = test.uns["sim"]
    names = [str(n) for n in sim["latent_names"]]
    circular = np.isin(names, [str(n) for n in sim["wrapping_latents"]])
    rows = np.random.default_rng(seed).permutation(train.n_obs)[:n_regression]
    z_train, z_test = train.obsm["z_true"][rows], test.obsm["z_true"]
    r2 = r2_heldout(rep_train[rows], z_train, rep_test, z_test, circular=circular)
    out = {"MCC": mcc(z_test, rep_test), "R2 mean": float(np.mean(r2))}
    out.update({f"R2 {name}": float(v) for name, v in zip(names, r2, strict=True)})
    out["class acc"] = class_accuracy_heldout(rep_train[rows], train.obs["class"].to_numpy()[rows],
                                              rep_test, test.obs["class"].to_numpy())
    return out


@dataclass
class BenchmarkRun:
    """One seed's scores (one row per method), the data and the trained models."""

    scores: pd.DataFrame
    train: AnnData
    test: AnnData
    models: dict[str, CiteVAE | PlainVAE]
    representations: dict[str, np.ndarray]
    """Test-set representations per method."""


def run_image_benchmark(config: ImageBenchmarkConfig, methods: Sequence[str] = METHODS,
                        log: Callable[[str], None] | None = None) -> BenchmarkRun:
    """Simulate train and test scenes, train every method, score each on the test scenes."""
    train = simulate_scenes(config.n_individuals, config, seed=config.seed)
    test = simulate_scenes(config.n_test, config, seed=config.seed + 10_000)
    rows, models, reps = [], {}, {}
    for method in methods:
        model = train_method(method, train, config)
        rep_train, rep_test = representation(model, train), representation(model, test)
        rows.append({"method": method, "seed": config.seed,
                     **score(rep_train, train, rep_test, test, config.n_regression, config.seed)})
        models[method], reps[method] = model, rep_test
        if log is not None:
            log(f"seed {config.seed} {method}: MCC {rows[-1]['MCC']:.3f}, R2 mean {rows[-1]['R2 mean']:.3f}")
    return BenchmarkRun(pd.DataFrame(rows), train, test, models, reps)


# figures -------------------------------------------------------------------------------------
def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _as_images(flat: np.ndarray, side: int) -> np.ndarray:
    return np.clip(flat.reshape(len(flat), side, side, 3), 0.0, 1.0)


def samples_figure(test: AnnData, reps: dict[str, np.ndarray], n: int = 6) -> Figure:
    """Test images (top row) with their true factors and each method's matched latents below.

    Learned dims are matched to factors as in the MCC, standardised and sign-aligned.
    """
    sim = test.uns["sim"]
    names, side = [str(x) for x in sim["latent_names"]], int(sim["image_shape"][0])
    z = test.obsm["z_true"]
    picks = np.linspace(0, test.n_obs - 1, n).astype(int)
    matched = {}
    for method, rep in reps.items():
        _, match = mcc(z, rep, return_matching=True)
        learned = (rep[:, match] - rep[:, match].mean(0)) / np.maximum(rep[:, match].std(0), 1e-12)
        signs = np.sign([np.corrcoef(z[:, j], learned[:, j])[0, 1] for j in range(len(names))])
        matched[method] = learned * np.where(signs == 0, 1, signs) / np.sqrt(3)  # U(-1, 1) has sd 1/sqrt 3
    fig = _figure(2.2 * n, 5.0)
    axes = fig.subplots(2, n, height_ratios=[1, 1.4])
    images = _as_images(np.asarray(test.X[picks]), side)
    y = np.arange(len(names))
    width = 0.8 / (1 + len(matched))
    for col, row in enumerate(picks):
        axes[0, col].imshow(images[col])
        axes[0, col].set_title(str(test.obs["perturbation"].iloc[row]), fontsize=8)
        axes[0, col].axis("off")
        ax = axes[1, col]
        ax.barh(y, z[row], width, label="true")
        for k, (method, values) in enumerate(matched.items()):
            ax.barh(y + (k + 1) * width, values[row], width, label=method)
        ax.set_xlim(-2, 2)
        ax.set_yticks(y + width * len(matched) / 2, names if col == 0 else [""] * len(names), fontsize=7)
        ax.invert_yaxis()
        ax.tick_params(axis="x", labelsize=7)
    axes[1, 0].legend(fontsize=6, loc="lower left")
    return fig


def traversals_figure(test: AnnData, rep: np.ndarray, decode: Decoder, title: str,
                      n_values: int = 7) -> Figure:
    """Decoded traversals: one row per true factor, varying its matched learned dim from the 2nd
    to the 98th percentile (test set) with the other dims at a median test scene's latents."""
    sim = test.uns["sim"]
    names, side = [str(x) for x in sim["latent_names"]], int(sim["image_shape"][0])
    z = test.obsm["z_true"]
    _, match = mcc(z, rep, return_matching=True)
    corr = abs_correlation_matrix(z, rep)
    centre = rep[np.argmin(np.abs(rep - np.median(rep, 0)).sum(1))]
    fig = _figure(1.1 * n_values + 1.6, 1.1 * len(names) + 0.4)
    axes = fig.subplots(len(names), n_values)
    for i, (name, dim) in enumerate(zip(names, match, strict=True)):
        grid = np.repeat(centre[None], n_values, 0)
        grid[:, dim] = np.quantile(rep[:, dim], np.linspace(0.02, 0.98, n_values))
        for j, image in enumerate(_as_images(decode(grid), side)):
            axes[i, j].imshow(image)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        axes[i, 0].set_ylabel(f"{name}\nd{dim} |r|={corr[i, dim]:.2f}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    return fig
