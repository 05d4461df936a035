"""Tests of stage 1 of the staged fit: sparse components of expression."""

from __future__ import annotations

import numpy as np
import pytest

from citevae.errors import CiteVAEError
from citevae.metrics import mcc
from citevae.train.components import largest_gap, sparse_components


def sparse_and_dense(seed: int = 0, n_cells: int = 600, n_genes: int = 60):
    """Cells with 3 programs on disjoint blocks of 8 genes and 2 dense states on all genes."""
    rng = np.random.default_rng(seed)
    z, c = rng.standard_normal((n_cells, 3)), rng.standard_normal((n_cells, 2))
    sparse = np.zeros((3, n_genes))
    for k in range(3):
        sparse[k, 8 * k : 8 * (k + 1)] = rng.uniform(1.0, 2.0, 8)
    dense = rng.normal(0.0, 0.5, (2, n_genes))
    x = z @ sparse + c @ dense + 0.05 * rng.standard_normal((n_cells, n_genes))
    return x, z


def test_largest_gap_known_answers() -> None:
    eigenvalues = np.array([9.0, 8.0, 7.5, 1.0, 0.9, 0.8])
    assert largest_gap(eigenvalues, 2, 6, ratio=True) == 3
    sparsity = np.array([2.0, 2.1, 2.2, 5.0, 5.1])
    assert largest_gap(sparsity, 1, 5, ratio=False) == 3


def test_sparse_components_find_sizes_and_programs() -> None:
    x, z = sparse_and_dense()
    components = sparse_components(x, starts=2)
    assert components.projection.shape == (60, 5)
    assert components.n_programs == 3
    scores = components.transform(x)
    np.testing.assert_allclose(scores.std(0), 1.0, rtol=1e-2)
    assert np.all(np.diff(components.sparsity) >= 0)
    assert mcc(scores[:, :3], z) > 0.95


def test_sparse_components_respect_given_sizes() -> None:
    x, _ = sparse_and_dense()
    components = sparse_components(x, n_components=4, n_programs=2, starts=1)
    assert components.projection.shape == (60, 4) and components.n_programs == 2


@pytest.mark.parametrize(("options", "message"), [
    ({"n_components": 1}, "n_components must be in"),
    ({"n_components": 4, "n_programs": 4}, "n_programs must be in"),
    ({"n_components": 4, "n_programs": 0}, "n_programs must be in"),
])
def test_sparse_components_refuse_bad_sizes(options, message) -> None:
    x, _ = sparse_and_dense()
    with pytest.raises(CiteVAEError, match=message):
        sparse_components(x, starts=1, **options)


def test_sparse_components_refuse_too_few_cells() -> None:
    with pytest.raises(CiteVAEError, match="at least 4 cells"):
        sparse_components(np.ones((3, 10)))
