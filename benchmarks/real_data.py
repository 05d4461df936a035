"""CITE-VAE against baselines on every real-data suite (citevae.benchmark.suites), over seeds.

Writes scores.csv, table.md and table.csv (and the HTML report when citevae.benchmark.report is
there) into --out and prints the markdown table; the same as ``citevae benchmark`` for all suites.

    python benchmarks/real_data.py [--seeds 0 1 2] [--out results/real] [--epochs N]
        [--data-dir ../shared/data] [--suites k562_combinations ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from citevae._settings import set_num_threads
from citevae.benchmark.suites import SUITES, run_suite
from citevae.benchmark.tables import markdown_table, write_tables

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "real")
    parser.add_argument("--epochs", type=int, default=None, help="override per-suite max_epochs")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--suites", nargs="+", default=list(SUITES), choices=list(SUITES))
    args = parser.parse_args()
    set_num_threads(None)
    args.out.mkdir(parents=True, exist_ok=True)
    extras, frames = {}, []
    for name in args.suites:
        start = time.perf_counter()
        frames.append(run_suite(name, args.data_dir, args.seeds, epochs=args.epochs,
                                on_seed=lambda n, s, found: extras.__setitem__(f"{n}/seed{s}", found)))
        print(f"{name}: {len(args.seeds)} seed(s) in {time.perf_counter() - start:.0f} s",
              flush=True)
    scores = pd.concat(frames, ignore_index=True)
    scores.to_csv(args.out / "scores.csv", index=False)
    write_tables(scores, args.out)
    try:
        from citevae.benchmark.report import write_report
    except ImportError:
        write_report = None
    if write_report is not None:
        write_report(args.out, scores, extras)
    print(markdown_table(scores))


if __name__ == "__main__":
    main()
