"""Tests of citevae.metrics.registry: the metric registry and evaluate_perturbation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from citevae.errors import CiteVAEError
from citevae.metrics import (
    MEAN_METRICS,
    N_TOP_DE,
    evaluate_perturbation,
    fit_pca,
    get_metric,
    mse,
    pearson_delta,
    register_metric,
    sign_agreement,
)


def _cells(seed: int = 0, n_genes: int = 30):
    rng = np.random.default_rng(seed)
    control = rng.normal(size=(40, n_genes))
    effect = rng.normal(size=n_genes)
    true = rng.normal(size=(35, n_genes)) + effect
    pred = rng.normal(size=(25, n_genes)) + 0.8 * effect
    return pred, true, control


def test_hand_computed_two_gene_case():
    control = np.array([[0.0, 0.0], [2.0, 2.0]])  # mean (1, 1)
    true = np.array([[3.0, 0.0]])  # delta (2, -1)
    pred = np.array([[2.0, 1.0], [2.0, 0.0]])  # mean (2, 0.5), delta (1, -0.5)
    out = evaluate_perturbation(pred, true, control, de_genes=[1, 0])
    assert out["pearson_delta"] == pytest.approx(1.0)
    assert out["pearson_delta_top20_de"] == pytest.approx(1.0)
    assert out["mse_top20_de"] == pytest.approx((1.0**2 + 0.5**2) / 2)
    assert out["sign_agreement_top20_de"] == 1.0
    assert set(out) == {
        "pearson_delta", "pearson_delta_top20_de", "mse_top20_de", "sign_agreement_top20_de"
    }  # fmt: skip


def test_values_equal_individual_metrics_and_de_truncation():
    pred, true, control = _cells()
    de = np.arange(29, -1, -1)  # 30 genes ranked; only the first N_TOP_DE count
    centroid = np.random.default_rng(1).normal(size=30)
    pca = fit_pca(np.vstack([control, true]), n_components=5)
    out = evaluate_perturbation(pred, true, control, de, perturbed_centroid=centroid, pca=pca)
    pm, tm, cm = pred.mean(0), true.mean(0), control.mean(0)
    top = de[:N_TOP_DE]
    assert out["pearson_delta"] == pytest.approx(pearson_delta(pm, tm, cm))
    assert out["pearson_delta_top20_de"] == pytest.approx(pearson_delta(pm, tm, cm, top))
    assert out["mse_top20_de"] == pytest.approx(mse(pm, tm, top))
    assert out["mse_top20_de"] != pytest.approx(mse(pm, tm, de))
    assert out["sign_agreement_top20_de"] == pytest.approx(sign_agreement(pm, tm, cm, top))
    assert out["pearson_delta_systema"] == pytest.approx(pearson_delta(pm, tm, centroid))
    assert out["energy_distance"] > 0.0 and out["mmd"] > 0.0


def test_perfect_prediction():
    _, true, control = _cells(2)
    pca = fit_pca(control, n_components=4)
    out = evaluate_perturbation(true.copy(), true, control, np.arange(20), pca=pca)
    assert out["pearson_delta"] == pytest.approx(1.0)
    assert out["mse_top20_de"] == 0.0
    assert out["sign_agreement_top20_de"] == 1.0
    assert out["energy_distance"] == 0.0
    assert abs(out["mmd"]) < 1e-12


def test_control_as_prediction_gives_nan_pearson():
    _, true, control = _cells(3)
    out = evaluate_perturbation(control.copy(), true, control, None)
    assert set(out) == {"pearson_delta"} and math.isnan(out["pearson_delta"])


def test_registry_lookup_and_registration():
    assert {"pearson_delta", "mse", "sign_agreement"} <= set(MEAN_METRICS)
    v = np.array([1.0, 2.0, 4.0])
    assert get_metric("mse")(v, np.zeros(3), np.ones(3), [2]) == pytest.approx(16.0)
    with pytest.raises(CiteVAEError, match="known"):
        get_metric("nope")
    with pytest.raises(CiteVAEError, match="already"):
        register_metric("mse", lambda p, t, r, g: 0.0)
    try:
        register_metric("max_abs_error", lambda p, t, r, g: float(np.max(np.abs(p - t))))
        assert get_metric("max_abs_error")(v, np.zeros(3), v, None) == 4.0
    finally:
        MEAN_METRICS.pop("max_abs_error", None)


def test_errors():
    pred, true, control = _cells()
    with pytest.raises(CiteVAEError, match="gene count"):
        evaluate_perturbation(pred[:, :5], true, control, None)
    with pytest.raises(CiteVAEError, match="empty"):
        evaluate_perturbation(pred[:0], true, control, None)
    with pytest.raises(CiteVAEError, match="perturbed_centroid"):
        evaluate_perturbation(pred, true, control, None, perturbed_centroid=np.zeros(3))
    with pytest.raises(CiteVAEError, match="genes"):
        evaluate_perturbation(pred, true, control, [])
