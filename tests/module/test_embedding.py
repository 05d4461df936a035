"""Tests of the perturbation embedding phi(P) = sum_k (A(a_k) + r_k)."""

from __future__ import annotations

import pytest
import torch

from citevae.module.embedding import PerturbationEmbedding

K, F, D = 5, 4, 6


@pytest.fixture
def embedding() -> PerturbationEmbedding:
    torch.manual_seed(0)
    descriptors = torch.randn(K, F, generator=torch.Generator().manual_seed(1))
    has = torch.tensor([True, True, True, False, True])
    descriptors[3] = 0.0
    module = PerturbationEmbedding(descriptors, has, D, n_hidden=16)
    with torch.no_grad():
        module.residual.normal_(generator=torch.Generator().manual_seed(2))
    return module


def test_control_row_embeds_to_exact_zero(embedding: PerturbationEmbedding) -> None:
    u = embedding(torch.zeros(3, K))
    assert u.shape == (3, D)
    assert torch.equal(u, torch.zeros(3, D))


def test_combination_is_sum_of_singles(embedding: PerturbationEmbedding) -> None:
    eye = torch.eye(K)
    pair = eye[0] + eye[2]
    triple = eye[1] + eye[3] + eye[4]
    u = embedding(torch.stack([eye[0], eye[2], pair, triple]))
    torch.testing.assert_close(u[2], u[0] + u[1])
    torch.testing.assert_close(u[3], embedding(eye[[1, 3, 4]]).sum(0))


def test_single_target_is_descriptor_net_plus_residual(embedding: PerturbationEmbedding) -> None:
    e = embedding.target_embeddings()
    assert e.shape == (K, D)
    from_net = embedding.descriptor_net(embedding.descriptors)
    torch.testing.assert_close(e[0], from_net[0] + embedding.residual[0])
    # a target without descriptor is its residual alone
    assert torch.equal(e[3], embedding.residual[3])


def test_new_targets_get_descriptor_embedding_without_residual(
        embedding: PerturbationEmbedding) -> None:
    new = torch.randn(2, F, generator=torch.Generator().manual_seed(3))
    descriptors = torch.cat([embedding.descriptors, new])
    has = torch.cat([embedding.has_descriptor, torch.tensor([True, False])])
    e = embedding.target_embeddings(descriptors, has)
    assert e.shape == (K + 2, D)
    torch.testing.assert_close(e[:K], embedding.target_embeddings())
    torch.testing.assert_close(e[K], embedding.descriptor_net(new[:1])[0])
    assert torch.equal(e[K + 1], torch.zeros(D))
    codes = torch.zeros(1, K + 2)
    codes[0, K] = 1.0
    torch.testing.assert_close(embedding(codes, descriptors, has)[0], e[K])


def test_zero_width_descriptors_are_accepted() -> None:
    torch.manual_seed(0)
    module = PerturbationEmbedding(torch.zeros(3, 0), torch.zeros(3, dtype=torch.bool), D, 8)
    assert torch.equal(module(torch.zeros(2, 3)), torch.zeros(2, D))
    assert torch.equal(module(torch.eye(3)), module.residual.detach())
