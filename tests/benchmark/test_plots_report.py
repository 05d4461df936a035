"""Benchmark figures, the self-contained HTML report and its rendering in headless Chromium."""

from __future__ import annotations

import base64
import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

import citevae.data
import citevae.sim
from citevae.benchmark import plots, report
from citevae.benchmark.report import check_report_renders, first_runs, write_report
from citevae.benchmark.run import run_split
from citevae.errors import CiteVAEError
from citevae.model.citevae import CiteVAE

METHODS = ["citevae", "control_mean", "additive"]


@pytest.fixture(scope="module")
def tiny_run():
    adata = citevae.sim.simulate_counts(n_genes=50, n_targets=4, n_pairs=3,
                                        n_cells_per_condition=40, seed=0)
    CiteVAE.setup_anndata(adata, perturbation_key="perturbation", control="control",
                          covariate_keys=["cell_type"])
    split = citevae.data.split_combinations(adata, seed=0)
    scores, extras = run_split(adata, split, seed=0, baselines=["control_mean", "additive"],
                               model_options={"n_hidden": 32}, train_options={"max_epochs": 2})
    return scores, extras


def test_delta_scatter_one_panel_per_method(tiny_run):
    _, extras = tiny_run
    evaluation, predictions = extras["evaluation"], extras["predictions"]
    unit = evaluation.units[0]
    fig = plots.delta_scatter(evaluation, predictions, unit.key, METHODS)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    observed = (evaluation.log1p[unit.cells][:, unit.de_genes].mean(0)
                - evaluation.log1p[unit.controls][:, unit.de_genes].mean(0))
    for ax, method in zip(fig.axes, METHODS, strict=True):
        points = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert len(points) == 1
        offsets = points[0].get_offsets()
        assert offsets.shape == (len(unit.de_genes), 2)
        np.testing.assert_allclose(offsets[:, 0], observed, rtol=1e-5, atol=1e-6)
        assert ax.get_title().startswith(method) and "Pearson r =" in ax.get_title()
        assert any(line.get_label() == "identity" for line in ax.lines)
    with pytest.raises(CiteVAEError, match="not in the evaluation"):
        plots.delta_scatter(evaluation, predictions, "nope@ctx0", METHODS)


def test_metric_bars_mean_over_seeds(tiny_run):
    scores, _ = tiny_run
    two_seeds = scores.copy()
    two_seeds["seed"] = 1
    two_seeds["mse_top20_de"] += 1.0
    both = pd.concat([scores, two_seeds], ignore_index=True)
    fig = plots.metric_bars(both, ["pearson_delta", "mse_top20_de"])
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    bars = fig.axes[1].patches
    assert len(bars) == len(METHODS)  # one test group: one bar per method
    expected = scores.groupby("method", sort=False)["mse_top20_de"].mean() + 0.5
    np.testing.assert_allclose([b.get_height() for b in bars], expected[METHODS].to_numpy(),
                               rtol=1e-6)
    with pytest.raises(CiteVAEError, match="not in the scores"):
        plots.metric_bars(scores, ["no_such_metric"])


def test_program_graph_shared_centred_scale(tiny_run):
    _, extras = tiny_run
    model = extras["model"]
    perturbations = ["G0003", "G0025+G0046"]
    fig = plots.program_graph(model, perturbations)
    assert len(fig.axes) == 3  # two heatmaps and one colour bar
    images = [im for ax in fig.axes[:2] for im in ax.images]
    assert len(images) == 2 and all(isinstance(im, AxesImage) for im in images)
    lows, highs = zip(*(im.get_clim() for im in images), strict=True)
    assert len(set(lows)) == 1 and len(set(highs)) == 1 and lows[0] == -highs[0]
    n = model.config.n_programs
    assert images[0].get_array().shape == (n, n)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [f"z{i}" for i in range(n)]


def test_latent_trajectories_lines_and_bands(tiny_run):
    _, extras = tiny_run
    model, unit = extras["model"], extras["evaluation"].units[0]
    controls = model.adata[unit.controls].copy()
    perturbations = ["control", "G0003", "G0025+G0046"]
    fig = plots.latent_trajectories(model, controls, perturbations, n_programs=3)
    assert len(fig.axes) == 3
    steps = model.trajectories(controls, "G0003").shape[1]
    for ax in fig.axes:
        assert len(ax.lines) == len(perturbations)
        assert all(len(line.get_xdata()) == steps for line in ax.lines)
        assert sum(isinstance(c, PolyCollection) for c in ax.collections) == len(perturbations)
    fig = plots.latent_trajectories(model, controls, ["G0003"], programs=[0, 5])
    assert [ax.get_title() for ax in fig.axes] == ["z0", "z5"]


def test_write_report_self_contained(tiny_run, tmp_path):
    scores, extras = tiny_run
    runs = {"sim_combinations/seed1": extras, "sim_combinations/seed0": extras}
    assert first_runs(runs)["sim_combinations"][0] == "sim_combinations/seed0"
    path = write_report(tmp_path / "out", scores, runs, title="tiny <benchmark>")
    assert path == tmp_path / "out" / "report.html"
    document = path.read_text()
    assert "http://" not in document and "https://" not in document
    assert not re.search(r"<(link|iframe)|\bsrc=\"(?!data:)", document)
    assert "tiny &lt;benchmark&gt;" in document
    pngs = sorted((tmp_path / "out" / "figures").glob("*.png"))
    names = {p.stem for p in pngs}
    assert names == {"all_metric_bars", "sim_combinations_delta_scatter",
                     "sim_combinations_program_graph", "sim_combinations_latent_trajectories"}
    for png in pngs:  # every figure file is embedded byte for byte
        assert f'src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}"' in document
    assert document.count("<img ") == len(pngs)
    assert "<table>" in document and all(f">{m}</td>" in document for m in METHODS)
    assert not list((tmp_path / "out").rglob("*.tmp"))  # atomic writes leave no temp files


@pytest.mark.skipif(shutil.which("chromium") is None and not os.path.exists("/usr/bin/chromium")
                    and not os.environ.get("CI"),
                    reason="Chromium absent (apt-get install -y chromium); required when CI is set")
def test_report_renders_in_headless_chromium(tiny_run, tmp_path):
    scores, extras = tiny_run
    path = write_report(tmp_path, scores, {"sim_combinations/seed0": extras})
    result = check_report_renders(path)
    assert result["images"] == result["rendered"] == result["embedded"] == 4
    assert all(w > 100 and h > 100 for w, h in result["sizes"].values())
    # a broken image is caught
    broken = tmp_path / "broken.html"
    broken.write_text(re.sub(r"base64,[A-Za-z0-9+/=]{40}", "base64,AAAA", path.read_text(),
                             count=1))
    with pytest.raises(CiteVAEError, match="3 of 4 images rendered"):
        check_report_renders(broken)


def test_check_report_renders_without_chromium(tiny_run, tmp_path, monkeypatch):
    scores, extras = tiny_run
    path = write_report(tmp_path, scores, {"sim/seed0": extras})
    with pytest.raises(CiteVAEError, match="apt-get install -y chromium"):
        check_report_renders(path, chromium=str(tmp_path / "no-chromium"))
    monkeypatch.setattr(report, "CHROMIUM_PATHS", (str(tmp_path / "no-chromium"),))
    with pytest.raises(CiteVAEError, match=r"Chromium is not installed.*apt-get install -y chromium"):
        check_report_renders(path)
