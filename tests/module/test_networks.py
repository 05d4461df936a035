"""Tests of the small building blocks: the additive decoders."""

from __future__ import annotations

import pytest
import torch

from citevae.module.networks import AdditiveDecoder


def effects(decoder: AdditiveDecoder, base: torch.Tensor, moves: dict[str, torch.Tensor]) -> dict:
    """Decoded change of ``base`` (B, n_in) under each named move (B, n_in)."""
    return {name: decoder(base + move) - decoder(base) for name, move in moves.items()}


@pytest.mark.parametrize("linear", [False, True])
def test_additive_decoder_sums_the_effects_of_different_programs(linear: bool) -> None:
    torch.manual_seed(0)
    decoder = AdditiveDecoder(n_programs=4, n_rest=3, n_out=7, n_hidden=8, n_layers=1, linear=linear)
    base = torch.randn(5, 7)
    move_a, move_b = torch.zeros(5, 7), torch.zeros(5, 7)
    move_a[:, 0], move_b[:, 2] = 1.5, -2.0
    change = effects(decoder, base, {"a": move_a, "b": move_b, "ab": move_a + move_b})
    torch.testing.assert_close(change["ab"], change["a"] + change["b"])
    moved_rest = base.clone()
    moved_rest[:, 4:] += 1.0
    assert not torch.allclose(decoder(moved_rest), decoder(base))
    assert decoder(base).shape == (5, 7)


@pytest.mark.parametrize("linear", [False, True])
def test_program_functions_are_linear_only_in_the_linear_decoder(linear: bool) -> None:
    torch.manual_seed(0)
    decoder = AdditiveDecoder(n_programs=2, n_rest=1, n_out=3, n_hidden=8, n_layers=1, linear=linear)
    move = torch.zeros(4, 3)
    move[:, 0] = 1.0
    change = effects(decoder, torch.randn(4, 3), {"once": move, "twice": 2 * move})
    assert torch.allclose(change["twice"], 2 * change["once"], atol=1e-5) == linear
