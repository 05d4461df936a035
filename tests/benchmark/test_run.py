"""Benchmark runner, tables and the ``citevae benchmark`` command: synthetic scores for the tables,
seconds-long end-to-end runs on subsets of the real data (1 epoch)."""

from __future__ import annotations

import importlib
import importlib.util

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import citevae.data
import citevae.sim
from citevae.benchmark.run import CITEVAE, run_split
from citevae.benchmark.suites import run_suite
from citevae.benchmark.tables import (
    TABLE_METRICS,
    compact_table,
    markdown_table,
    summary_table,
    verdict,
    write_tables,
)
from citevae.cli import app
from citevae.model.citevae import CiteVAE

METRICS = list(TABLE_METRICS)


def _scores() -> pd.DataFrame:
    """Two seeds, two units; CITE-VAE best on pearson metrics and mse, additive on energy."""
    rows = []
    values = {CITEVAE: (0.8, 0.7, 0.02, 0.30, 0.5), "additive": (0.7, 0.6, 0.03, 0.20, 0.4),
              "control_mean": (0.0, 0.0, 0.10, 0.90, 0.1)}
    for seed in (0, 1):
        for unit in ("A+B", "C+D"):
            for method, base in values.items():
                shift = 0.01 * seed
                rows.append({"suite": "toy", "method": method, "unit": unit, "group": "combo_seen2",
                             "seed": seed, **dict(zip(METRICS, np.add(base, shift), strict=True))})
    return pd.DataFrame(rows)


def test_summary_mean_and_std_over_seeds():
    summary = summary_table(_scores())
    row = summary[(summary.method == CITEVAE)].iloc[0]
    assert row["pearson_delta_mean"] == pytest.approx(0.805)
    assert row["pearson_delta_std"] == pytest.approx(np.std([0.8, 0.81], ddof=1))
    assert row["n_seeds"] == 2 and row["n_units_min"] == row["n_units_max"] == 2
    assert summary.method.iloc[0] == CITEVAE  # the model first


def test_units_counted_per_seed_when_seeds_hold_out_different_units():
    scores = _scores()
    scores.loc[scores.seed == 1, "unit"] += "-other"  # another split: other held-out units
    scores = pd.concat([scores, scores[(scores.seed == 1) & (scores.unit == "A+B-other")]
                        .assign(unit="E+F")])  # and one more of them
    row = summary_table(scores).query("method == @CITEVAE").iloc[0]
    assert (row["n_units_min"], row["n_units_max"]) == (2, 3)
    assert "(2 seed(s), 2-3 held-out unit(s) per seed)" in markdown_table(scores)


def test_markdown_bolds_best_per_column_and_gives_verdict():
    text = markdown_table(_scores())
    model = next(line for line in text.splitlines() if line.startswith("| CITE-VAE"))
    additive = next(line for line in text.splitlines() if line.startswith("| additive"))
    assert "**0.805 ± 0.007**" in model  # pearson_delta, higher is better
    assert "**0.025 ± 0.007**" in model  # mse_top20_de, lower is better
    assert "**0.205 ± 0.007**" in additive  # energy_distance, lower is better
    assert "0.305 ± 0.007" in model and "**0.305" not in model
    line = verdict(summary_table(_scores()), "toy")
    assert line.startswith("toy: CITE-VAE ahead of the best baseline on pearson_delta_top20_de")
    assert "mse_top20_de (0.025 vs additive 0.035)" in line
    assert "not yet ahead on energy_distance (0.305 vs additive 0.205)" in line
    assert f"- {line}" in text


def test_compact_table_one_row_per_method_with_bold_best():
    lines = compact_table(_scores()).splitlines()
    assert len(lines) == 2 + 3  # header, rule, one row per method
    assert lines[2].startswith("| toy (combo_seen2) | CITE-VAE | **0.805 ± 0.007** |")
    assert "**0.205 ± 0.007**" in next(line for line in lines if "| additive |" in line)


def test_all_group_and_single_seed(tmp_path):
    scores = _scores()
    scores.loc[scores.unit == "C+D", "group"] = "combo_seen1"
    one = scores[scores.seed == 0]
    summary = summary_table(one)
    assert set(summary.group) == {"combo_seen1", "combo_seen2", "all"}
    assert summary["pearson_delta_std"].isna().all()
    text = markdown_table(one)
    assert " ± 0" not in text and "### all" in text
    md, csv = write_tables(one, tmp_path)
    assert md.read_text() == text
    assert len(pd.read_csv(csv)) == len(summary)


def test_run_suite_end_to_end_on_a_subset(shared_data):
    scores = run_suite("k562_unseen_singles", shared_data, seeds=[0], epochs=1, cells_per_group=15)
    assert set(scores.method) == {CITEVAE, "control_mean", "training_mean", "linear"}
    assert {"unseen_single"} <= set(scores.group)
    assert (scores.suite == "k562_unseen_singles").all() and (scores.seed == 0).all()
    for metric in ("mse_top20_de", "energy_distance", "pearson_delta_systema"):
        assert np.isfinite(scores[metric]).all(), metric
    # correlations of a predicted change; control_mean predicts none (n/a by design)
    changing = scores[scores.method.isin([CITEVAE, "linear", "training_mean"])]
    assert np.isfinite(changing["pearson_delta"]).all()


def test_cli_benchmark_writes_files(shared_data, tmp_path):
    out = tmp_path / "bench"
    result = CliRunner().invoke(app, ["benchmark", "hsmm_interpolation", "--data-dir",
                                      str(shared_data), "--seeds", "0", "--epochs", "1",
                                      "--no-progress", "--cell-eval", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("scores.csv", "table.md", "table.csv", "cell_eval/summary.csv"):
        assert (out / name).is_file(), name
    split = out / "cell_eval" / "hsmm_interpolation_seed0"
    for method in ("real", CITEVAE, "nearest_time"):
        assert list(split.glob(f"{method}_*.h5ad")), method
    summary = pd.read_csv(out / "cell_eval" / "summary.csv")
    assert set(summary.method) == {CITEVAE, "control_mean", "nearest_time", "linear_interpolation"}
    assert (summary.suite == "hsmm_interpolation").all() and "pearson_delta" in summary
    report = importlib.util.find_spec("citevae.benchmark.report")
    if report is not None and hasattr(importlib.import_module(report.name), "write_report"):
        assert (out / "report.html").is_file()
    scores = pd.read_csv(out / "scores.csv")
    assert set(scores.method) == {CITEVAE, "control_mean", "nearest_time", "linear_interpolation"}
    assert "hsmm_interpolation" in result.output


def test_cli_benchmark_one_line_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["benchmark", "nope", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: unknown suite(s) nope")
    result = runner.invoke(app, ["benchmark", "--data-dir", str(tmp_path / "absent")])
    assert result.exit_code == 1 and "data folder not found" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_run_split_model_seed_changes_only_the_trained_model():
    adata = citevae.sim.simulate_counts(n_genes=30, n_targets=3, n_pairs=2,
                                        n_cells_per_condition=20, seed=0)
    CiteVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
    split = citevae.data.split_combinations(adata, seed=0)

    def scores(**kwargs):
        table, _ = run_split(adata, split, seed=0, baselines=["additive"],
                             model_options={"n_hidden": 16}, train_options={"max_epochs": 1},
                             **kwargs)
        return table.set_index(["method", "unit"])[METRICS]

    default, same, other = scores(), scores(model_seed=0), scores(model_seed=5)
    pd.testing.assert_frame_equal(default, same)
    pd.testing.assert_frame_equal(default.loc["additive"], other.loc["additive"])
    assert not np.allclose(default.loc[CITEVAE].to_numpy(), other.loc[CITEVAE].to_numpy())
