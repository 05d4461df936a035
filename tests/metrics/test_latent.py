"""Tests of citevae.metrics.latent: MCC and per-factor R^2."""

from __future__ import annotations

import math

import numpy as np
import pytest

from citevae.errors import CiteVAEError
from citevae.metrics import abs_correlation_matrix, class_accuracy_heldout, mcc, r2_heldout, r2_per_factor


def test_mcc_hand_computed_2x2():
    # t1 = (1,2,3), t2 = (1,3,2); l1 = (0,1,0), l2 = (3,2,1)
    # |corr|: t1-l1 0, t1-l2 1, t2-l1 sqrt(3)/2, t2-l2 1/2 -> match t1->l2, t2->l1
    z_true = np.array([[1.0, 1.0], [2.0, 3.0], [3.0, 2.0]])
    z_learned = np.array([[0.0, 3.0], [1.0, 2.0], [0.0, 1.0]])
    np.testing.assert_allclose(
        abs_correlation_matrix(z_true, z_learned), [[0.0, 1.0], [math.sqrt(3) / 2, 0.5]], atol=1e-15
    )
    value, matching = mcc(z_true, z_learned, return_matching=True)
    assert value == pytest.approx((1.0 + math.sqrt(3) / 2) / 2, abs=1e-12)
    np.testing.assert_array_equal(matching, [1, 0])


def test_mcc_permuted_rescaled_sign_flipped_copy_is_one():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 4))
    perm = np.array([2, 0, 3, 1])
    scales = np.array([-3.0, 0.5, 10.0, -0.01])
    extra = rng.normal(size=(300, 2))  # more learned dims than true ones
    z_learned = np.hstack([z[:, perm] * scales + 7.0, extra])
    value, matching = mcc(z, z_learned, return_matching=True)
    assert abs(value - 1.0) < 1e-12
    # true dim i sits in learned column j where perm[j] == i
    np.testing.assert_array_equal(matching, np.argsort(perm))


def test_mcc_matches_distinct_dims_when_greedy_would_collide():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(500, 2))
    # learned column 0 correlates ~0.7 with both true dims; columns 1, 2 are exact copies
    z_learned = np.column_stack([z[:, 0] + z[:, 1], z[:, 0], z[:, 1]])
    value, matching = mcc(z, z_learned, return_matching=True)
    np.testing.assert_array_equal(matching, [1, 2])
    assert len(set(matching.tolist())) == 2
    assert value == pytest.approx(1.0, abs=1e-12)


def test_mcc_independent_noise_is_low():
    rng = np.random.default_rng(2)
    value = mcc(rng.normal(size=(2000, 3)), rng.normal(size=(2000, 3)))
    assert 0.0 <= value < 0.1


def test_mcc_constant_dim_counts_as_zero_not_nan():
    z = np.array([[1.0], [2.0], [3.0]])
    learned = np.array([[5.0, 1.0], [5.0, 2.0], [5.0, 4.0]])
    corr = abs_correlation_matrix(z, learned)
    assert corr[0, 0] == 0.0 and np.isfinite(corr).all()
    _, matching = mcc(z, learned, return_matching=True)
    assert matching.tolist() == [1]


def test_mcc_errors():
    z = np.zeros((10, 3))
    with pytest.raises(CiteVAEError, match="fewer"):
        mcc(np.random.default_rng(0).normal(size=(10, 3)), np.ones((10, 2)))
    with pytest.raises(CiteVAEError, match="cells"):
        mcc(z, np.zeros((9, 3)))
    with pytest.raises(CiteVAEError):
        mcc(np.zeros((1, 3)), np.zeros((1, 3)))


def test_r2_linear_representation_is_near_one():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(400, 3))
    rep = z @ rng.normal(size=(3, 5)) + 2.0  # full column rank, linear
    r2 = r2_per_factor(z, rep, seed=0)
    assert r2.shape == (3,)
    assert np.all(r2 > 0.999) and np.all(r2 <= 1.0)


def test_r2_separates_decodable_from_missing_factors():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(400, 2))
    rep = np.column_stack([2.0 * z[:, 0], rng.normal(size=400)])  # factor 1 not represented
    r2 = r2_per_factor(z, rep, seed=1)
    assert r2[0] > 0.999
    assert r2[1] < 0.05


def test_r2_deterministic_given_seed():
    rng = np.random.default_rng(5)
    z, rep = rng.normal(size=(100, 2)), rng.normal(size=(100, 4))
    np.testing.assert_array_equal(r2_per_factor(z, rep, seed=7), r2_per_factor(z, rep, seed=7))


def test_r2_errors():
    z = np.zeros((10, 2))
    with pytest.raises(CiteVAEError, match="cells"):
        r2_per_factor(z, np.zeros((9, 2)))
    with pytest.raises(CiteVAEError, match="test_fraction"):
        r2_per_factor(z, np.zeros((10, 2)), test_fraction=1.5)


def _split_factors(seed: int, n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    z = np.random.default_rng(seed).uniform(-1, 1, size=(n, 2))
    return z[: n // 2], z[n // 2 :]


def test_r2_heldout_nonlinear_decodable_vs_missing():
    z_tr, z_te = _split_factors(0)
    rng = np.random.default_rng(1)

    def rep(z):  # factor 0 through a monotone nonlinearity, factor 1 absent
        return np.column_stack([np.tanh(2 * z[:, 0]) ** 3, rng.normal(size=len(z))])

    r2 = r2_heldout(rep(z_tr), z_tr, rep(z_te), z_te)
    assert r2.shape == (2,)
    assert r2[0] > 0.95 and r2[1] < 0.05
    linear = r2_heldout(rep(z_tr), z_tr, rep(z_te), z_te, regressor="linear")
    assert linear[0] < r2[0]  # the kernel ridge undoes the nonlinearity, the linear ridge cannot


def test_r2_heldout_circular_factors_ignore_the_wrap():
    z_tr, z_te = _split_factors(2)

    def rep(z):  # an angle seen as a point on the circle: z = -1 and z = 1 look the same
        return np.column_stack([np.cos(np.pi * z[:, 0]), np.sin(np.pi * z[:, 0]), z[:, 1]])

    plain = r2_heldout(rep(z_tr), z_tr, rep(z_te), z_te)
    wrapped = r2_heldout(rep(z_tr), z_tr, rep(z_te), z_te, circular=np.array([True, False]))
    assert wrapped[0] > 0.98 and plain[0] < wrapped[0] - 0.02
    assert wrapped[1] == pytest.approx(plain[1])
    with pytest.raises(CiteVAEError, match="circular"):
        r2_heldout(rep(z_tr), z_tr, rep(z_te), z_te, circular=np.array([True]))
    with pytest.raises(CiteVAEError, match="dims"):
        r2_heldout(rep(z_tr), z_tr, rep(z_te)[:, :2], z_te)


def test_class_accuracy_heldout():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 400)
    centres = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    rep = centres[labels] + rng.normal(size=(400, 2)) * 0.3
    assert class_accuracy_heldout(rep[:200], labels[:200], rep[200:], labels[200:]) == 1.0
    noise = rng.normal(size=(400, 2))
    assert class_accuracy_heldout(noise[:200], labels[:200], noise[200:], labels[200:]) < 0.5
    with pytest.raises(CiteVAEError, match="rows"):
        class_accuracy_heldout(rep[:200], labels[:199], rep[200:], labels[200:])
