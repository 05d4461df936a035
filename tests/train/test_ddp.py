"""Two-process training through Lightning's DDP on CPU (gloo), against one process.

``ddp_script.py`` runs in a subprocess because Lightning's "ddp" strategy re-launches the running
script per rank. The batch sampler shards condition groups by rank: rank r takes batches r, r + 2,
... of the epoch's permutation, and each batch's controls are drawn with the seed of its index, so
the two ranks' batches, interleaved, are exactly the batches of one process.

One optimiser step of 2 DDP ranks (mean of the two ranks' gradients) therefore equals one step of
1 process that accumulates the gradients of 2 consecutive batches (``accumulate_grad_batches=2``,
each batch's loss halved): the same cells, the same loss per batch, the same mean. The comparison
is exact (to float rounding) given one more thing: the script seeds torch per batch from the
batch's global index, because by default every rank starts from the same seed and so draws other
reparameterisation noise than one process drawing for the same batches in sequence. What remains
different by design is the logged epoch loss (each rank's weighted mean, then the mean over ranks;
equal here, where the ranks hold as many rows).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist
from safetensors.numpy import load_file

SCRIPT = Path(__file__).with_name("ddp_script.py")

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is needed for CPU DDP",
)


def _run(out: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), *args], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, Path]:
    """Output folders of the 2-process run and the 1-process run accumulating 2 batches a step."""
    root = tmp_path_factory.mktemp("ddp")
    _run(root / "two", "--devices", "2", "--strategy", "ddp")
    _run(root / "one", "--devices", "1", "--accumulate", "2")
    return {2: root / "two", 1: root / "one"}


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_two_process_run_completes_and_loss_falls(runs):
    result = _read(runs[2] / "result.json")
    assert result["devices"] == 2 and result["epochs_run"] == 3
    losses = result["train_loss"]
    assert len(losses) == 3 and np.isfinite(losses).all()
    assert losses[-1] < losses[0]


def test_ranks_shard_the_batches_of_one_process(runs):
    ranks = [_read(runs[2] / f"rank{r}.json") for r in (0, 1)]
    single = _read(runs[1] / "rank0.json")
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 for r in ranks) and single["world_size"] == 1
    assert single["n_batches"] % 2 == 0  # else DDP drops the last batch and the runs differ
    assert ranks[0]["n_batches"] == ranks[1]["n_batches"] == single["n_batches"] // 2
    interleaved = [rows for pair in zip(ranks[0]["epoch0_rows"], ranks[1]["epoch0_rows"], strict=True)
                   for rows in pair]
    assert interleaved == single["epoch0_rows"]  # same cells and same matched controls, in order


def test_only_rank_zero_writes(runs):
    out = runs[2]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.ckpt"]
    assert sorted(p.name for p in (out / "model").iterdir()) == ["model.json",
                                                                "model.safetensors"]
    written = sorted(p.name for p in out.iterdir())
    assert written == ["checkpoints", "model", "prediction.npy", "rank0.json", "rank1.json",
                       "result.json"]


def test_two_processes_equal_one_process_accumulating_two_batches(runs):
    two, one = _read(runs[2] / "result.json"), _read(runs[1] / "result.json")
    assert two["best_epoch"] == one["best_epoch"] == 2
    weights = [load_file(runs[n] / "model" / "model.safetensors") for n in (2, 1)]
    assert weights[0].keys() == weights[1].keys()
    for name, value in weights[0].items():
        np.testing.assert_allclose(value, weights[1][name], rtol=1e-4, atol=1e-5, err_msg=name)
    p2, p1 = np.load(runs[2] / "prediction.npy"), np.load(runs[1] / "prediction.npy")
    assert p2.shape == p1.shape and np.isfinite(p2).all()
    np.testing.assert_allclose(p2, p1, rtol=1e-4, atol=1e-5)
    # epoch means: rank means averaged vs one mean over all batches (equal for equal rank sizes)
    np.testing.assert_allclose(two["train_loss"], one["train_loss"], rtol=1e-3)
