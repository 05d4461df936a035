"""Tests of citevae.module.distances: hand-computed values and invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from citevae.errors import CiteVAEError
from citevae.module.distances import (
    DEFAULT_BANDWIDTH_MULTIPLIERS,
    energy_distance,
    mmd,
    pairwise_sq_dists,
)


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def test_pairwise_sq_dists_matches_direct_formula():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 3)) + 100.0, rng.normal(size=(4, 3)) + 100.0
    expected = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(pairwise_sq_dists(_t(x), _t(y)).numpy(), expected, atol=1e-9)


def test_duplicates_at_exactly_zero_distance_in_float32():
    rng = np.random.default_rng(6)
    x = torch.as_tensor(np.log1p(rng.poisson(3.0, size=(50, 500))), dtype=torch.float32)
    assert (pairwise_sq_dists(x, x.clone()).diagonal() == 0).all()
    assert float(energy_distance(x, x.clone())) == 0.0
    y = torch.as_tensor(np.log1p(rng.poisson(3.3, size=(40, 500))), dtype=torch.float64)
    e64 = float(energy_distance(x.double(), y))
    assert float(energy_distance(x, y.float())) == pytest.approx(e64, rel=1e-4)


def test_energy_1d_hand_computed():
    # x = {0, 1}, y = {3}: E|X-Y| = (3 + 2) / 2 = 2.5, E|X-X'| = (0 + 1 + 1 + 0) / 4 = 0.5, E|Y-Y'| = 0
    value = energy_distance(_t([[0.0], [1.0]]), _t([[3.0]]))
    assert float(value) == pytest.approx(2 * 2.5 - 0.5 - 0.0, abs=1e-12)


def test_energy_1d_equals_scipy_squared():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=7), rng.normal(1.0, 2.0, size=5)
    ours = float(energy_distance(_t(a[:, None]), _t(b[:, None])))
    assert ours == pytest.approx(scipy.stats.energy_distance(a, b) ** 2, rel=1e-10)


def test_energy_2d_hand_computed():
    # x = {(0,0)}, y = {(3,4)}: 2 * 5 - 0 - 0
    assert float(energy_distance(_t([[0.0, 0.0]]), _t([[3.0, 4.0]]))) == pytest.approx(10.0)


def test_identical_sets_give_zero():
    rng = np.random.default_rng(2)
    x = _t(rng.normal(size=(20, 6)))
    assert float(energy_distance(x, x.clone())) == 0.0
    assert abs(float(mmd(x, x.clone()))) < 1e-12


@pytest.mark.parametrize("fn", [energy_distance, mmd])
def test_symmetric_and_nonnegative(fn):
    rng = np.random.default_rng(3)
    x, y = _t(rng.normal(size=(9, 4))), _t(rng.normal(0.5, 1.0, size=(13, 4)))
    assert float(fn(x, y)) == pytest.approx(float(fn(y, x)), rel=1e-12)
    assert float(fn(x, y)) > 0.0


def test_mmd_hand_computed_single_points_fixed_bandwidth():
    # one point each at distance 1, bandwidth s = 1: k(a,a) = 1, k(a,b) = exp(-1/2)
    value = mmd(_t([[0.0]]), _t([[1.0]]), bandwidths=[1.0])
    assert float(value) == pytest.approx(2.0 - 2.0 * math.exp(-0.5), rel=1e-12)
    # two bandwidths sum their kernels
    value = mmd(_t([[0.0]]), _t([[1.0]]), bandwidths=[1.0, 2.0])
    expected = (2.0 - 2.0 * math.exp(-0.5)) + (2.0 - 2.0 * math.exp(-1.0 / 8.0))
    assert float(value) == pytest.approx(expected, rel=1e-12)


def test_mmd_default_bandwidth_is_median_multiple():
    # pooled {0, 1} U {3}: distances 1, 3, 2 -> median 2
    x, y = _t([[0.0], [1.0]]), _t([[3.0]])
    fixed = mmd(x, y, bandwidths=[2.0 * m for m in DEFAULT_BANDWIDTH_MULTIPLIERS])
    assert float(mmd(x, y)) == pytest.approx(float(fixed), rel=1e-12)


def test_mmd_unbiased_hand_computed():
    # x = {0, 0}, y = {1, 1}, s = 1: off-diagonal K_xx = K_yy = 1, K_xy = exp(-1/2)
    x, y = _t([[0.0], [0.0]]), _t([[1.0], [1.0]])
    value = mmd(x, y, bandwidths=[1.0], unbiased=True)
    assert float(value) == pytest.approx(2.0 - 2.0 * math.exp(-0.5), rel=1e-12)


def test_mmd_grows_with_shift():
    rng = np.random.default_rng(4)
    x = _t(rng.normal(size=(30, 3)))
    base = _t(rng.normal(size=(30, 3)))
    small = float(mmd(x, base + 0.5, bandwidths=[1.0, 2.0]))
    large = float(mmd(x, base + 3.0, bandwidths=[1.0, 2.0]))
    assert large > small > 0.0


@pytest.mark.parametrize("fn", [energy_distance, mmd])
def test_gradients_finite_with_duplicate_rows(fn):
    x = torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, 3.0]], requires_grad=True)
    y = torch.tensor([[0.0, 1.0], [1.0, 1.0]], requires_grad=True)
    fn(x, y).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    assert x.grad.abs().sum() > 0


def test_energy_gradient_matches_finite_difference():
    rng = np.random.default_rng(5)
    x = _t(rng.normal(size=(4, 2))).requires_grad_(True)
    y = _t(rng.normal(size=(3, 2)))
    energy_distance(x, y).backward()
    eps, num = 1e-6, np.zeros((4, 2))
    for i in range(4):
        for j in range(2):
            xp, xm = x.detach().clone(), x.detach().clone()
            xp[i, j] += eps
            xm[i, j] -= eps
            num[i, j] = (float(energy_distance(xp, y)) - float(energy_distance(xm, y))) / (2 * eps)
    np.testing.assert_allclose(x.grad.numpy(), num, atol=1e-6)


def test_float32_works():
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    assert energy_distance(x, x + 1).dtype == torch.float32
    assert torch.isfinite(mmd(x, x + 1))


@pytest.mark.parametrize(
    ("x", "y"),
    [
        (torch.zeros(3), torch.zeros(2, 1)),  # 1-D
        (torch.zeros(0, 2), torch.zeros(2, 2)),  # empty
        (torch.zeros(3, 2), torch.zeros(2, 3)),  # feature mismatch
        (torch.zeros(3, 2, dtype=torch.int64), torch.zeros(2, 2, dtype=torch.int64)),
        (torch.zeros(3, 2), torch.zeros(2, 2, dtype=torch.float64)),
    ],
)
def test_bad_inputs_raise(x, y):
    with pytest.raises(CiteVAEError):
        energy_distance(x, y)
    with pytest.raises(CiteVAEError):
        mmd(x, y)


def test_bad_bandwidths_and_unbiased_with_one_sample_raise():
    x = torch.zeros(3, 2)
    with pytest.raises(CiteVAEError, match="bandwidths"):
        mmd(x, x, bandwidths=[1.0, 0.0])
    with pytest.raises(CiteVAEError, match="unbiased"):
        mmd(x[:1], x, unbiased=True)
