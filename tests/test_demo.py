"""The end-to-end demo at a tiny size: table layout, finite model scores, saved outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from citevae.demo import BASELINES, METRICS, run_demo


def test_run_demo_tiny(tmp_path):
    table = run_demo(out_dir=tmp_path, epochs=2, seed=0, n_genes=40, n_targets=5, n_pairs=5,
                     n_cells_per_condition=30, model_options={"n_programs": 3, "n_hidden": 32},
                     progress_bar=False)
    assert list(table.index) == ["citevae", *BASELINES]
    assert list(table.columns) == list(METRICS)
    assert not table.loc["citevae"].isna().any()
    assert not table.loc["additive"].isna().any()
    # the control baseline predicts no change: its error metrics exist, its correlations cannot
    assert np.isfinite(table.loc["control_mean", ["mse_top20_de", "energy_distance"]]).all()
    assert table.loc["control_mean", ["pearson_delta", "pearson_delta_top20_de"]].isna().all()
    assert table.attrs["n_pairs"] == 2  # 30% of 5 pairs
    assert (table["energy_distance"] >= -1e-9).all() and (table["mse_top20_de"] >= 0).all()

    saved = pd.read_csv(tmp_path / "metrics.csv", index_col=0)
    pd.testing.assert_frame_equal(saved, table, check_exact=False, check_names=False)
    per_pair = pd.read_csv(tmp_path / "metrics_per_pair.csv")
    assert len(per_pair) == 2 * (1 + len(BASELINES))
    assert (tmp_path / "model").is_dir() and (tmp_path / "predictions.h5ad").is_file()
