"""citevae.metrics: evaluation of predicted perturbation responses and of learned latents.

NumPy in, numbers out. Depends on ``citevae.module.distances`` only (never on training or model).
- ``expression``: mean-vector metrics (Pearson of deltas, Systema variant, MSE, sign agreement).
- ``de``: top differentially expressed genes (scanpy Wilcoxon).
- ``distribution``: energy distance and MMD between cell sets in a fixed PCA space.
- ``latent``: MCC and per-factor R^2 against ground-truth factors.
- ``registry``: named metrics with a uniform signature and ``evaluate_perturbation``.
"""

from citevae.metrics.de import top_de_genes
from citevae.metrics.distribution import PCAProjection, energy_distance_pca, fit_pca, mmd_pca
from citevae.metrics.expression import (
    mse,
    pearson,
    pearson_delta,
    pearson_delta_systema,
    perturbed_centroid,
    sign_agreement,
)
from citevae.metrics.latent import (
    abs_correlation_matrix,
    class_accuracy_heldout,
    mcc,
    r2_heldout,
    r2_per_factor,
)
from citevae.metrics.registry import (
    MEAN_METRICS,
    N_TOP_DE,
    MeanMetric,
    evaluate_perturbation,
    get_metric,
    register_metric,
)

__all__ = [
    "MEAN_METRICS",
    "N_TOP_DE",
    "MeanMetric",
    "PCAProjection",
    "abs_correlation_matrix",
    "class_accuracy_heldout",
    "energy_distance_pca",
    "evaluate_perturbation",
    "fit_pca",
    "get_metric",
    "mcc",
    "mmd_pca",
    "mse",
    "pearson",
    "pearson_delta",
    "pearson_delta_systema",
    "perturbed_centroid",
    "r2_heldout",
    "r2_per_factor",
    "register_metric",
    "sign_agreement",
    "top_de_genes",
]
