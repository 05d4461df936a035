"""The end-to-end demo at a tiny size: table layout, finite model scores, saved outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from citevae.demo import METHODS, METRIC_COLUMNS, run_demo


def test_run_demo_tiny(tmp_path):
    table = run_demo(out_dir=tmp_path, epochs=2, seed=0, n_genes=40, n_targets=5, n_pairs=5,
                     n_cells_per_condition=30, n_programs=3, n_hidden=32, progress_bar=False)
    assert list(table.index) == list(METHODS)
    assert list(table.columns) == list(METRIC_COLUMNS)
    assert not table.loc["CiteVAE"].isna().any()
    assert not table.loc["additive"].isna().any()
    # the control baseline predicts no change: its error metrics exist, its correlations cannot
    assert np.isfinite(table.loc["control_mean", ["mse_top20", "energy_distance"]]).all()
    assert table.loc["control_mean", ["pearson_delta", "pearson_delta_top20"]].isna().all()
    assert table.attrs["n_pairs"] == 2  # 30% of 5 pairs
    assert (table["energy_distance"] >= -1e-9).all() and (table["mse_top20"] >= 0).all()

    saved = pd.read_csv(tmp_path / "metrics.csv", index_col="method")
    pd.testing.assert_frame_equal(saved, table, check_exact=False, check_names=False)
    per_pair = pd.read_csv(tmp_path / "metrics_per_pair.csv")
    assert len(per_pair) == 2 * len(METHODS)
    assert (tmp_path / "model").is_dir() and (tmp_path / "predictions.h5ad").is_file()
