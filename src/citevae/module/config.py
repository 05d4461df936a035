"""Hyperparameters of the CITE-VAE module, in one dataclass with defaults and units."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Literal, get_args, get_type_hints

from citevae.errors import CiteVAEError


@dataclass
class ModuleConfig:
    """Architecture and objective weights (MODEL.md sections 2, 6 and 9).

    Data-derived sizes (``n_genes``, ``n_targets``, ``descriptor_dim``, ``covariate_sizes``) are
    filled in by the model from the registered data.
    """

    n_genes: int = 0
    n_targets: int = 0
    descriptor_dim: int = 0
    covariate_sizes: tuple[int, ...] = ()
    likelihood: Literal["nb", "gaussian"] = "gaussian"
    n_programs: int = 16
    """n: latent causal programs z."""
    n_invariant: int = 8
    """m: invariant state c."""
    n_embedding: int = 32
    """d_u: perturbation embedding."""
    n_steps: int = 4
    """T: latent steps between control (t = 0) and perturbed cells when no time is observed."""
    n_hidden: int = 128
    n_layers: int = 2
    dropout: float = 0.0
    architecture: Literal["mlp", "conv"] = "mlp"
    """Encoders and decoder: MLPs, or convolutional networks for square images flattened in
    (height, width, channel) order (``citevae.module.conv``; side 2^k >= 8)."""
    image_channels: int = 3
    """Channels per pixel of the images (architecture "conv")."""
    conv_channels: int = 32
    """Base width of the convolutional stack (doubled in its deeper half)."""
    decoder: Literal["mlp", "additive", "linear"] = "mlp"
    """How the programs z are decoded: one MLP of [z, c, s] ("mlp"), or g(c, s) + sum_k f_k(z_k)
    (``networks.AdditiveDecoder``) with a small MLP f_k per program ("additive") or linear
    loadings ("linear"), so programs moved by different perturbations decode to the sum of their
    effects. Architecture "mlp" only."""
    instantaneous: bool = True
    """Lambda(u) among programs; off = lag-only dynamics."""
    lagged: bool = True
    """h(z_{t-1}, u) = z + Delta(z, u); off = z_t depends on z_{t-1} only through identity."""
    linear_transition: bool = False
    """h(z, u) = A z + b + B u (ablation) instead of the MLP drift."""
    perturbed_drift: bool = True
    """u enters the lagged transition h(z, u) (MODEL.md); False: one drift h(z) for every condition,
    so perturbations act only through the noise and the causal edges."""
    nonlinear_mechanisms: bool = False
    """z_i = sum_j Lambda_ij(u) tanh(z_j) + ... instead of linear parents (log|det| stays 0)."""
    beta_c: float = 0.01
    beta_0: float = 0.01
    beta_z: float = 0.01
    """KL weights. MODEL.md starts from 1; on log1p Perturb-seq data (PerturBench K562) beta = 0.1
    or more collapsed the posterior (KL ~ 0, no perturbation signal), 0.01 did not."""
    alpha: float = 10.0
    """Weight of the distribution match between rollouts and real cells."""
    gamma: float = 50.0
    """Weight of the population term: real cells of a condition against the mean expression of
    the rollouts of its controls (the mean-matching part of the distribution match; log1p scale). Tuned on
    PerturBench K562 held-out pairs: 5 -> 20 -> 50 moved Pearson delta 0.32 -> 0.77 -> 0.82."""
    distribution_distance: Literal["mmd", "energy"] = "energy"
    stationary_control: bool = False
    """Match rollouts of control cells under u = 0 over ``n_steps`` to the real control cells (the
    control population does not change between t = 0 and t = T). The model turns it on for
    endpoint data (no time key, MODEL.md R1), where nothing else constrains the control drift."""
    lambda_lineage: float = 10.0
    """Weight of the spread of c along lineages (paired data only): c is the invariant state, so
    two observations of one individual share it. Without it, on the vector simulator, c took over
    the time-varying signal and z collapsed to its prior (KL ~ 0) once beta was 1."""
    lambda_sparsity: float = 1e-3
    lambda_residual: float = 1e-2
    lambda_invariance: float = 1.0
    lambda_latent: float = 0.0
    """Weight of the latent match: energy distance between the rollouts' programs and the encoded
    programs of the condition's real cells, per program in units of the controls' posterior
    spread. Keeps perturbed rollouts where the encoder puts real perturbed cells; without it they
    moved 10-50 spreads away, where the decoder is flat, and combinations came out sub-additive
    (count simulator, held-out pairs)."""
    library_scale: float = 1e4
    """Counts per cell of the log1p-normalised space (log1p(x / library * library_scale))."""

    def __post_init__(self) -> None:
        positive = ("n_programs", "n_invariant", "n_embedding", "n_steps", "n_hidden", "n_layers",
                    "image_channels", "conv_channels")
        for name in positive:
            if getattr(self, name) < 1:
                raise CiteVAEError(f"{name} must be >= 1, got {getattr(self, name)}")
        hints = get_type_hints(ModuleConfig)
        for name in ("likelihood", "architecture", "decoder", "distribution_distance"):
            allowed = [repr(value) for value in get_args(hints[name])]
            if getattr(self, name) not in get_args(hints[name]):
                raise CiteVAEError(f"{name} must be {', '.join(allowed[:-1])} or {allowed[-1]}, "
                                   f"got {getattr(self, name)!r}")
        if self.decoder != "mlp" and self.architecture == "conv":
            raise CiteVAEError(f"decoder {self.decoder!r} needs architecture 'mlp' (images are "
                               "decoded by the convolutional decoder)")
        if not 0 <= self.dropout < 1:
            raise CiteVAEError(f"dropout must be in [0, 1), got {self.dropout}")
        self.covariate_sizes = tuple(int(s) for s in self.covariate_sizes)

    def to_dict(self) -> dict:
        """JSON-ready dictionary."""
        data = asdict(self)
        data["covariate_sizes"] = list(self.covariate_sizes)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ModuleConfig:
        """Inverse of ``to_dict``; unknown keys are refused by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CiteVAEError(f"unknown module hyperparameter(s): {', '.join(unknown)}")
        return cls(**{**data, "covariate_sizes": tuple(data.get("covariate_sizes", ()))})
