"""Convolutional encoders and decoder for images stored as flat rows, and the network factories.

An image of side S with C channels is a row of S * S * C values in (height, width, channel) order
(``x.reshape(S, S, C)``), as ``citevae.sim.simulate_images`` writes it. The convolutional stack is
DCGAN-like: log2(S / 4) stride-2 convolutions (kernel 4) from S x S down to 4 x 4, mirrored by
transposed convolutions in the decoder. ``gaussian_encoders`` and ``decoder`` build either these or
the MLPs of ``networks`` from ``architecture``, so CITE-VAE and the plain VAE share one switch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from citevae.errors import CiteVAEError
from citevae.module.networks import GaussianHead, mlp

Architecture = Literal["mlp", "conv"]
ARCHITECTURES = ("mlp", "conv")


def image_side(n_values: int, channels: int) -> int:
    """Side S of square images with ``channels`` channels flattened to ``n_values`` = S * S * C.

    S must be a power of two >= 8 (stride-2 layers down to 4 x 4); anything else is refused.
    """
    side = math.isqrt(max(n_values // max(channels, 1), 0))
    if channels < 1 or side * side * channels != n_values or side < 8 or side & (side - 1):
        raise CiteVAEError(
            f"the convolutional networks need square images of side 2^k >= 8 with {channels} "
            f"channel(s) flattened in (height, width, channel) order, but rows have {n_values} "
            "values; use architecture='mlp' or check image_channels"
        )
    return side


def rows_to_images(x: torch.Tensor, side: int, channels: int) -> torch.Tensor:
    """Flat rows (B, S * S * C) in (height, width, channel) order -> images (B, C, S, S)."""
    return x.reshape(-1, side, side, channels).permute(0, 3, 1, 2)


def images_to_rows(images: torch.Tensor) -> torch.Tensor:
    """Images (B, C, S, S) -> flat rows (B, S * S * C) in (height, width, channel) order."""
    return images.permute(0, 2, 3, 1).flatten(1)


def _widths(side: int, channels: int) -> list[int]:
    """Output channels of the log2(side / 4) stride-2 layers: base width, doubled in the second half."""
    n = int(math.log2(side // 4))
    return [channels * (1 if i < n // 2 else 2) for i in range(n)]


class ConvEncoder(nn.Module):
    """Flat images (B, S * S * C) -> features (B, ``n_features``) = last width * 4 * 4."""

    def __init__(self, n_values: int, image_channels: int = 3, channels: int = 32) -> None:
        super().__init__()
        self.side, self.image_channels = image_side(n_values, image_channels), image_channels
        self.n_values = n_values
        layers: list[nn.Module] = []
        width = image_channels
        for out in _widths(self.side, channels):
            layers += [nn.Conv2d(width, out, 4, stride=2, padding=1), nn.SiLU()]
            width = out
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.n_features = width * 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(rows_to_images(x, self.side, self.image_channels))


class ConvGaussianHead(nn.Module):
    """Diagonal Gaussian from inputs (B, n_values + n_extra): the first ``n_values`` columns are the
    image (through ``trunk``), the rest (covariates, c) join the features before an MLP head.

    Same call as ``GaussianHead``; returns mean and log-variance (B, n_out), log-variance clamped.
    """

    def __init__(self, trunk: ConvEncoder, n_extra: int, n_out: int, n_hidden: int, n_layers: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = GaussianHead(trunk.n_features + n_extra, n_out, n_hidden, n_layers, dropout)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.trunk.n_values
        return self.head(torch.cat([self.trunk(inputs[:, :n]), inputs[:, n:]], -1))


class ConvDecoder(nn.Module):
    """Latents (B, n_in) -> flat images (B, S * S * C): MLP to 4 x 4 maps, transposed convolutions."""

    def __init__(self, n_in: int, n_values: int, image_channels: int = 3, channels: int = 32,
                 n_hidden: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        side = image_side(n_values, image_channels)
        widths = _widths(side, channels)[::-1]
        self.net = nn.Sequential(
            mlp(n_in, widths[0] * 16, n_hidden, 1, dropout),
            nn.SiLU(),
            nn.Unflatten(1, (widths[0], 4, 4)),
        )
        for i, width in enumerate(widths):
            out = widths[i + 1] if i + 1 < len(widths) else image_channels
            self.net.append(nn.ConvTranspose2d(width, out, 4, stride=2, padding=1))
            if i + 1 < len(widths):
                self.net.append(nn.SiLU())

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return images_to_rows(self.net(latent))


def gaussian_encoders(architecture: Architecture, n_values: int, heads: Sequence[tuple[int, int]],
                      n_hidden: int, n_layers: int, dropout: float = 0.0, image_channels: int = 3,
                      conv_channels: int = 32) -> list[nn.Module]:
    """One Gaussian encoder per (n_extra, n_out) in ``heads``, each called on (B, n_values + n_extra).

    "mlp": ``GaussianHead`` MLPs. "conv": ``ConvGaussianHead``s, each with its own ``ConvEncoder``
    trunk of width ``conv_channels`` (not shared, so the weights stay distinct tensors for safetensors).
    """
    _check_architecture(architecture)
    if architecture == "mlp":
        return [GaussianHead(n_values + extra, out, n_hidden, n_layers, dropout) for extra, out in heads]
    return [ConvGaussianHead(ConvEncoder(n_values, image_channels, conv_channels), extra, out, n_hidden,
                             n_layers, dropout) for extra, out in heads]


def decoder(architecture: Architecture, n_in: int, n_values: int, n_hidden: int, n_layers: int,
            dropout: float = 0.0, image_channels: int = 3, conv_channels: int = 32) -> nn.Module:
    """Latents (B, n_in) -> (B, n_values): an MLP or a ``ConvDecoder``."""
    _check_architecture(architecture)
    if architecture == "mlp":
        return mlp(n_in, n_values, n_hidden, n_layers, dropout)
    return ConvDecoder(n_in, n_values, image_channels, conv_channels, n_hidden, dropout)


def _check_architecture(architecture: str) -> None:
    if architecture not in ARCHITECTURES:
        raise CiteVAEError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
