"""End-to-end demo: simulate counts, hold out pairs, train CiteVAE, compare with two baselines.

``run_demo`` simulates an unpaired Perturb-seq-like data set (``citevae.sim.simulate_counts``), holds
out 30% of the target pairs (``citevae.data.split_combinations``), trains CiteVAE on the training
and validation cells, predicts every held-out pair from the TEST control cells and scores the
predictions against the real held-out cells on the log1p-normalised scale, next to two baselines of
``citevae.baselines`` fitted on the same training cells:

- ``control_mean``: no change (the test control cells themselves);
- ``additive``: test control cells shifted by the sum of the two single-target training deltas.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from citevae import metrics
from citevae._settings import set_num_threads
from citevae.baselines import get_baseline
from citevae.data import get_registry, split_combinations
from citevae.data.descriptors import log1p_normalised
from citevae.model import CiteVAE
from citevae.sim import simulate_counts

METHODS = ("CiteVAE", "additive", "control_mean")
"""Rows of the demo table, in order."""
METRIC_COLUMNS = ("pearson_delta", "pearson_delta_top20", "mse_top20", "energy_distance")
"""Columns of the demo table: means over held-out pairs."""
N_TOP_DE = 20
ENERGY_MAX_CELLS = 500
NO_CHANGE_TOL = 1e-5
"""Mean changes smaller than this (log1p units) count as zero: correlations of no change are NaN."""


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def log1p_normalise(counts, library_scale: float) -> np.ndarray:
    """log1p(x / total * library_scale) per cell; counts (cells, G) -> dense float64 (cells, G)."""
    return log1p_normalised(_dense(counts), "counts", library_scale)


def _baseline_predictions(
    adata: AnnData, train: np.ndarray, controls: AnnData, pairs: list[str], canonical: list[str],
) -> dict[str, dict[str, np.ndarray]]:
    """Predicted log1p cells per baseline and pair (``citevae.baselines``, fitted on ``train``)."""
    key = get_registry(adata).perturbation_key
    out = {}
    for name in ("additive", "control_mean"):
        result = get_baseline(name).fit(adata, train).predict(controls, canonical)
        values, labels = _dense(result.X), result.obs[key].astype(str).to_numpy()
        out[name] = {p: values[labels == c] for p, c in zip(pairs, canonical, strict=True)}
    return out


def _score(
    pred: np.ndarray, true: np.ndarray, control_mean: np.ndarray, de: np.ndarray,
    pca: metrics.PCAProjection, seed: int,
) -> dict[str, float]:
    pred_mean, true_mean = pred.mean(0), true.mean(0)
    # float32 round-off of an unchanged gene is no predicted change (keeps "no change" constant)
    pred_mean = np.where(np.abs(pred_mean - control_mean) < NO_CHANGE_TOL, control_mean, pred_mean)
    return {
        "pearson_delta": metrics.pearson_delta(pred_mean, true_mean, control_mean),
        "pearson_delta_top20": metrics.pearson_delta(pred_mean, true_mean, control_mean, genes=de),
        "mse_top20": metrics.mse(pred_mean, true_mean, genes=de),
        "energy_distance": metrics.energy_distance_pca(pred, true, pca, max_cells=ENERGY_MAX_CELLS,
                                                       seed=seed),
    }


def run_demo(
    out_dir: str | Path | None = None,
    epochs: int = 60,
    seed: int = 0,
    *,
    n_genes: int = 200,
    n_targets: int = 10,
    n_pairs: int = 10,
    n_cells_per_condition: int = 150,
    n_programs: int = 8,
    n_hidden: int = 128,
    progress_bar: bool = True,
    num_threads: int | None = None,
) -> pd.DataFrame:
    """Simulate, hold out target pairs, train CiteVAE and score it against two baselines.

    Args:
        out_dir: if given, the model ("model/"), predictions ("predictions.h5ad", log1p layer),
            the table ("metrics.csv") and per-pair scores ("metrics_per_pair.csv") are written here.
        epochs: training epochs. seed: seed of the simulation, split and training.
        n_genes, n_targets, n_pairs, n_cells_per_condition: simulation size (``simulate_counts``).
        n_programs, n_hidden: CiteVAE size. progress_bar: show Lightning's progress bar.
        num_threads: torch threads (default ``citevae.set_num_threads``'s, 1).

    Returns:
        DataFrame indexed by method ("CiteVAE", "additive", "control_mean") with the means over
        held-out pairs of pearson_delta (all genes), pearson_delta_top20, mse_top20 (top-20 DE
        genes vs test control cells) and energy_distance (50-PC space fitted on training cells).
        ``attrs`` holds "n_pairs", "seconds" (whole run) and "train_seconds".
    """
    start = time.perf_counter()
    set_num_threads(num_threads)
    adata = simulate_counts(n_genes=n_genes, n_targets=n_targets, n_pairs=n_pairs,
                            n_cells_per_condition=n_cells_per_condition, seed=seed)
    CiteVAE.setup_anndata(adata, perturbation_key="perturbation", control="control",
                          covariate_keys=["cell_type"])
    registry = get_registry(adata)
    split = split_combinations(adata, seed=seed, fraction=0.3)
    train, test = split.mask("train"), split.mask("test")

    model = CiteVAE(adata, n_programs=n_programs, n_hidden=n_hidden)
    t_train = time.perf_counter()
    model.train(max_epochs=epochs, split=split, seed=seed, progress_bar=progress_bar,
                num_threads=num_threads)
    train_seconds = time.perf_counter() - t_train

    labels = adata.obs["perturbation"].astype(str).to_numpy()
    test_control_mask = test & (labels == "control")
    pairs = sorted({lab for lab in labels[test] if lab != "control"})
    canonical = [registry.vocabulary.canonical(p) for p in pairs]
    controls = adata[test_control_mask].copy()
    prediction = model.predict(controls, canonical)

    library_scale = model.config.library_scale
    log_x = log1p_normalise(adata.X, library_scale)
    pca = metrics.fit_pca(log_x[train], n_components=50, seed=seed)
    log_adata = AnnData(log_x, obs=adata.obs[["perturbation"]].copy())
    control_mean = log_x[test_control_mask].mean(0)

    pred_log = _dense(prediction.layers["log1p"])
    pred_labels = prediction.obs["perturbation"].astype(str).to_numpy()
    preds = {"CiteVAE": {p: pred_log[pred_labels == c] for p, c in zip(pairs, canonical, strict=True)}}
    preds.update(_baseline_predictions(adata, train, controls, pairs, canonical))

    rows = []
    for pair in pairs:
        true = log_x[test & (labels == pair)]
        de = metrics.top_de_genes(log_adata, "perturbation", pair, "control", n=N_TOP_DE,
                                  mask=test)
        for method in METHODS:
            rows.append({"method": method, "perturbation": pair,
                         **_score(preds[method][pair], true, control_mean, de, pca, seed)})
    per_pair = pd.DataFrame(rows)
    table = per_pair.groupby("method")[list(METRIC_COLUMNS)].mean().reindex(list(METHODS))
    table.index.name = "method"
    table.attrs.update({"n_pairs": len(pairs),
                        "train_seconds": train_seconds, "seconds": time.perf_counter() - start})

    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.save(out / "model", overwrite=True)
        prediction.write_h5ad(out / "predictions.h5ad")
        table.to_csv(out / "metrics.csv")
        per_pair.to_csv(out / "metrics_per_pair.csv", index=False)
    return table
