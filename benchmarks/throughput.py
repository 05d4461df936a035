"""Training and prediction throughput and peak memory: in memory vs streaming (backed h5ad).

For each size (cells) a sparse CSR count matrix (simulated, ``--genes`` genes) is written to an
h5ad once; then every configuration (model x mode) runs in its OWN subprocess, so its peak
resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of that process, torch included)
is its own (the data are written by another subprocess: Linux carries a parent's peak into its
children's ru_maxrss, so the driver stays small):

- mode "memory": ``anndata.read_h5ad(path)`` (X loaded whole, scipy CSR);
- mode "streaming": ``anndata.read_h5ad(path, backed="r")`` (X stays on disk; each batch reads
  its rows);
- model "citevae": ``CiteVAE`` with default width; "plainvae": ``PlainVAE`` with the same hidden
  width, depth and latent size (n_programs + n_invariant), trained by the same Trainer and
  condition-grouped batches.

Training: one warm-up epoch, then one timed epoch (all cells train, no validation); train cells/s =
training cells / epoch seconds (each step also reads as many matched control cells, so rows read
per second are twice that). Peak memory is reported after setup (read + ``setup_anndata``), after
training, and at the end (after prediction); ru_maxrss only grows, so each is the peak so far.
Prediction: CITE-VAE predicts means (and the "log1p" layer, 64
likelihood draws) of up to ``--predict-controls`` control cells under every single target;
predicted cells/s = output rows / s. The plain VAE has no perturbation model; its "prediction" is
``get_latent`` (posterior means) of the same control cells, so the two prediction rates are not
comparable.

    python benchmarks/throughput.py                      # 10000 cells x 2000 genes, ~4 min on 2 cores
    python benchmarks/throughput.py --sizes 100000       # ~0.55 GB file; memory mode ~1 GB of X
    python benchmarks/throughput.py --sizes 1000000 --modes streaming   # ~5.5 GB file, needs disk

Larger sizes tile a simulated base block of ``--base-cells`` cells (the file is appended block by
block, so writing it never holds the whole matrix). Setting up still scans the matrix in row
chunks (validation, library sizes). The last line reads
``train cells/s citevae=<x> plainvae=<y> ratio=<y/x>; streaming <N> peak GiB=<z>`` (largest size;
z = peak of the CITE-VAE streaming run).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

KEYS = {"perturbation_key": "perturbation", "control": "control", "covariate_keys": ["cell_type"]}
N_TARGETS, N_PAIRS = 20, 20


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


def run_config(path: str, model_name: str, mode: str, predict_controls: int, threads: int) -> dict:
    """Train (warm-up + timed epoch) and predict one configuration; returns its measurements."""
    import anndata as ad

    from citevae import setup_anndata
    from citevae.model.citevae import CiteVAE
    from citevae.model.vae import PlainVAE
    from citevae.module.config import ModuleConfig
    from citevae.train import trainer as trainer_module

    epoch_seconds: list[float] = []

    class TimedHistory(trainer_module.History):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self._start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            epoch_seconds.append(time.perf_counter() - self._start)
            super().on_train_epoch_end(trainer, pl_module)

    trainer_module.History = TimedHistory  # fit() builds its History from this module name

    start = time.perf_counter()
    adata = ad.read_h5ad(path, backed="r" if mode == "streaming" else None)
    setup_anndata(adata, **KEYS)
    load_s = time.perf_counter() - start
    peak_setup = _peak_gib()
    everything = np.ones(adata.n_obs, bool)
    start = time.perf_counter()
    cfg = ModuleConfig(n_genes=1, n_targets=1, descriptor_dim=1)
    if model_name == "citevae":
        model = CiteVAE(adata, seed=0)
        model.train(max_epochs=2, train_mask=everything, val_mask=None, progress_bar=False,
                    num_threads=threads, early_stopping_patience=0)
    else:
        model = PlainVAE(adata, n_latent=cfg.n_programs + cfg.n_invariant,
                         n_hidden=cfg.n_hidden, n_layers=cfg.n_layers)
        model.train(max_epochs=2, train_mask=everything, val_mask=None, num_threads=threads,
                    early_stopping_patience=0)
    fit_s = time.perf_counter() - start
    peak_train = _peak_gib()
    controls_index = np.flatnonzero(adata.obs["perturbation"].astype(str) == "control")
    controls = adata[controls_index[:predict_controls]]
    start = time.perf_counter()
    if model_name == "citevae":
        targets = list(model.registry.vocabulary.targets)
        predicted_rows = model.predict(controls, targets).n_obs
    else:
        predicted_rows = model.get_latent(controls).shape[0]
    predict_s = time.perf_counter() - start
    return {
        "model": model_name, "mode": mode, "cells": int(adata.n_obs),
        "setup_s": load_s, "fit_s": fit_s, "epoch_s": epoch_seconds[-1],
        "train_cells_per_s": adata.n_obs / epoch_seconds[-1],
        "predict_rows": int(predicted_rows), "predict_cells_per_s": predicted_rows / predict_s,
        "peak_setup_gib": peak_setup, "peak_train_gib": peak_train, "peak_gib": _peak_gib(),
    }


def _peak_gib() -> float:
    """Peak resident memory of this process so far (GiB; ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ---------------------------------------------------------------- driver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000],
                        help="cells (e.g. 10000; 100000 and 1000000 for scale runs)")
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--models", nargs="+", default=["citevae", "plainvae"],
                        choices=["citevae", "plainvae"])
    parser.add_argument("--modes", nargs="+", default=["memory", "streaming"],
                        choices=["memory", "streaming"])
    parser.add_argument("--base-cells", type=int, default=10000,
                        help="simulated cells tiled to reach larger sizes")
    parser.add_argument("--predict-controls", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--workdir", type=Path, default=None, help="where the h5ad files go")
    parser.add_argument("--child", nargs=3, metavar=("PATH", "MODEL", "MODE"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--write", nargs=2, metavar=("PATH", "CELLS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        write_dataset(Path(args.write[0]), int(args.write[1]), args.genes, args.base_cells)
        return
    if args.child:
        result = run_config(*args.child, args.predict_controls, args.threads)
        print("RESULT " + json.dumps(result), flush=True)
        return

    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for size in args.sizes:
            path = Path(tmp) / f"cells{size}.h5ad"
            start = time.perf_counter()
            # in a subprocess too: a child's ru_maxrss starts at its parent's peak (Linux keeps it
            # across fork and exec), so this driver must stay small
            subprocess.run([sys.executable, __file__, "--write", str(path), str(size),
                            "--genes", str(args.genes), "--base-cells", str(args.base_cells)],
                           check=True)
            print(f"wrote {size} cells x {args.genes} genes ({path.stat().st_size / 2**20:.0f} MiB)"
                  f" in {time.perf_counter() - start:.1f} s", flush=True)
            for model in args.models:
                for mode in args.modes:
                    proc = subprocess.run(
                        [sys.executable, __file__, "--child", str(path), model, mode,
                         "--predict-controls", str(args.predict_controls),
                         "--threads", str(args.threads)],
                        capture_output=True, text=True)
                    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                    if proc.returncode != 0 or not lines:
                        sys.exit(f"{model}/{mode} at {size} cells failed:\n{proc.stderr[-3000:]}")
                    row = json.loads(lines[-1][len("RESULT "):])
                    rows.append(row)
                    print(f"  {model:9s} {mode:9s} train {row['train_cells_per_s']:8.0f} cells/s  "
                          f"predict {row['predict_cells_per_s']:8.0f} cells/s  "
                          f"peak {row['peak_gib']:.2f} GiB", flush=True)

    import pandas as pd

    table = pd.DataFrame(rows)[["cells", "model", "mode", "setup_s", "epoch_s",
                                "train_cells_per_s", "predict_rows", "predict_cells_per_s",
                                "peak_setup_gib", "peak_train_gib", "peak_gib"]]
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"(peak memory of each configuration's own process; this driver's peak, a floor "
          f"for them: {_peak_gib():.2f} GiB)")
    largest = table[table["cells"] == max(args.sizes)]

    def pick(model: str, mode: str, column: str) -> float:
        hit = largest[(largest["model"] == model) & (largest["mode"] == mode)]
        return float(hit[column].iloc[0]) if len(hit) else float("nan")

    mode = "memory" if "memory" in args.modes else "streaming"
    x = pick("citevae", mode, "train_cells_per_s")
    y = pick("plainvae", mode, "train_cells_per_s")
    z = pick("citevae", "streaming", "peak_gib")
    print(f"train cells/s citevae={x:.0f} plainvae={y:.0f} ratio={y / x:.2f}; "
          f"streaming {max(args.sizes)} peak GiB={z:.2f}")


if __name__ == "__main__":
    main()
