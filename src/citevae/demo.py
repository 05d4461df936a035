"""End-to-end demo: simulate counts, hold out pairs, train CiteVAE, compare with two baselines.

``run_demo`` simulates an unpaired Perturb-seq-like data set (``citevae.sim.simulate_counts``), holds
out 30% of the target pairs (``citevae.data.split_combinations``), trains CiteVAE on the training
and validation cells, predicts every held-out pair from the TEST control cells and scores the
predictions against the real held-out cells on the log1p-normalised scale, next to two baselines
fitted on the same training cells:

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
from citevae.data import get_registry, split_combinations
from citevae.model import CiteVAE
from citevae.sim import simulate_counts

METHODS = ("CiteVAE", "additive", "control_mean")
"""Rows of the demo table, in order."""
METRIC_COLUMNS = ("pearson_delta", "pearson_delta_top20", "mse_top20", "energy_distance")
"""Columns of the demo table: means over held-out pairs."""
N_TOP_DE = 20
ENERGY_MAX_CELLS = 500


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def log1p_normalise(counts, library_scale: float) -> np.ndarray:
    """log1p(x / total * library_scale) per cell; counts (cells, G) -> dense float64 (cells, G)."""
    x = _dense(counts)
    totals = np.maximum(x.sum(1, keepdims=True), 1e-12)
    return np.log1p(x / totals * library_scale)


def _additive_predictions(
    log_x: np.ndarray, labels: np.ndarray, train: np.ndarray, control: str, test_controls: np.ndarray,
    pairs: list[str], separator: str = "+",
) -> dict[str, np.ndarray]:
    """Private additive baseline: test controls + sum of single-target training deltas (log1p)."""
    base = log_x[train & (labels == control)].mean(0)
    out = {}
    for pair in pairs:
        shift = np.zeros_like(base)
        for target in pair.split(separator):
            cells = train & (labels == target)
            if cells.any():  # a target never seen alone in training contributes no shift
                shift += log_x[cells].mean(0) - base
        out[pair] = test_controls + shift
    return out


def _baseline_predictions(
    adata: AnnData, log_x: np.ndarray, labels: np.ndarray, train: np.ndarray, control: str,
    test_control_mask: np.ndarray, pairs: list[str], library_scale: float,
) -> dict[str, dict[str, np.ndarray]]:
    """Predicted log1p cells per method and pair for the two baselines."""
    test_controls = log_x[test_control_mask]
    preds = {"control_mean": {pair: test_controls for pair in pairs}}
    try:  # the package's baselines, when present
        from citevae.baselines import get_baseline
    except ImportError:
        get_baseline = None
    if get_baseline is not None:
        baseline = get_baseline("additive")
        baseline.fit(adata, train)
        result = baseline.predict(adata[test_control_mask].copy(), pairs)
        key = get_registry(adata).perturbation_key
        values = _dense(result.X)
        preds["additive"] = {pair: values[(result.obs[key].astype(str) == pair).to_numpy()]
                             for pair in pairs}
    else:
        preds["additive"] = _additive_predictions(log_x, labels, train, control, test_controls, pairs)
    return preds


def _score(
    pred: np.ndarray, true: np.ndarray, control_mean: np.ndarray, de: np.ndarray,
    pca: metrics.PCAProjection, seed: int,
) -> dict[str, float]:
    pred_mean, true_mean = pred.mean(0), true.mean(0)
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
    prediction = model.predict(adata[test_control_mask].copy(), canonical)

    library_scale = model.config.library_scale
    log_x = log1p_normalise(adata.X, library_scale)
    pca = metrics.fit_pca(log_x[train], n_components=50, seed=seed)
    log_adata = AnnData(log_x, obs=adata.obs[["perturbation"]].copy())
    control_mean = log_x[test_control_mask].mean(0)

    pred_log = _dense(prediction.layers["log1p"])
    pred_labels = prediction.obs["perturbation"].astype(str).to_numpy()
    preds = {"CiteVAE": {p: pred_log[pred_labels == c] for p, c in zip(pairs, canonical, strict=True)}}
    preds.update(_baseline_predictions(adata, log_x, labels, train, "control", test_control_mask, pairs,
                                       library_scale))

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
