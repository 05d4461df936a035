"""Bad and unusual input, end to end through the command line and the Python API.

Every case runs twice: ``citevae train`` / ``citevae predict`` on an h5ad file, and the same verbs of
``CiteVAE``. A refused input gives one ``error: ...`` line naming the problem and exit status 1
(CLI), or a ``CiteVAEError`` subclass with the same message (Python); a valid input, however
unusual (CSC or int64 matrices, float16, one gene, zero-variance genes, a perturbation with one
cell, a cell with millions of counts), is accepted and gives finite predictions. Input files are
never modified (SHA-256 before and after), nor is the user's AnnData on refusal. The data layer's
own checks are tested in ``tests/data/test_validation.py``; these tests go through the whole stack.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse
from typer.testing import CliRunner

from citevae.cli import app
from citevae.data.registry import UNS_KEY
from citevae.data.splits import split_from_column
from citevae.errors import CiteVAEError, DataValidationError, ModelFileError, VocabularyError
from citevae.model import CiteVAE
from citevae.model.io import METADATA_FILE, WEIGHTS_FILE
from citevae.sim import simulate_counts

runner = CliRunner()
KEYS = {"perturbation_key": "perturbation", "control": "control", "time_key": "time",
        "covariate_keys": ["cell_type"]}
CLI_KEYS = ("--perturbation-key", "perturbation", "--control", "control", "--time-key", "time",
            "--covariate-key", "cell_type")
TARGET = "G0005"
"""A target gene perturbed in the simulated data (seed 0)."""


@functools.cache
def _simulated() -> ad.AnnData:
    adata = simulate_counts(n_genes=15, n_targets=3, n_pairs=1, n_cells_per_condition=8, n_steps=2,
                            n_programs=2, paired=True, seed=0)
    adata.obs["time"] = "d" + adata.obs["time"].astype(str)  # ordered labels: a rank time mapping
    adata.X = adata.X.toarray()
    return adata


def simulated() -> ad.AnnData:
    """A fresh copy of 120 cells x 15 genes: control, 3 targets and 1 pair, each followed over
    time "d0".."d2" (one cell type)."""
    return _simulated().copy()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _dense(adata: ad.AnnData) -> np.ndarray:
    return adata.X.toarray() if sparse.issparse(adata.X) else np.asarray(adata.X)


def _with_x(values: Callable[[np.ndarray], np.ndarray]) -> Callable[[ad.AnnData], ad.AnnData]:
    def make(adata: ad.AnnData) -> ad.AnnData:
        adata.X = values(_dense(adata).copy())
        return adata
    return make


def _set(x: np.ndarray, row: int, col: int | slice, value: float) -> np.ndarray:
    x = x.astype(np.float64)
    x[row, col] = value
    return x


def _obs(column: str, change: Callable[[pd.Series], pd.Series]) -> Callable[[ad.AnnData], ad.AnnData]:
    def make(adata: ad.AnnData) -> ad.AnnData:
        adata.obs[column] = change(adata.obs[column].astype(object))
        return adata
    return make


def _drop_obs(column: str) -> Callable[[ad.AnnData], ad.AnnData]:
    def make(adata: ad.AnnData) -> ad.AnnData:
        del adata.obs[column]
        return adata
    return make


def _rename(axis: str, first: int = 2) -> Callable[[ad.AnnData], ad.AnnData]:
    def make(adata: ad.AnnData) -> ad.AnnData:
        names = list(getattr(adata, axis))
        names[1:first] = [names[0]] * (first - 1)
        setattr(adata, axis, names)
        return adata
    return make


def _single_cell_perturbation(adata: ad.AnnData) -> ad.AnnData:
    cells = np.flatnonzero(adata.obs["perturbation"].astype(str) == TARGET)
    return adata[np.setdiff1d(np.arange(adata.n_obs), cells[1:])].copy()


@dataclass
class Case:
    """An input given to ``train`` (``make`` changes the training data) or to ``predict``."""

    make: Callable[[ad.AnnData], ad.AnnData] = lambda adata: adata
    error: str | None = None
    """Text the error must contain; None: the input is valid and must work."""
    error_type: type[CiteVAEError] = CiteVAEError
    options: dict = field(default_factory=dict)
    """``setup_anndata`` options (train) or ``predict`` arguments."""
    cli: tuple[str, ...] = ()


TRAIN_CASES = {
    "empty_anndata": Case(lambda a: a[:0].copy(), "empty", DataValidationError),
    "one_cell": Case(lambda a: a[:1].copy(), "at least 2 control cells, got 1",
                     DataValidationError),
    "one_gene": Case(lambda a: a[:, :1].copy()),
    "all_zero_cell": Case(_with_x(lambda x: _set(x, 3, slice(None), 0.0)), "zero total counts",
                          DataValidationError),
    "zero_variance_genes": Case(_with_x(lambda x: _set(_set(x, slice(None), 2, 0.0),
                                                       slice(None), 3, 7.0))),
    "perturbation_with_one_cell": Case(_single_cell_perturbation),
    "huge_library_size": Case(_with_x(lambda x: _set(x, 5, 4, 3e6))),
    "float16_matrix": Case(_with_x(lambda x: x.astype(np.float16))),
    "int64_matrix": Case(_with_x(lambda x: x.astype(np.int64))),
    "csc_matrix": Case(_with_x(lambda x: sparse.csc_matrix(x.astype(np.int32)))),
    "duplicate_gene_names": Case(_rename("var_names"), "gene name(s) occur more than once",
                                 DataValidationError),
    "duplicate_cell_names": Case(_rename("obs_names"), "cell name(s) occur more than once",
                                 DataValidationError),
    "nan_value": Case(_with_x(lambda x: _set(x, 2, 1, np.nan)), "NaN", DataValidationError),
    "negative_value": Case(_with_x(lambda x: _set(x, 2, 1, -3.0)), "negative value",
                           DataValidationError),
    "non_integer_counts": Case(_with_x(lambda x: _set(x, 2, 1, 0.5)), "non-integer values",
                               DataValidationError, {"scale": "counts"}, ("--scale", "counts")),
    "misspelled_perturbation_key": Case(error="'perturbaton' is not a column",
                                        error_type=DataValidationError,
                                        options={"perturbation_key": "perturbaton"},
                                        cli=("--perturbation-key", "perturbaton")),
    "control_label_absent": Case(_obs("perturbation", lambda s: s.replace("control", "ctrl")),
                                 "control label 'control'", DataValidationError),
    "missing_perturbation_label": Case(_obs("perturbation", lambda s: s.where(s.index != s.index[4])),
                                       "missing value", DataValidationError),
    "malformed_combination_label": Case(
        _obs("perturbation", lambda s: s.replace("G0006+G0012", "G0006++G0012")), "empty component"),
    "missing_layer": Case(error="layer 'counts' is not in adata.layers",
                          error_type=DataValidationError, options={"layer": "counts"},
                          cli=("--layer", "counts")),
    "missing_time_label": Case(_obs("time", lambda s: s.where(s.index != s.index[7])),
                               "time column 'time' has 1 missing value", DataValidationError),
    "counts_declared_log1p": Case(_with_x(lambda x: _set(x, 5, 4, 3e6)), "too large for log1p",
                                  DataValidationError, {"scale": "log1p"}, ("--scale", "log1p")),
}

PREDICT_CASES = {
    "unseen_gene_without_descriptor": Case(error="'NOTAGENE' were never perturbed",
                                           error_type=VocabularyError,
                                           options={"perturbations": ["NOTAGENE"]}),
    "unseen_measured_gene": Case(options={"perturbations": ["G0001"]}),
    "time_label_never_seen": Case(error="'d7' were not observed in training",
                                  error_type=VocabularyError,
                                  options={"perturbations": [TARGET], "times": ["d7"]}),
    "malformed_perturbation": Case(error="empty component", options={"perturbations": ["A++B"]}),
    "other_genes_than_the_model": Case(lambda a: a[:, 2:].copy(), "2 missing ('G0000', 'G0001')",
                                       VocabularyError),
    "unseen_covariate_value": Case(_obs("cell_type", lambda s: s.replace(s.iloc[0], "neuron")),
                                   "unseen value(s) 'neuron'", VocabularyError),
    "missing_covariate_column": Case(_drop_obs("cell_type"), "covariate column 'cell_type' is missing"),
    "nan_in_control_cells": Case(_with_x(lambda x: _set(x, 0, 1, np.nan)), "NaN",
                                 DataValidationError),
    "csc_int64_control_cells": Case(_with_x(lambda x: sparse.csc_matrix(x.astype(np.int64)))),
}


def _one_line_error(result, needle: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[CiteVAE, Path]:
    """A model (1 epoch) on the simulated data, in memory and saved."""
    adata = simulated()
    CiteVAE.setup_anndata(adata, **KEYS)
    model = CiteVAE(adata, n_programs=2, n_hidden=16)
    model.train(max_epochs=1, progress_bar=False)
    return model, model.save(tmp_path_factory.mktemp("model") / "model")


def _controls(adata: ad.AnnData) -> ad.AnnData:
    return adata[(adata.obs["perturbation"] == "control").to_numpy()].copy()


@pytest.mark.parametrize("name", TRAIN_CASES)
def test_train_cli(name, tmp_path):
    case = TRAIN_CASES[name]
    data = tmp_path / "data.h5ad"
    case.make(simulated()).write_h5ad(data)
    digest = _sha(data)
    options = dict(zip(CLI_KEYS[::2], CLI_KEYS[1::2], strict=True))
    options.update(dict(zip(case.cli[::2], case.cli[1::2], strict=True)))
    result = runner.invoke(app, ["train", str(data), *[v for kv in options.items() for v in kv],
                                 "--max-epochs", "1", "--n-programs", "2", "--no-progress",
                                 "--out", str(tmp_path / "model")])
    assert _sha(data) == digest
    if case.error is None:
        assert result.exit_code == 0, result.output
        assert CiteVAE.load(tmp_path / "model").is_trained
    else:
        _one_line_error(result, case.error)
        assert not (tmp_path / "model").exists()
        assert not list((tmp_path / "model.checkpoints").glob("*"))


@pytest.mark.parametrize("name", TRAIN_CASES)
def test_train_python(name):
    case = TRAIN_CASES[name]
    adata = case.make(simulated())
    before = (adata.copy(), sorted(adata.uns))
    if case.error is None:
        CiteVAE.setup_anndata(adata, **{**KEYS, **case.options})
        model = CiteVAE(adata, n_programs=2, n_hidden=16)
        model.train(max_epochs=1, progress_bar=False)
        prediction = model.predict(_controls(adata), [TARGET])
        assert np.isfinite(prediction.X).all()
        return
    with pytest.raises(case.error_type) as info:
        CiteVAE.setup_anndata(adata, **{**KEYS, **case.options})
        CiteVAE(adata, n_programs=2, n_hidden=16).train(max_epochs=1, progress_bar=False)
    assert case.error in str(info.value)
    copy, uns = before
    assert sorted(set(adata.uns) - {UNS_KEY}) == uns  # the registry of a successful setup may stay
    assert adata.obs.equals(copy.obs) and adata.var.equals(copy.var)
    np.testing.assert_array_equal(_dense(adata), _dense(copy))


def _predict_args(case: Case) -> list[str]:
    args = ["--perturbations", ",".join(case.options.get("perturbations", [TARGET]))]
    return args + (["--times", ",".join(case.options["times"])] if "times" in case.options else [])


@pytest.mark.parametrize("name", PREDICT_CASES)
def test_predict_cli(name, trained, tmp_path):
    case, (_, model_dir) = PREDICT_CASES[name], trained
    cells = tmp_path / "cells.h5ad"
    case.make(simulated()).write_h5ad(cells)
    digest = _sha(cells)
    out = tmp_path / "prediction.h5ad"
    result = runner.invoke(app, ["predict", str(model_dir), str(cells), *_predict_args(case),
                                 "--out", str(out)])
    assert _sha(cells) == digest
    if case.error is None:
        assert result.exit_code == 0, result.output
        assert np.isfinite(ad.read_h5ad(out).X).all()
    else:
        _one_line_error(result, case.error)
        assert not out.exists() and list(tmp_path.iterdir()) == [cells]


@pytest.mark.parametrize("name", PREDICT_CASES)
def test_predict_python(name, trained):
    case, (model, _) = PREDICT_CASES[name], trained
    controls = _controls(case.make(simulated()))
    options = {"perturbations": [TARGET], **case.options}
    if case.error is None:
        assert np.isfinite(model.predict(controls, **options).X).all()
        return
    with pytest.raises(case.error_type) as info:
        model.predict(controls, **options)
    assert case.error in str(info.value)


MODEL_FILE_CASES = {
    "newer_format_version": (METADATA_FILE, lambda p: p.write_text(json.dumps(
        {**json.loads(p.read_text()), "format_version": 99})), "format version 99"),
    "truncated_weights": (WEIGHTS_FILE, lambda p: p.write_bytes(p.read_bytes()[:200]), "truncated"),
    "pickle_instead_of_safetensors": (WEIGHTS_FILE, lambda p: torch.save({"w": torch.zeros(2)}, p),
                                      "not a safetensors file"),
    "tampered_tensor_names": (WEIGHTS_FILE, lambda p: p.write_bytes(
        p.read_bytes().replace(b"c_encoder", b"x_encoder", 1)), "consistent"),
    "garbage_metadata": (METADATA_FILE, lambda p: p.write_text("{"), "not readable JSON"),
}


@pytest.mark.parametrize("name", MODEL_FILE_CASES)
def test_damaged_model_directory(name, trained, tmp_path):
    file, damage, needle = MODEL_FILE_CASES[name]
    model_dir = tmp_path / "model"
    shutil.copytree(trained[1], model_dir)
    damage(model_dir / file)
    with pytest.raises(ModelFileError, match=needle):
        CiteVAE.load(model_dir)
    cells = tmp_path / "cells.h5ad"
    _controls(simulated()).write_h5ad(cells)
    result = runner.invoke(app, ["predict", str(model_dir), str(cells), "--perturbations", TARGET,
                                 "--out", str(tmp_path / "p.h5ad")])
    _one_line_error(result, needle)


@pytest.mark.parametrize("content", [b"", b"not an HDF5 file\n" * 8, "truncated"])
def test_unreadable_h5ad(content, trained, tmp_path):
    bad = tmp_path / "bad.h5ad"
    if content == "truncated":
        simulated().write_h5ad(bad)
        content = bad.read_bytes()[: bad.stat().st_size // 2]
    bad.write_bytes(content)
    result = runner.invoke(app, ["train", str(bad), *CLI_KEYS, "--out", str(tmp_path / "m")])
    _one_line_error(result, "cannot read")
    result = runner.invoke(app, ["predict", str(trained[1]), str(bad), "--perturbations", TARGET,
                                 "--out", str(tmp_path / "p.h5ad")])
    _one_line_error(result, "cannot read")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5ad"]


def test_perturbation_only_in_the_test_split_is_predicted():
    """A perturbation whose cells are all held out (split column "test") is never trained on and
    is predicted as an unseen target from its descriptor."""
    adata = simulated()
    CiteVAE.setup_anndata(adata, **KEYS)
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    held_out = labels == TARGET
    test_controls = (labels == "control") & (np.arange(adata.n_obs) % 2 == 0)
    adata.obs["split"] = np.where(held_out | test_controls, "test", "train")
    split = split_from_column(adata, "split")
    assert not held_out[split.mask("train")].any() and split.mask("test")[held_out].all()
    model = CiteVAE(adata, n_programs=2, n_hidden=16)
    model.train(max_epochs=1, split=split, progress_bar=False)
    prediction = model.predict(_controls(adata), [TARGET, "G0006"])
    assert np.isfinite(prediction.X).all()
