"""Crash and resume: runs killed with SIGKILL resume from their last checkpoint and end exactly as
an uninterrupted run; checkpoints are atomic, loaded without unpickling code, and tied to their run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from citevae.cli import app
from citevae.errors import CheckpointError, TrainingDivergedError
from citevae.model.io import WEIGHTS_FILE
from citevae.train import plan
from citevae.train.checkpoints import CHECKPOINT_FILE, read_checkpoint

SCRIPT = Path(__file__).with_name("resume_script.py")
_spec = importlib.util.spec_from_file_location("resume_script", SCRIPT)
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)

CLI_EPOCHS = 10


def _cli_train(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", str(data), "--perturbation-key", "perturbation", "--control", "control",
            "--max-epochs", str(CLI_EPOCHS), "--n-programs", "2", "--no-progress", "--out", str(out),
            *extra]


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> dict[str, Path]:
    """Two runs killed with SIGKILL, side by side: ``resume_script.py`` half-way through writing
    its epoch-3 checkpoint, and ``citevae train`` from outside as soon as its first checkpoint
    exists (with 9 epochs to go)."""
    root = tmp_path_factory.mktemp("killed")
    adata = script.make_model().adata
    adata.write_h5ad(root / "data.h5ad")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    saving = subprocess.Popen([sys.executable, str(SCRIPT), str(root / "saving"), "--kill-at",
                               "save", "3"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cli = subprocess.Popen([sys.executable, "-m", "citevae.cli",
                            *_cli_train(root / "data.h5ad", root / "model")],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = root / "model.checkpoints" / CHECKPOINT_FILE
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and cli.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cli.poll() is None, "citevae train ended before it could be killed"
    cli.send_signal(signal.SIGKILL)
    for proc in (saving, cli):
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, stderr.decode()[-3000:]
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run (it keeps its checkpoint folder for the refusal tests)."""
    folder = tmp_path_factory.mktemp("reference") / "checkpoints"
    model = script.make_model()
    return model, script.train(model, folder), folder


def _state(model) -> dict[str, torch.Tensor]:
    return model.module.state_dict()


def _assert_same_weights(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    assert state.keys() == reference.keys()
    for key, value in reference.items():
        np.testing.assert_allclose(state[key].float().numpy(), value.float().numpy(), rtol=1e-5,
                                   atol=1e-7, err_msg=key)


def test_resume_after_sigkill_while_saving_ends_as_the_uninterrupted_run(killed, reference):
    folder = killed / "saving"
    assert read_checkpoint(folder / CHECKPOINT_FILE)["epoch"] == 2  # the complete one before
    partial = [p for p in folder.iterdir() if p.name != CHECKPOINT_FILE]
    assert len(partial) == 1 and partial[0].name.startswith(f".{CHECKPOINT_FILE}.")
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(partial[0])
    model = script.make_model()
    result = script.train(model, folder, resume=True)
    ref_model, ref_result, _ = reference
    assert result.epochs_run == ref_result.epochs_run == script.EPOCHS
    assert (result.best_epoch, result.best_score) == (ref_result.best_epoch, ref_result.best_score)
    assert [row["epoch"] for row in result.history] == list(range(script.EPOCHS))
    for row, ref_row in zip(result.history, ref_result.history, strict=True):
        assert row.keys() == ref_row.keys()
        np.testing.assert_allclose(list(row.values()), list(ref_row.values()), rtol=1e-6)
    _assert_same_weights(_state(model), _state(ref_model))


def test_cli_resume_after_sigkill_ends_as_the_uninterrupted_run(killed):
    data = killed / "data.h5ad"
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    assert not (killed / "model").exists()  # killed before it saved anything
    assert read_checkpoint(killed / "model.checkpoints" / CHECKPOINT_FILE)["epoch"] < CLI_EPOCHS - 1
    resumed = CliRunner().invoke(app, _cli_train(data, killed / "model", "--resume"))
    assert resumed.exit_code == 0, resumed.output
    reference = CliRunner().invoke(app, _cli_train(data, killed / "reference"))
    assert reference.exit_code == 0, reference.output
    assert hashlib.sha256(data.read_bytes()).hexdigest() == digest
    _assert_same_weights(load_file(killed / "model" / WEIGHTS_FILE),
                         load_file(killed / "reference" / WEIGHTS_FILE))
    refused = CliRunner().invoke(app, _cli_train(data, killed / "fresh", "--resume"))
    assert refused.exit_code == 1 and "nothing to resume" in refused.stderr
    refused = CliRunner().invoke(app, _cli_train(data, killed / "fresh", "--checkpoint-dir",
                                                 str(killed / "model.checkpoints")))
    assert refused.exit_code == 1 and "--resume" in refused.stderr
    assert not (killed / "fresh").exists()


def test_resume_without_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="nothing to resume"):
        script.train(script.make_model(), tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="checkpoint_dir"):
        script.train(script.make_model(), None, resume=True)


def test_existing_checkpoint_needs_resume(reference):
    with pytest.raises(CheckpointError, match="resume it"):
        script.train(script.make_model(), reference[2])


def test_checkpoint_of_other_settings_or_data_is_refused(reference):
    folder = reference[2]
    with pytest.raises(CheckpointError, match="learning_rate"):
        script.train(script.make_model(), folder, resume=True, learning_rate=0.01)
    with pytest.raises(CheckpointError, match="other data"):
        script.train(script.make_model(seed=2), folder, resume=True)


def test_resume_may_train_longer(reference, tmp_path):
    folder = tmp_path / "checkpoints"
    shutil.copytree(reference[2], folder)
    result = script.train(script.make_model(), folder, resume=True, max_epochs=script.EPOCHS + 1)
    assert result.epochs_run == script.EPOCHS + 1
    assert len(result.history) == script.EPOCHS + 1


class _Payload:
    def __reduce__(self):
        return (os.makedirs, (self.marker,))

    def __init__(self, marker: str) -> None:
        self.marker = marker


def test_tampered_or_truncated_checkpoint_is_refused_without_running_code(reference, tmp_path):
    folder = tmp_path / "checkpoints"
    shutil.copytree(reference[2], folder)
    path = folder / CHECKPOINT_FILE
    checkpoint = torch.load(path, weights_only=True)
    marker = tmp_path / "code-ran"
    torch.save({**checkpoint, "extra": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match="not a citevae checkpoint"):
        script.train(script.make_model(), folder, resume=True)
    assert not marker.exists()
    data = (reference[2] / CHECKPOINT_FILE).read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated"):
        script.train(script.make_model(), folder, resume=True)


def test_non_finite_loss_stops_training_and_keeps_the_best_weights(monkeypatch, tmp_path):
    original = plan.TrainingPlan.training_step

    def poisoned(self, batch, batch_idx):
        if self.current_epoch == 2:
            batch = {**batch, "x": batch["x"] * float("nan")}
        return original(self, batch, batch_idx)

    monkeypatch.setattr(plan.TrainingPlan, "training_step", poisoned)
    model = script.make_model()
    result = script.train(model, tmp_path / "checkpoints")
    assert result.diverged is not None and "epoch 2" in result.diverged
    assert result.best_epoch in (0, 1) and len(result.history) == 2
    assert all(torch.isfinite(v).all() for v in model.module.state_dict().values() if v.is_floating_point())
    assert read_checkpoint(tmp_path / "checkpoints" / CHECKPOINT_FILE)["epoch"] == 1
    monkeypatch.setattr(plan.TrainingPlan, "training_step", lambda self, batch, i: original(
        self, {**batch, "x": batch["x"] * float("nan")}, i))
    with pytest.raises(TrainingDivergedError, match="epoch 0, batch 0"):
        script.train(script.make_model(), None)
