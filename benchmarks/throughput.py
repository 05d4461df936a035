"""Training and prediction throughput and peak memory: in memory vs streaming, 1 and 2 processes.

For each size (cells) a sparse CSR count matrix (simulated, ``--genes`` genes) is written to an
h5ad once, block by block (never whole in memory); then every configuration (model x mode x
processes) runs in its OWN fresh subprocess, so its peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, torch included) is its own. The data are written
by another subprocess too: Linux carries a parent's peak into its children's ru_maxrss, so the
driver stays small.

- mode "memory": ``anndata.read_h5ad(path)`` (X loaded whole, scipy CSR);
- mode "streaming": ``anndata.read_h5ad(path, backed="r")`` (X stays on disk; setup scans it in
  row chunks, each batch reads its rows);
- processes 2: Lightning ``strategy="ddp"``, ``devices=2`` on CPU (gloo); each rank reads its own
  shard of condition groups; peak memory is the larger of the two ranks' own peaks;
- model "citevae": ``CiteVAE`` with default width; "plainvae": ``PlainVAE`` with the same hidden
  width, depth and latent size (n_programs + n_invariant), trained by the same Trainer and
  condition-grouped batches, as the reference point.

Training: one warm-up epoch, then one timed epoch with the full objective (distribution match on
from the start), no validation. At sizes above ``--train-cells`` the epochs cover a random subset
of that many cells spread over the whole file (a fixed number of steps: throughput and memory do
not need full epochs), while setup, encoding and batching are over all cells. Train cells/s =
perturbed-or-control cells of the timed epoch (rank 0's x processes) / epoch seconds (wall clock);
every step also reads as many matched control cells, so rows read per second are twice that.
Train cells per CPU-second divides by rank 0's CPU time x processes instead: on a machine shared
with other work it moves less than the wall-clock rate. Peak memory is
reported after setup (read + ``setup_anndata``), after training, and at the end (after
prediction); ru_maxrss only grows, so each is the peak so far.
Prediction (rank 0): CITE-VAE predicts means (and the expected "log1p" layer) of up to
``--predict-controls`` control cells under every single target; predicted cells/s = output rows /
s. The plain VAE has no perturbation model; its "prediction" is ``get_latent`` (posterior means) of
the same control cells, so the two prediction rates are not comparable.

    python benchmarks/throughput.py                                  # 10000 cells, ~5 min on 2 cores
    python benchmarks/throughput.py --sizes 10000 100000 1000000 --data-dir /tmp/citevae-throughput

The 1M-cell file is ~5.5 GB. Memory mode above ``--memory-max-cells`` runs CITE-VAE with one
process only (X alone is ~5.5 GB per process at 1M cells). The last line reads
``train cells/s citevae=<x> plainvae=<y> ratio=<y/x>; streaming <N> peak GiB=<z>`` (x, y: the
largest size with both models in one mode and one process, memory preferred; z: CITE-VAE
streaming, one process, at the largest size).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

KEYS = {"perturbation_key": "perturbation", "control": "control", "covariate_keys": ["cell_type"]}
N_TARGETS, N_PAIRS = 20, 20
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "GLOBAL_RANK")


# ---------------------------------------------------------------- data


def write_dataset(path: Path, n_cells: int, n_genes: int, base_cells: int, seed: int = 0) -> None:
    """Write an h5ad of ``n_cells`` simulated counts (sparse CSR X), appending blocks of rows."""
    import anndata as ad
    import h5py
    import pandas as pd

    from citevae.sim import simulate_counts

    n_conditions = 1 + N_TARGETS + N_PAIRS
    per_condition = math.ceil(min(n_cells, base_cells) / n_conditions)
    base = simulate_counts(n_genes=n_genes, n_targets=N_TARGETS, n_pairs=N_PAIRS,
                           n_cells_per_condition=per_condition, seed=seed)
    reps = math.ceil(n_cells / base.n_obs)
    obs = pd.concat([base.obs[["perturbation", "cell_type"]]] * reps).iloc[:n_cells]
    obs.index = [f"cell{i}" for i in range(n_cells)]
    var = base.var[["is_target", "program"]]
    with h5py.File(path, "w") as f:
        f.attrs["encoding-type"], f.attrs["encoding-version"] = "anndata", "0.1.0"
        ad.io.write_elem(f, "obs", obs)
        ad.io.write_elem(f, "var", var)
        first = base.X[: min(base.n_obs, n_cells)]
        ad.io.write_elem(f, "X", first)
        matrix = ad.io.sparse_dataset(f["X"])
        written = first.shape[0]
        while written < n_cells:
            block = base.X[: min(base.n_obs, n_cells - written)]
            matrix.append(block)
            written += block.shape[0]
        for key in ("uns", "obsm", "varm", "layers", "obsp", "varp"):
            ad.io.write_elem(f, key, {})


# ---------------------------------------------------------------- one configuration (child)


def run_config(path: str, model_name: str, mode: str, procs: int, train_cells: int,
               predict_controls: int, threads: int) -> dict | None:
    """Train (warm-up + timed epoch) and predict one configuration; rank 0 returns its
    measurements, other ranks None (after printing their own peak memory)."""
    import anndata as ad

    from citevae import setup_anndata
    from citevae.data.batching import ROLE_TARGET
    from citevae.model.citevae import CiteVAE
    from citevae.model.vae import PlainVAE
    from citevae.module.config import ModuleConfig
    from citevae.train import trainer as trainer_module

    epochs: list[tuple[float, float, int]] = []

    class TimedHistory(trainer_module.History):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self._cells, self._start, self._cpu = 0, time.perf_counter(), time.process_time()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self._cells += int((batch["role"] == ROLE_TARGET).sum())

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            epochs.append((time.perf_counter() - self._start, time.process_time() - self._cpu,
                           self._cells * trainer.world_size))
            super().on_train_epoch_end(trainer, pl_module)

    trainer_module.History = TimedHistory  # fit() builds its History from this module name
    rank = int(os.environ.get("LOCAL_RANK", "0"))

    start = time.perf_counter()
    adata = ad.read_h5ad(path, backed="r" if mode == "streaming" else None)
    setup_anndata(adata, **KEYS)
    load_s = time.perf_counter() - start
    peak_setup = _peak_gib()
    train_mask = np.zeros(adata.n_obs, bool)
    train_mask[np.random.default_rng(0).permutation(adata.n_obs)[:train_cells]] = True
    distributed = {"devices": procs, "strategy": "ddp" if procs > 1 else "auto"}
    start = time.perf_counter()
    cfg = ModuleConfig(n_genes=1, n_targets=1, descriptor_dim=1)
    if model_name == "citevae":
        model = CiteVAE(adata, seed=0)
        model.train(max_epochs=2, train_mask=train_mask, val_mask=None, progress_bar=False,
                    num_threads=threads, early_stopping_patience=0, match_start_epoch=0,
                    **distributed)
    else:
        model = PlainVAE(adata, n_latent=cfg.n_programs + cfg.n_invariant,
                         n_hidden=cfg.n_hidden, n_layers=cfg.n_layers)
        model.train(max_epochs=2, train_mask=train_mask, val_mask=None, num_threads=threads,
                    early_stopping_patience=0, **distributed)
    fit_s = time.perf_counter() - start
    peak_train = _peak_gib()
    if rank != 0:
        print(f"PEAK {peak_train}", flush=True)
        return None
    controls_index = np.flatnonzero(adata.obs["perturbation"].astype(str) == "control")
    controls = adata[controls_index[:predict_controls]]
    start = time.perf_counter()
    if model_name == "citevae":
        targets = list(model.registry.vocabulary.targets)
        predicted_rows = model.predict(controls, targets).n_obs
    else:
        predicted_rows = model.get_latent(controls).shape[0]
    predict_s = time.perf_counter() - start
    epoch_s, cpu_s, cells = epochs[-1]
    return {
        "cells": int(adata.n_obs), "model": model_name, "mode": mode, "procs": procs,
        "timed_cells": cells, "setup_s": load_s, "fit_s": fit_s, "epoch_s": epoch_s,
        "train_cells_per_s": cells / epoch_s, "train_cells_per_cpu_s": cells / (cpu_s * procs),
        "predict_rows": int(predicted_rows), "predict_cells_per_s": predicted_rows / predict_s,
        "peak_setup_gib": peak_setup, "peak_train_gib": peak_train, "peak_gib": _peak_gib(),
    }


def _peak_gib() -> float:
    """Peak resident memory of this process so far (GiB; ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ---------------------------------------------------------------- driver


def _label(cells: int) -> str:
    return f"{cells // 10**6}M" if cells % 10**6 == 0 else f"{cells // 1000}k" \
        if cells % 1000 == 0 else str(cells)


def _configurations(size: int, args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """(model, mode, processes) to run at ``size`` cells."""
    out = []
    for model in args.models:
        for mode in args.modes:
            for procs in args.procs:
                if mode == "memory" and size > args.memory_max_cells and (
                        model != "citevae" or procs > 1):
                    continue
                out.append((model, mode, procs))
    return out


def _run_child(path: Path, model: str, mode: str, procs: int, args: argparse.Namespace) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(path), model, mode, str(procs),
         "--train-cells", str(args.train_cells), "--predict-controls", str(args.predict_controls),
         "--threads", str(args.threads)],
        capture_output=True, text=True, env=env)
    lines = proc.stdout.splitlines()
    results = [ln for ln in lines if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not results:
        sys.exit(f"{model}/{mode}/{procs} processes at {path.name} failed:\n{proc.stderr[-3000:]}")
    row = json.loads(results[-1][len("RESULT "):])
    other_ranks = [float(ln.split()[1]) for ln in lines if ln.startswith("PEAK ")]
    row["peak_gib"] = max([row["peak_gib"], *other_ranks])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000],
                        help="cells (e.g. 10000 100000 1000000)")
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--models", nargs="+", default=["citevae", "plainvae"],
                        choices=["citevae", "plainvae"])
    parser.add_argument("--modes", nargs="+", default=["memory", "streaming"],
                        choices=["memory", "streaming"])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2],
                        help="training processes (2: DDP on CPU with gloo)")
    parser.add_argument("--train-cells", type=int, default=20000,
                        help="cells per epoch (a random subset at larger sizes: fixed steps)")
    parser.add_argument("--memory-max-cells", type=int, default=100000,
                        help="above this, memory mode runs CITE-VAE with 1 process only")
    parser.add_argument("--base-cells", type=int, default=10000,
                        help="simulated cells tiled to reach larger sizes")
    parser.add_argument("--predict-controls", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per process")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="keep (and reuse) the h5ad files here (default: a temporary folder)")
    parser.add_argument("--child", nargs=4, metavar=("PATH", "MODEL", "MODE", "PROCS"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--write", nargs=2, metavar=("PATH", "CELLS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        write_dataset(Path(args.write[0]), int(args.write[1]), args.genes, args.base_cells)
        return
    if args.child:
        path, model, mode, procs = args.child
        result = run_config(path, model, mode, int(procs), args.train_cells,
                            args.predict_controls, args.threads)
        if result is not None:
            print("RESULT " + json.dumps(result), flush=True)
        return

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.data_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for size in args.sizes:
            path = folder / f"cells{size}_genes{args.genes}.h5ad"
            if not path.exists():
                start = time.perf_counter()
                # in a subprocess too: a child's ru_maxrss starts at its parent's peak (Linux keeps
                # it across fork and exec), so this driver must stay small
                subprocess.run([sys.executable, __file__, "--write", str(path), str(size),
                                "--genes", str(args.genes), "--base-cells", str(args.base_cells)],
                               check=True)
                print(f"wrote {size} cells x {args.genes} genes "
                      f"({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - start:.1f} s",
                      flush=True)
            for model, mode, procs in _configurations(size, args):
                row = _run_child(path, model, mode, procs, args)
                rows.append(row)
                print(f"  {_label(size):>5s} {model:9s} {mode:9s} {procs} proc  train "
                      f"{row['train_cells_per_s']:6.0f} cells/s  predict "
                      f"{row['predict_cells_per_s']:7.0f} cells/s  peak {row['peak_gib']:.2f} GiB",
                      flush=True)

    import pandas as pd

    table = pd.DataFrame(rows)[["cells", "model", "mode", "procs", "timed_cells", "setup_s",
                                "epoch_s", "train_cells_per_s", "train_cells_per_cpu_s",
                                "predict_cells_per_s",
                                "peak_setup_gib", "peak_train_gib", "peak_gib"]]
    print(f"(timed: one epoch after a warm-up epoch; above {args.train_cells} cells the epochs cover "
          f"a random subset of {args.train_cells} cells, i.e. a fixed number of steps; peak GiB: "
          "ru_maxrss of each configuration's own fresh process, the larger rank's with 2 "
          f"processes; {os.cpu_count()} CPU cores, shared with other work, so rates are noisy: "
          "compare rows of the same run)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))

    def pick(size: int, model: str, mode: str, column: str) -> float:
        hit = table[(table["cells"] == size) & (table["model"] == model) & (table["mode"] == mode)
                    & (table["procs"] == 1)]
        return float(hit[column].iloc[0]) if len(hit) else float("nan")

    pairs = [(size, mode) for size in sorted(args.sizes, reverse=True)
             for mode in ("memory", "streaming")
             if not math.isnan(pick(size, "citevae", mode, "epoch_s") + pick(size, "plainvae", mode,
                                                                                "epoch_s"))]
    size, mode = pairs[0] if pairs else (max(args.sizes), "memory")
    x = pick(size, "citevae", mode, "train_cells_per_s")
    y = pick(size, "plainvae", mode, "train_cells_per_s")
    largest = max(args.sizes)
    z = pick(largest, "citevae", "streaming", "peak_gib")
    cpu_x = pick(size, "citevae", mode, "train_cells_per_cpu_s")
    cpu_y = pick(size, "plainvae", mode, "train_cells_per_cpu_s")
    print(f"(ratio at {_label(size)} cells, {mode}, 1 process; per CPU-second of the process, "
          f"which other work on the machine disturbs less: citevae={cpu_x:.0f} plainvae={cpu_y:.0f} "
          f"ratio={cpu_y / cpu_x:.2f})")
    print(f"train cells/s citevae={x:.0f} plainvae={y:.0f} ratio={y / x:.2f}; "
          f"streaming {_label(largest)} peak GiB={z:.2f}")


if __name__ == "__main__":
    main()
