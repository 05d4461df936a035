"""Tests of the convolutional networks and the architecture switch of CITE-VAE and the plain VAE."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from citevae import CiteVAE, setup_anndata
from citevae.errors import CiteVAEError
from citevae.model.vae import PlainVAE
from citevae.module import CiteVAEModule, ModuleConfig
from citevae.module.conv import (
    ConvDecoder,
    ConvEncoder,
    ConvGaussianHead,
    decoder,
    gaussian_encoders,
    image_side,
    images_to_rows,
    rows_to_images,
)
from citevae.module.networks import GaussianHead
from citevae.module.vae import PlainVAEModule
from citevae.sim import simulate_images


@pytest.fixture(scope="module")
def scenes():
    adata = simulate_images(30, seed=0, temporal=True, n_steps=1, image_size=16)
    assert (adata.obs["perturbation"] == "Teapot").any()
    setup_anndata(adata, perturbation_key="perturbation", control="Teapot", time_key="time",
                  lineage_key="individual", scale="continuous")
    return adata


def test_image_side_accepts_square_powers_of_two_only() -> None:
    assert image_side(64 * 64 * 3, 3) == 64
    assert image_side(8 * 8, 1) == 8
    for bad, channels in [(64 * 64 * 3, 1), (48 * 48 * 3, 3), (4 * 4 * 3, 3), (100, 3)]:
        with pytest.raises(CiteVAEError, match="architecture='mlp'"):
            image_side(bad, channels)


def test_rows_follow_the_simulator_pixel_layout() -> None:
    adata = simulate_images(2, seed=1, image_size=16)
    x = torch.from_numpy(adata.X)
    images = rows_to_images(x, 16, 3)
    expected = adata.X.reshape(2, 16, 16, 3)  # (H, W, RGB), as the simulator documents
    assert images.shape == (2, 3, 16, 16)
    assert np.array_equal(images[1, 2, 5, 9].item(), expected[1, 5, 9, 2])
    assert torch.equal(images_to_rows(images), x)


@pytest.mark.parametrize("side", [8, 32, 64])
def test_encoder_and_decoder_shapes(side: int) -> None:
    n_values = side * side * 3
    encoder = ConvEncoder(n_values, 3, channels=4)
    x = torch.rand(5, n_values)
    features = encoder(x)
    assert features.shape == (5, encoder.n_features) and encoder.n_features == 2 * 4 * 16
    head = ConvGaussianHead(encoder, n_extra=2, n_out=6, n_hidden=16, n_layers=1)
    mean, log_var = head(torch.cat([x, torch.ones(5, 2)], -1))
    assert mean.shape == log_var.shape == (5, 6)
    out = ConvDecoder(6, n_values, 3, channels=4, n_hidden=16)(mean)
    assert out.shape == (5, n_values) and torch.isfinite(out).all()


def test_extra_inputs_reach_the_conv_head() -> None:
    torch.manual_seed(0)
    head = ConvGaussianHead(ConvEncoder(8 * 8 * 3, 3, 4), n_extra=3, n_out=2, n_hidden=8, n_layers=1)
    x = torch.rand(1, 8 * 8 * 3)
    a = head(torch.cat([x, torch.zeros(1, 3)], -1))[0]
    b = head(torch.cat([x, torch.ones(1, 3)], -1))[0]
    assert not torch.allclose(a, b)


def test_factories_switch_architecture() -> None:
    mlp_heads = gaussian_encoders("mlp", 192, [(0, 3), (2, 4)], 16, 1)
    conv_heads = gaussian_encoders("conv", 192, [(0, 3), (2, 4)], 16, 1, conv_channels=4)
    assert all(isinstance(h, GaussianHead) for h in mlp_heads)
    assert all(isinstance(h, ConvGaussianHead) for h in conv_heads)
    assert conv_heads[0].trunk is not conv_heads[1].trunk  # distinct tensors (safetensors)
    assert isinstance(decoder("conv", 4, 192, 16, 1, conv_channels=4), ConvDecoder)
    with pytest.raises(CiteVAEError, match="architecture"):
        decoder("resnet", 4, 192, 16, 1)  # type: ignore[arg-type]
    with pytest.raises(CiteVAEError, match="architecture"):
        ModuleConfig(architecture="resnet")  # type: ignore[arg-type]
    with pytest.raises(CiteVAEError, match="conv_channels"):
        ModuleConfig(conv_channels=0)


def test_conv_decoder_fits_a_small_batch() -> None:
    torch.manual_seed(0)
    x = torch.from_numpy(simulate_images(8, seed=2, image_size=16).X)
    module = PlainVAEModule(x.shape[1], 4, n_hidden=32, n_layers=1, architecture="conv",
                            conv_channels=8)
    empty = torch.zeros((8, 0), dtype=torch.long)
    batch = {"x": x, "library": torch.ones(8), "covariates": empty}

    def error() -> float:
        with torch.no_grad():
            mean = module.inference(x, batch["library"], empty, sample=False)[0]
            return float(((module.decoder(mean) - x) ** 2).mean())

    optimiser = torch.optim.Adam(module.parameters(), lr=1e-2)
    before = error()
    for _ in range(25):
        optimiser.zero_grad()
        module.loss(batch, kl_weight=0.0).loss.backward()
        optimiser.step()
    assert error() < 0.5 * before


def test_citevae_module_builds_conv_networks() -> None:
    config = ModuleConfig(n_genes=16 * 16 * 3, n_targets=2, descriptor_dim=1, architecture="conv",
                          conv_channels=4, n_programs=3, n_invariant=2, n_hidden=16)
    module = CiteVAEModule(config, torch.zeros(2, 1), torch.zeros(2, dtype=torch.bool))
    assert isinstance(module.c_encoder, ConvGaussianHead) and isinstance(module.decoder, ConvDecoder)
    x = torch.rand(4, 16 * 16 * 3)
    empty = torch.zeros((4, 0), dtype=torch.long)
    inf = module.inference(x, torch.ones(4), empty, sample=False)
    assert inf.z.shape == (4, 3) and inf.c.shape == (4, 2)
    assert module.decode_logits(inf.z, inf.c, empty).shape == (4, 16 * 16 * 3)


def test_citevae_and_vae_train_on_images_and_round_trip(scenes, tmp_path) -> None:
    model = CiteVAE(scenes, n_programs=3, n_invariant=2, n_hidden=16, architecture="conv",
                    conv_channels=4)
    model.train(max_epochs=1, progress_bar=False, early_stopping_patience=0, cells_per_group=8)
    latent = model.get_latent(inplace=False)
    assert latent["z"].shape == (scenes.n_obs, 3) and np.isfinite(latent["z"]).all()
    loaded = CiteVAE.load(model.save(tmp_path / "conv"), scenes)
    assert loaded.config.architecture == "conv"
    assert np.allclose(loaded.get_latent(inplace=False)["z"], latent["z"], atol=1e-6)
    vae = PlainVAE(scenes, n_latent=5, n_hidden=16, architecture="conv", conv_channels=4)
    vae.train(max_epochs=1, early_stopping_patience=0, cells_per_group=8)
    assert vae.get_latent().shape == (scenes.n_obs, 5)
