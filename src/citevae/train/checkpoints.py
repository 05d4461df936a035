"""Training checkpoints: written atomically, read without unpickling code, tied to their run.

A checkpoint is Lightning's ``last.ckpt`` (a ``torch.save`` file of plain tensors, numbers and
strings: weights, optimiser state, loop progress, callback states) plus a ``"citevae"`` entry that
identifies the run (module and training settings, a digest of the data and its split). It is read
with ``torch.load(weights_only=True)``, which refuses anything but such plain data, so a tampered
file cannot run code. Finished models are saved separately as safetensors + JSON.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from citevae._atomic import atomic_path
from citevae.errors import CheckpointError

CHECKPOINT_NAME = "last"
CHECKPOINT_FILE = f"{CHECKPOINT_NAME}.ckpt"
IDENTITY_KEY = "citevae"
RESUMABLE_CHANGES = ("max_epochs",)
"""Training settings a resumed run may change (e.g. to train for longer)."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes via a temporary file and loads with ``weights_only``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path,
                        storage_options: Any | None = None) -> None:
        with atomic_path(path) as temp:
            torch.save(checkpoint, temp)

    def load_checkpoint(self, path: str | Path, map_location: Any | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        return read_checkpoint(path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path`` as a dict (CPU tensors); CheckpointError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is truncated or not a citevae checkpoint: {first}") from None
    if not isinstance(checkpoint, dict) or IDENTITY_KEY not in checkpoint:
        raise CheckpointError(f"{path} is not a citevae training checkpoint")
    return checkpoint


def run_identity(module_config: dict, training_config: dict, data: dict[str, Any]) -> dict:
    """What a resumed run must share with the interrupted one: settings and a data digest.

    ``data`` maps names to arrays or JSON-ready values (registry, cell indices, library sizes);
    only their SHA-256 is kept.
    """
    digest = hashlib.sha256()
    for name in sorted(data):
        value = data[name]
        digest.update(name.encode())
        if hasattr(value, "tobytes"):
            digest.update(str(value.dtype).encode() + str(value.shape).encode() + value.tobytes())
        else:
            digest.update(json.dumps(value, sort_keys=True, default=str).encode())
    training = {k: v for k, v in training_config.items() if k not in RESUMABLE_CHANGES}
    return {"module_config": module_config, "training_config": training,
            "data": digest.hexdigest()}


def resumable_checkpoint(checkpoint_dir: str | Path, identity: dict) -> Path:
    """Path of the checkpoint to resume in ``checkpoint_dir``, after checking it is this run's."""
    path = Path(checkpoint_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(
            f"nothing to resume: {path} does not exist (the interrupted run wrote no checkpoint "
            "there, e.g. it stopped during its first epoch); train without resume to start over"
        )
    saved = read_checkpoint(path)[IDENTITY_KEY]
    for part in ("module_config", "training_config"):
        old, new = saved.get(part, {}), identity[part]
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if changed:
            detail = ", ".join(f"{k}: {old.get(k)!r} in the checkpoint, {new.get(k)!r} now"
                               for k in changed[:5])
            raise CheckpointError(f"{path} belongs to a run with other settings ({detail}); "
                                  "resume with the same settings or train without resume")
    if saved.get("data") != identity["data"]:
        raise CheckpointError(
            f"{path} belongs to a run on other data (genes, perturbations, cells or their "
            "train/validation split differ); resume with the same data, split and seed or train "
            "without resume"
        )
    return path
