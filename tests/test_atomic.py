"""Atomic writes: a save interrupted at any point leaves the previous file or folder (or nothing),
never a half-written one, and no temporary files behind."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
import safetensors.torch
from typer.testing import CliRunner

from citevae import _atomic
from citevae.cli import app
from citevae.model import CiteVAE
from citevae.model.io import METADATA_FILE, WEIGHTS_FILE
from citevae.sim import simulate_counts


class InterruptedWriteError(Exception):
    """Stands for a crash in the middle of a write."""


def _half_then_crash(data: bytes):
    def write(target, *args, **kwargs) -> None:
        with open(target, "wb") as handle:
            handle.write(data[: len(data) // 2])
        raise InterruptedWriteError
    return write


def test_interrupted_file_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "table.csv"
    _atomic.write_text(path, "old\n")
    with pytest.raises(InterruptedWriteError), _atomic.atomic_path(path) as temp:
        temp.write_text("new, but only ha")
        raise InterruptedWriteError
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["table.csv"]
    with pytest.raises(InterruptedWriteError), _atomic.atomic_path(tmp_path / "new.csv") as temp:
        raise InterruptedWriteError
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]
    _atomic.write_bytes(path, b"new\n")
    assert path.read_bytes() == b"new\n" and oct(path.stat().st_mode & 0o777) == "0o644"


@pytest.fixture(scope="module")
def model():
    adata = simulate_counts(n_genes=15, n_targets=2, n_pairs=1, n_cells_per_condition=10, n_steps=2,
                            n_programs=2, seed=2)
    CiteVAE.setup_anndata(adata, "perturbation", "control")
    model = CiteVAE(adata, n_hidden=16, n_programs=2, n_steps=2)
    model.train(max_epochs=1, progress_bar=False)
    return model


def test_interrupted_model_save_keeps_the_old_model(model, tmp_path, monkeypatch):
    path = model.save(tmp_path / "model")
    before = {name: (path / name).read_bytes() for name in (WEIGHTS_FILE, METADATA_FILE)}
    crash = _half_then_crash(before[WEIGHTS_FILE])
    monkeypatch.setattr("citevae.model.io.save_file", lambda tensors, filename, **kw: crash(filename))
    with pytest.raises(InterruptedWriteError):
        model.save(path, overwrite=True)
    with pytest.raises(InterruptedWriteError):
        model.save(tmp_path / "fresh")
    assert {name: (path / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    monkeypatch.setattr("citevae.model.io.save_file", safetensors.torch.save_file)
    assert CiteVAE.load(path).is_trained
    assert json.loads((path / METADATA_FILE).read_text())["is_trained"]


def test_interrupted_prediction_write_leaves_no_file(model, tmp_path, monkeypatch):
    cells = tmp_path / "cells.h5ad"
    model.adata.write_h5ad(cells)
    model_dir = model.save(tmp_path / "model")
    out = tmp_path / "prediction.h5ad"
    monkeypatch.setattr(ad.AnnData, "write_h5ad", lambda self, target, **kw: _half_then_crash(
        cells.read_bytes())(target))
    result = CliRunner().invoke(app, ["predict", str(model_dir), str(cells), "--perturbations",
                                      "control", "--out", str(out)])
    assert result.exit_code == 1 and "cannot write" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.h5ad", "model"]
    assert np.isfinite(ad.read_h5ad(cells).X.toarray()).all()  # the input is intact
