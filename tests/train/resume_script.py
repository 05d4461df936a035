"""Train CITE-VAE on tiny simulated counts with checkpoints and SIGKILL itself at a chosen point.

Run by ``tests/train/test_resume.py`` in a subprocess (``make_model`` and ``train`` are shared with
it, so the resumed and the reference runs are the same run):

    python tests/train/resume_script.py CHECKPOINT_DIR --kill-at step 2 1   # epoch 2, batch 1
    python tests/train/resume_script.py CHECKPOINT_DIR --kill-at save 3     # half-way through
                                                                           # writing epoch 3's

The process dies by SIGKILL: no exception handler, ``finally`` block or clean-up runs, as after an
out-of-memory kill or a pulled plug.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
from pathlib import Path

from citevae.model import CiteVAE
from citevae.sim import simulate_counts
from citevae.train import checkpoints, plan
from citevae.train.trainer import TrainingResult

EPOCHS = 6


def make_model(seed: int = 1) -> CiteVAE:
    """A small untrained model on simulated counts (3 targets, 1 pair, 20 genes, 140 cells)."""
    adata = simulate_counts(n_genes=20, n_targets=3, n_pairs=1, n_cells_per_condition=20,
                            n_steps=2, n_programs=2, seed=seed)
    CiteVAE.setup_anndata(adata, "perturbation", "control")
    return CiteVAE(adata, n_hidden=16, n_programs=2, n_steps=2)


def train(model: CiteVAE, checkpoint_dir: Path | None, resume: bool = False,
          **options: object) -> TrainingResult:
    """The run under test: ``EPOCHS`` epochs, 4 batches each, a checkpoint after every epoch."""
    settings = {"max_epochs": EPOCHS, "cells_per_group": 16, **options}
    return model.train(progress_bar=False, num_threads=1, checkpoint_dir=checkpoint_dir,
                       resume=resume, **settings)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_at_step(epoch: int, batch: int) -> None:
    original = plan.TrainingPlan.training_step

    def training_step(self, data, batch_idx):
        if (self.current_epoch, batch_idx) == (epoch, batch):
            _die()
        return original(self, data, batch_idx)

    plan.TrainingPlan.training_step = training_step


def _kill_in_save(epoch: int) -> None:
    """Write half of the epoch's checkpoint to its temporary file, then die (before the rename)."""
    original = checkpoints.torch.save

    def save(obj, target) -> None:
        if isinstance(obj, dict) and obj.get("epoch") == epoch:
            buffer = io.BytesIO()
            original(obj, buffer)
            data = buffer.getvalue()
            Path(target).write_bytes(data[: len(data) // 2])
            _die()
        original(obj, target)

    checkpoints.torch.save = save


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint_dir", type=Path)
    parser.add_argument("--kill-at", nargs="+", required=True, help="step EPOCH BATCH | save EPOCH")
    args = parser.parse_args()
    where, *at = args.kill_at
    if where == "step":
        _kill_at_step(int(at[0]), int(at[1]))
    else:
        _kill_in_save(int(at[0]))
    train(make_model(), args.checkpoint_dir)
    raise SystemExit("the run finished without being killed")


if __name__ == "__main__":
    main()
