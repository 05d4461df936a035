"""Tests of citevae.metrics.expression: hand-computed values, NaN policy, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from citevae.errors import CiteVAEError
from citevae.metrics import (
    mse,
    pearson,
    pearson_delta,
    pearson_delta_systema,
    perturbed_centroid,
    sign_agreement,
)


def test_pearson_hand_computed():
    # centred a = (-1, 0, 1), b = (-1, 1, 0): dot 1, norms sqrt2 * sqrt2 -> 0.5
    assert pearson(np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0])) == pytest.approx(0.5)
    assert pearson(np.array([1.0, 2.0, 3.0]), np.array([6.0, 4.0, 2.0])) == pytest.approx(-1.0)


def test_pearson_matches_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert pearson(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1], rel=1e-12)


def test_pearson_delta_hand_computed():
    control = np.array([1.0, 1.0, 1.0, 1.0])
    true = np.array([2.0, 1.0, 0.0, 1.0])  # delta (1, 0, -1, 0)
    pred = np.array([3.0, 0.0, 1.0, 0.0])  # delta (2, -1, 0, -1)
    # both deltas have mean 0, so centred = deltas; dot 2; norms sqrt2, sqrt6 -> 1/sqrt3
    assert pearson_delta(pred, true, control) == pytest.approx(1.0 / math.sqrt(3.0))
    # genes (0, 2): deltas (1, -1) and (2, 0) -> centred (1, -1), (1, -1) -> 1
    assert pearson_delta(pred, true, control, genes=[0, 2]) == pytest.approx(1.0)
    mask = np.array([True, False, True, False])
    assert pearson_delta(pred, true, control, genes=mask) == pytest.approx(1.0)


def test_pearson_delta_invariant_to_scaling_prediction_delta():
    rng = np.random.default_rng(1)
    control, true = rng.normal(size=30), rng.normal(size=30)
    pred = control + 3.0 * (true - control)
    assert pearson_delta(pred, true, control) == pytest.approx(1.0, abs=1e-12)


def test_constant_delta_gives_nan():
    control = np.array([1.0, 2.0, 3.0])
    true = np.array([2.0, 2.5, 1.0])
    assert math.isnan(pearson_delta(control.copy(), true, control))  # prediction = control
    assert math.isnan(pearson_delta(control + 0.1, true, control))  # constant shift up to rounding
    assert math.isnan(pearson(np.ones(4), np.arange(4.0)))


def test_nan_input_propagates():
    a = np.array([1.0, np.nan, 3.0])
    assert math.isnan(pearson_delta(a, np.arange(3.0), np.zeros(3)))


def test_systema_uses_centroid_as_reference():
    train_means = np.array([[1.0, 0.0, 2.0, 0.0], [3.0, 2.0, 0.0, 0.0]])
    centroid = perturbed_centroid(train_means)
    np.testing.assert_allclose(centroid, [2.0, 1.0, 1.0, 0.0])
    true = np.array([3.0, 1.0, 1.0, 0.0])  # delta vs centroid (1, 0, 0, 0)
    pred = np.array([2.0, 2.0, 1.0, 0.0])  # delta vs centroid (0, 1, 0, 0)
    # centred (3/4, -1/4, -1/4, -1/4) and (-1/4, 3/4, -1/4, -1/4): dot -1/4, norms^2 3/4 -> -1/3
    assert pearson_delta_systema(pred, true, centroid) == pytest.approx(-1.0 / 3.0)
    assert pearson_delta_systema(pred, true, centroid) == pearson_delta(pred, true, centroid)


def test_mse_hand_computed():
    pred, true = np.array([1.0, 2.0, 3.0]), np.array([1.0, 4.0, 0.0])
    assert mse(pred, true) == pytest.approx((0.0 + 4.0 + 9.0) / 3.0)
    assert mse(pred, true, genes=[1]) == pytest.approx(4.0)


def test_sign_agreement_hand_computed():
    control = np.zeros(5)
    true = np.array([1.0, -1.0, 2.0, 0.0, -3.0])
    pred = np.array([0.5, 1.0, 0.1, 0.0, -0.2])  # agree on genes 0, 2, 3 (both 0), 4
    assert sign_agreement(pred, true, control) == pytest.approx(4.0 / 5.0)
    assert sign_agreement(pred, true, control, genes=[1, 2]) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "call",
    [
        lambda: pearson_delta(np.zeros(3), np.zeros(4), np.zeros(3)),  # length mismatch
        lambda: pearson_delta(np.zeros((2, 3)), np.zeros(3), np.zeros(3)),  # 2-D
        lambda: mse(np.array([]), np.array([])),  # empty
        lambda: mse(np.zeros(3), np.zeros(3), genes=[]),  # no gene selected
        lambda: mse(np.zeros(3), np.zeros(3), genes=[3]),  # out of range
        lambda: mse(np.zeros(3), np.zeros(3), genes=[-1]),  # negative
        lambda: mse(np.zeros(3), np.zeros(3), genes=np.array([True, False])),  # mask length
        lambda: mse(np.zeros(3), np.zeros(3), genes=[0.5]),  # not integers
        lambda: perturbed_centroid(np.zeros(3)),  # not (P, G)
    ],
)
def test_bad_inputs_raise(call):
    with pytest.raises(CiteVAEError):
        call()
