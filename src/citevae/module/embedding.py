"""Perturbation embedding phi(P) = sum_{k in P} (A(a_k) + r_k)  (MODEL.md section 3)."""

from __future__ import annotations

import torch
from torch import nn

from citevae.module.networks import mlp


class PerturbationEmbedding(nn.Module):
    """Target embeddings from gene descriptors plus free residuals, summed over a cell's targets.

    Args:
        descriptors: (K, d_a) descriptor of each training target (zeros where it has none).
        has_descriptor: (K,) bool, whether the target has a descriptor.
        n_embedding: d_u.
        n_hidden: width of the descriptor MLP A.

    A target without a descriptor is embedded by its residual r_k alone.
    """

    def __init__(self, descriptors: torch.Tensor, has_descriptor: torch.Tensor, n_embedding: int,
                 n_hidden: int = 128) -> None:
        super().__init__()
        n_targets, n_features = descriptors.shape
        self.register_buffer("descriptors", descriptors.float().clone())
        self.register_buffer("has_descriptor", has_descriptor.bool().clone())
        self.descriptor_net = mlp(max(n_features, 1), n_embedding, n_hidden, 1)
        self.residual = nn.Parameter(torch.zeros(n_targets, n_embedding))

    @property
    def n_targets(self) -> int:
        """Number of training targets K."""
        return self.residual.shape[0]

    def target_embeddings(self, descriptors: torch.Tensor | None = None,
                          has_descriptor: torch.Tensor | None = None) -> torch.Tensor:
        """e_k for every target: (K', d_u). Extra rows beyond the K training targets (new genes
        given with their descriptors) get no residual."""
        descriptors = self.descriptors if descriptors is None else descriptors
        has_descriptor = self.has_descriptor if has_descriptor is None else has_descriptor
        if descriptors.shape[1] == 0:
            descriptors = descriptors.new_zeros((descriptors.shape[0], 1))
        from_descriptor = self.descriptor_net(descriptors) * has_descriptor.unsqueeze(-1)
        residual = self.residual
        extra = descriptors.shape[0] - self.n_targets
        if extra > 0:
            residual = torch.cat([residual, residual.new_zeros(extra, residual.shape[1])])
        return from_descriptor + residual

    def forward(self, targets: torch.Tensor, descriptors: torch.Tensor | None = None,
                has_descriptor: torch.Tensor | None = None) -> torch.Tensor:
        """u = targets @ E: (B, d_u) from multi-hot targets (B, K'); zero for control rows."""
        return targets @ self.target_embeddings(descriptors, has_descriptor)
