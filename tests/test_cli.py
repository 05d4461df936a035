"""The command line: help, a simulate -> train -> predict round trip, and one-line errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from typer.testing import CliRunner

from citevae.cli import app

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_one_line_error(result, *needles: str) -> None:
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code != 0, text
    assert "Traceback" not in text
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A tiny simulated data set and a model trained on it through the CLI (1 epoch)."""
    root = tmp_path_factory.mktemp("cli")
    data = root / "sim.h5ad"
    result = _invoke("simulate", "counts", "--out", data, "--n-genes", "30", "--n-targets", "4",
                     "--n-pairs", "3", "--n-cells", "12", "--n-programs", "3", "--seed", "1")
    assert result.exit_code == 0, result.output
    digest = _sha(data)
    result = _invoke("train", data, "--perturbation-key", "perturbation", "--control", "control",
                     "--max-epochs", "1", "--n-programs", "3", "--no-progress", "--out", root / "model")
    assert result.exit_code == 0, result.output
    assert _sha(data) == digest  # the input file is never written
    return root


def test_help_lists_commands():
    result = _invoke("--help")
    assert result.exit_code == 0
    for command in ("demo", "simulate", "train", "predict"):
        assert command in result.output
    result = _invoke("simulate", "--help")
    assert result.exit_code == 0
    assert "counts" in result.output and "vector" in result.output


def test_simulate_vector(tmp_path):
    out = tmp_path / "vec.h5ad"
    result = _invoke("simulate", "vector", "--out", out, "--n-latents", "2", "--n-cells", "5",
                     "--n-steps", "2", "--seed", "3")
    assert result.exit_code == 0, result.output
    adata = ad.read_h5ad(out)
    assert adata.shape == (5 * 5 * 3, 4)  # K = 2n + 1 regimes, T + 1 steps, D = 2n


def test_round_trip(workdir):
    assert (workdir / "model").is_dir()
    data = ad.read_h5ad(workdir / "sim.h5ad")
    pair = next(p for p in data.obs["perturbation"].cat.categories if "+" in p)
    single = pair.split("+")[0]
    digest = _sha(workdir / "sim.h5ad")
    out = workdir / "pred.h5ad"
    result = _invoke("predict", workdir / "model", workdir / "sim.h5ad",
                     "--perturbations", f"{single},{pair}", "--out", out)
    assert result.exit_code == 0, result.output
    assert _sha(workdir / "sim.h5ad") == digest
    pred = ad.read_h5ad(out)
    n_controls = int((data.obs["perturbation"] == "control").sum())
    assert pred.n_obs == 2 * n_controls and pred.n_vars == data.n_vars
    assert pred.uns["citevae"]["scale"] == "counts"
    assert set(pred.obs["perturbation"].astype(str)) == {single, pair}
    assert np.isfinite(pred.X).all() and (pred.X >= 0).all()
    assert "log1p" in pred.layers

    sampled = workdir / "sampled.h5ad"
    args = ("predict", workdir / "model", workdir / "sim.h5ad", "--perturbations", pair,
            "--sample", "--seed", "5")
    assert _invoke(*args, "--out", sampled).exit_code == 0
    assert _invoke(*args, "--out", workdir / "sampled2.h5ad").exit_code == 0
    a, b = ad.read_h5ad(sampled).X, ad.read_h5ad(workdir / "sampled2.h5ad").X
    np.testing.assert_array_equal(a, b)


def test_missing_file(tmp_path):
    result = _invoke("train", tmp_path / "nope.h5ad", "--perturbation-key", "perturbation",
                     "--control", "control", "--out", tmp_path / "m")
    _assert_one_line_error(result, "nope.h5ad")


def test_misspelled_perturbation_key(workdir, tmp_path):
    data = workdir / "sim.h5ad"
    digest = _sha(data)
    result = _invoke("train", data, "--perturbation-key", "perturbaton", "--control", "control",
                     "--max-epochs", "1", "--out", tmp_path / "m")
    _assert_one_line_error(result, "perturbaton")
    assert _sha(data) == digest
    assert not (tmp_path / "m").exists()


def test_unknown_perturbation(workdir, tmp_path):
    result = _invoke("predict", workdir / "model", workdir / "sim.h5ad", "--perturbations",
                     "NOTAGENE", "--out", tmp_path / "p.h5ad")
    _assert_one_line_error(result, "NOTAGENE")
    assert not (tmp_path / "p.h5ad").exists()


def test_corrupt_h5ad(workdir, tmp_path):
    bad = tmp_path / "bad.h5ad"
    bad.write_bytes(b"this is not an HDF5 file\n" * 10)
    result = _invoke("train", bad, "--perturbation-key", "perturbation", "--control", "control",
                     "--out", tmp_path / "m")
    _assert_one_line_error(result, "bad.h5ad")
    result = _invoke("predict", workdir / "model", bad, "--perturbations", "control",
                     "--out", tmp_path / "p.h5ad")
    _assert_one_line_error(result, "bad.h5ad")


def test_missing_model_dir(workdir, tmp_path):
    result = _invoke("predict", tmp_path / "no_model", workdir / "sim.h5ad", "--perturbations",
                     "control", "--out", tmp_path / "p.h5ad")
    _assert_one_line_error(result, "no_model")


def test_existing_model_dir_needs_overwrite(workdir):
    result = _invoke("train", workdir / "sim.h5ad", "--perturbation-key", "perturbation",
                     "--control", "control", "--out", workdir / "model")
    _assert_one_line_error(result, "--overwrite")


def test_predict_refuses_to_overwrite_input(workdir):
    data = workdir / "sim.h5ad"
    digest = _sha(data)
    result = _invoke("predict", workdir / "model", data, "--perturbations", "control", "--out", data)
    _assert_one_line_error(result, "input file")
    assert _sha(data) == digest


def _time_course(tmp_path, *train_options: str):
    """Simulate paired counts over times 0, 1, 2 and train a time-resolved model on them with
    ``train_options``; returns the data file and a target gene."""
    data = tmp_path / "paired.h5ad"
    assert _invoke("simulate", "counts", "--out", data, "--n-genes", "20", "--n-targets", "2",
                   "--n-pairs", "1", "--n-cells", "6", "--n-programs", "2", "--paired",
                   "--n-steps", "2").exit_code == 0
    result = _invoke("train", data, "--perturbation-key", "perturbation", "--control", "control",
                     "--time-key", "time", *train_options, "--max-epochs", "1", "--n-programs",
                     "2", "--no-progress", "--out", tmp_path / "model")
    assert result.exit_code == 0, result.output
    return data, str(ad.read_h5ad(data).uns["sim"]["targets"][0])


def test_time_round_trip(tmp_path):
    """A time-resolved model: numeric --times are parsed as numbers and written as numbers."""
    data, target = _time_course(tmp_path)
    out = tmp_path / "pred.h5ad"
    result = _invoke("predict", tmp_path / "model", data, "--perturbations", target,
                     "--times", "1,2", "--out", out)
    assert result.exit_code == 0, result.output
    pred = ad.read_h5ad(out)
    assert sorted(pred.obs["time"].unique().tolist()) == [1, 2]
    assert sorted(pred.obs["step"].unique().tolist()) == [1, 2]
    result = _invoke("predict", tmp_path / "model", data, "--perturbations", target,
                     "--times", "1.5", "--out", tmp_path / "p2.h5ad")
    _assert_one_line_error(result, "1.5")
    assert not (tmp_path / "p2.h5ad").exists()


def test_time_unit_sets_the_latent_grid(tmp_path):
    """--time-unit 0.5 puts observed times 1 and 2 at latent steps 2 and 4, so 1.5 is on the grid."""
    data, target = _time_course(tmp_path, "--time-unit", "0.5")
    out = tmp_path / "pred.h5ad"
    result = _invoke("predict", tmp_path / "model", data, "--perturbations", target,
                     "--times", "1,1.5,2", "--out", out)
    assert result.exit_code == 0, result.output
    steps = ad.read_h5ad(out).obs.groupby("time")["step"].first().to_dict()
    assert steps == {1.0: 2, 1.5: 3, 2.0: 4}
    result = _invoke("train", data, "--perturbation-key", "perturbation", "--control", "control",
                     "--time-key", "time", "--time-unit", "0", "--out", tmp_path / "bad")
    _assert_one_line_error(result, "time unit must be positive")


QUICK_STAGES = ('{"rotation_starts": 1, "regression_steps": 100, "mechanism_steps": 40, '
                '"n_components": 5}')


def test_staged_round_trip(workdir, tmp_path):
    """train --staged fits stage by stage (sizes as given), saves, and predict reads it back."""
    data = workdir / "sim.h5ad"
    model_dir = tmp_path / "staged"
    result = _invoke("train", data, "--perturbation-key", "perturbation", "--control", "control",
                     "--staged", "--staged-options", QUICK_STAGES, "--n-programs", "3",
                     "--out", model_dir)
    assert result.exit_code == 0, result.output
    assert "3 programs and 2 invariant dimensions" in result.output
    metadata = json.loads((model_dir / "model.json").read_text())
    assert metadata["staged_config"]["mechanism_steps"] == 40
    assert metadata["module_config"]["linear_transition"] is True
    pair = next(p for p in ad.read_h5ad(data).obs["perturbation"].cat.categories if "+" in p)
    out = tmp_path / "pred.h5ad"
    result = _invoke("predict", model_dir, data, "--perturbations", pair, "--sample", "--seed", "2",
                     "--out", out)
    assert result.exit_code == 0, result.output
    assert np.isfinite(ad.read_h5ad(out).X).all()


@pytest.mark.parametrize(("options", "message"), [
    (("--staged-options", "{}"), "--staged-options needs --staged"),
    (("--staged", "--staged-options", "{steps: 1}"), "--staged-options is not valid JSON"),
    (("--staged", "--staged-options", "[1]"), "--staged-options must be a JSON object"),
    (("--staged", "--staged-options", '{"mechanism_stepz": 1}'), "mechanism_stepz"),
    (("--staged", "--resume"), "--staged has no checkpoints"),
])
def test_staged_options_are_checked(workdir, tmp_path, options, message):
    result = _invoke("train", workdir / "sim.h5ad", "--perturbation-key", "perturbation",
                     "--control", "control", *options, "--out", tmp_path / "bad")
    _assert_one_line_error(result, message)
    assert not (tmp_path / "bad").exists()
