"""Command line: ``citevae demo | simulate | train | predict | benchmark`` (typer, rich output).

Bad input (citevae errors, missing or unreadable files) ends with one red ``error: ...`` line on
stderr and exit status 1, without a traceback. Input files are only read, never written; every
output file is written under a temporary name and renamed, so it is complete or absent.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

app = typer.Typer(
    name="citevae",
    help="CITE-VAE: predict single-cell responses to unseen genetic perturbations, "
    "combinations and times.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
simulate_app = typer.Typer(help="Write a simulated data set with known ground truth (h5ad).",
                           no_args_is_help=True)
app.add_typer(simulate_app, name="simulate")

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


class CLIError(Exception):
    """A problem to report as one line, without a traceback."""


def _fail(message: str) -> None:
    line = " ".join(str(message).split()) or "unknown error"
    err_console.print(Text(f"error: {line}", style="bold red"), soft_wrap=True, highlight=False)
    raise typer.Exit(code=1)


def _reports_errors(fn: F) -> F:
    """Turn bad-input exceptions of a command into one red line and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CLIError as err:
            _fail(str(err))
        except (ValueError, OSError, KeyError) as err:  # CiteVAEError is a ValueError
            detail = err.args[0] if isinstance(err, KeyError) and err.args else err
            _fail(f"{type(err).__name__}: {detail}" if not str(detail) else str(detail))

    return wrapper  # type: ignore[return-value]


def _read_h5ad(path: Path):
    """Read an h5ad file fully into memory (the file is never written)."""
    import anndata as ad

    if not path.exists():
        raise CLIError(f"file not found: {path}")
    if not path.is_file():
        raise CLIError(f"not a file: {path}")
    try:
        return ad.read_h5ad(path)
    except Exception as err:  # h5py / anndata raise many types for corrupt files
        raise CLIError(f"cannot read {path} as h5ad: {type(err).__name__}: {err}") from None


def _write_h5ad(adata, out: Path, inputs: tuple[Path, ...] = ()) -> None:
    """Write ``adata`` to ``out``, refusing to overwrite an input file."""
    for src in inputs:
        if src.exists() and out.exists() and out.resolve() == src.resolve():
            raise CLIError(f"--out {out} is an input file; choose another output path")
    from citevae._atomic import atomic_path

    try:
        with atomic_path(out) as temp:
            adata.write_h5ad(temp)
    except Exception as err:
        raise CLIError(f"cannot write {out}: {type(err).__name__}: {err}") from None


def _threads(threads: int | None) -> None:
    from citevae._settings import set_num_threads

    set_num_threads(threads)


ThreadsOption = Annotated[
    int | None,
    typer.Option("--threads", min=1, help="torch intra-op threads (default 1, or $CITEVAE_NUM_THREADS)."),
]


# demo ----------------------------------------------------------------------------------------------
@app.command()
@_reports_errors
def demo(
    out: Annotated[Path | None, typer.Option("--out", help="Folder for model, predictions, table.")] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Training epochs.")] = 60,
    seed: Annotated[int, typer.Option("--seed", help="Seed of simulation, split and training.")] = 0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar.")] = True,
    threads: ThreadsOption = None,
) -> None:
    """Simulate counts, hold out target pairs, train CiteVAE and compare it with baselines."""
    from citevae.demo import run_demo

    _threads(threads)
    console.print("[bold]citevae demo[/]: simulated counts, 30% of target pairs held out")
    table = run_demo(out_dir=out, epochs=epochs, seed=seed, progress_bar=progress, num_threads=threads)
    view = Table(title=f"Held-out pairs ({table.attrs.get('n_pairs', '?')}), log1p scale, "
                       "means over pairs")
    view.add_column("method", style="bold", no_wrap=True, min_width=12)
    for column in table.columns:
        view.add_column(column, justify="right", no_wrap=True, min_width=len(column))
    for method, row in table.iterrows():
        view.add_row(str(method), *["n/a" if np.isnan(v) else f"{v:.3f}" for v in row.to_numpy()])
    console.print(view)
    console.print("pearson_delta: higher is better; mse_top20 and energy_distance: lower is better; "
                  "n/a: correlation of no change. "
                  f"Took {table.attrs.get('seconds', float('nan')):.0f} s.")
    if out is not None:
        console.print(f"wrote model, predictions.h5ad, metrics.csv and metrics_per_pair.csv to {out}")


# simulate ------------------------------------------------------------------------------------------
OutFile = Annotated[Path, typer.Option("--out", help="Output .h5ad file.")]


@simulate_app.command("counts")
@_reports_errors
def simulate_counts_cmd(
    out: OutFile,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    n_genes: Annotated[int, typer.Option(help="Genes.")] = 200,
    n_targets: Annotated[int, typer.Option(help="Perturbed target genes.")] = 10,
    n_pairs: Annotated[int, typer.Option(help="Target pairs.")] = 10,
    n_programs: Annotated[int, typer.Option(help="Latent programs.")] = 5,
    n_cells: Annotated[int, typer.Option(help="Cells per condition.")] = 200,
    n_steps: Annotated[int, typer.Option(help="Latent steps T.")] = 4,
    n_contexts: Annotated[int, typer.Option(help="Cell types (contexts).")] = 1,
    paired: Annotated[bool, typer.Option(help="Observe every cell at every step 0..T.")] = False,
) -> None:
    """Perturb-seq-like NB counts of single and paired target-gene perturbations."""
    from citevae.sim import simulate_counts

    adata = simulate_counts(n_programs=n_programs, n_genes=n_genes, n_targets=n_targets,
                            n_pairs=n_pairs, n_cells_per_condition=n_cells, n_steps=n_steps,
                            paired=paired, n_contexts=n_contexts, seed=seed)
    _write_h5ad(adata, out)
    console.print(f"wrote {adata.n_obs} cells x {adata.n_vars} genes "
                  f"({adata.obs['perturbation'].nunique()} conditions) to {out}")


@simulate_app.command("vector")
@_reports_errors
def simulate_vector_cmd(
    out: OutFile,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    n_latents: Annotated[int, typer.Option(help="Latent causal variables n.")] = 5,
    n_genes: Annotated[int | None, typer.Option(help="Observed dimensions (default 2n).")] = None,
    n_regimes: Annotated[int | None, typer.Option(help="Regimes incl. control (default 2n+1).")] = None,
    n_cells: Annotated[int, typer.Option(help="Individuals per regime.")] = 500,
    n_steps: Annotated[int, typer.Option(help="Latent steps T.")] = 4,
) -> None:
    """Continuous observations of paired latent sequences in K regimes (identifiability setting)."""
    from citevae.sim import simulate_vector

    adata = simulate_vector(n_latents=n_latents, n_regimes=n_regimes, n_individuals_per_regime=n_cells,
                            n_steps=n_steps, obs_dim=n_genes, seed=seed)
    _write_h5ad(adata, out)
    console.print(f"wrote {adata.n_obs} cells x {adata.n_vars} features to {out}")


# train ---------------------------------------------------------------------------------------------
class ScaleChoice(StrEnum):
    auto = "auto"
    counts = "counts"
    log1p = "log1p"
    continuous = "continuous"


@app.command()
@_reports_errors
def train(
    data: Annotated[Path, typer.Argument(help="Training data (.h5ad); read only.")],
    perturbation_key: Annotated[str, typer.Option("--perturbation-key", help="obs column of labels.")],
    control: Annotated[str, typer.Option("--control", help="Label of control cells.")],
    out: Annotated[Path, typer.Option("--out", help="Model directory to write.")],
    time_key: Annotated[str | None, typer.Option("--time-key", help="obs column of times.")] = None,
    covariate_key: Annotated[list[str] | None, typer.Option(
        "--covariate-key", help="obs column of a covariate, e.g. cell type (repeatable).")] = None,
    layer: Annotated[str | None, typer.Option("--layer", help="Layer to model instead of X.")] = None,
    scale: Annotated[ScaleChoice, typer.Option("--scale", help="Expression scale.")] = ScaleChoice.auto,
    max_epochs: Annotated[int, typer.Option("--max-epochs", min=1, help="Training epochs.")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Training seed.")] = 0,
    n_programs: Annotated[int, typer.Option("--n-programs", min=1, help="Latent programs.")] = 16,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing --out and start over from epoch 0.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help=(
        "Continue an interrupted run (same data and options) from its last checkpoint."))] = False,
    checkpoint_dir: Annotated[Path | None, typer.Option("--checkpoint-dir", help=(
        "Folder of the checkpoint written after every epoch (default: OUT.checkpoints)."))] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar.")] = True,
    threads: ThreadsOption = None,
) -> None:
    """Fit CiteVAE to an h5ad file and save the model directory.

    A checkpoint is replaced after every epoch; after a crash or kill, the same command with
    --resume finishes the run with the result of an uninterrupted one.
    """
    from citevae.model import CiteVAE
    from citevae.train.checkpoints import CHECKPOINT_FILE

    _threads(threads)
    if resume and overwrite:
        raise CLIError("--resume and --overwrite contradict each other; pass one of them")
    if out.exists() and not (overwrite or resume):
        raise CLIError(f"{out} exists; pass --overwrite to replace it")
    checkpoints = checkpoint_dir or out.with_name(f"{out.name}.checkpoints")
    stale = checkpoints / CHECKPOINT_FILE
    if stale.exists() and not resume:
        if not overwrite:
            raise CLIError(f"{stale} holds the checkpoint of an earlier run; pass --resume to "
                           "continue it or --overwrite to start over")
        stale.unlink()
    adata = _read_h5ad(data)
    CiteVAE.setup_anndata(adata, perturbation_key=perturbation_key, control=control,
                          time_key=time_key, covariate_keys=list(covariate_key or ()), layer=layer,
                          scale=scale.value)
    model = CiteVAE(adata, n_programs=n_programs)
    console.print(f"training {model!r} on {adata.n_obs} cells")
    result = model.train(max_epochs=max_epochs, seed=seed, progress_bar=progress, num_threads=threads,
                         checkpoint_dir=checkpoints, resume=resume)
    if result.diverged:
        err_console.print(Text(f"warning: training stopped: {result.diverged}", style="yellow"),
                          soft_wrap=True, highlight=False)
    path = model.save(out, overwrite=overwrite or resume)
    console.print(f"trained {result.epochs_run} epoch(s), best validation loss "
                  f"{result.best_score:.4g} at epoch {result.best_epoch}; saved to {path}")


# predict -------------------------------------------------------------------------------------------
def _split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _parse_times(text: str | None, registry) -> list | None:
    """Time labels from "24,48"; numbers when the model's time mapping is linear."""
    if text is None:
        return None
    items = _split_list(text)
    if not items:
        raise CLIError("--times is empty; give labels like '24,48'")
    mapping = registry.time_mapping
    if mapping is None or mapping.mode != "linear":
        return items
    numbers = []
    for item in items:
        try:
            value = float(item)
        except ValueError:
            raise CLIError(f"time label {item!r} is not a number, but the model's time "
                           f"mapping ({registry.time_key!r}) is linear in numeric time") from None
        numbers.append(int(value) if value.is_integer() else value)
    return numbers


@app.command()
@_reports_errors
def predict(
    model_dir: Annotated[Path, typer.Argument(help="Model directory written by 'citevae train'.")],
    controls: Annotated[Path, typer.Argument(help="Control cells (.h5ad); read only.")],
    perturbations: Annotated[str, typer.Option("--perturbations", help='Comma list, e.g. "A,B+C".')],
    out: Annotated[Path, typer.Option("--out", help="Output .h5ad of predicted cells.")],
    times: Annotated[str | None, typer.Option("--times", help='Comma list of time labels, e.g. "24,48".')]
    = None,
    sample: Annotated[bool, typer.Option("--sample", help="Draw cells instead of means.")] = False,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the draws (with --sample).")] = None,
    threads: ThreadsOption = None,
) -> None:
    """Predict every control cell under every perturbation (and time); write an h5ad."""
    from citevae.model import CiteVAE

    _threads(threads)
    if not model_dir.is_dir():
        raise CLIError(f"model directory not found: {model_dir}")
    labels = _split_list(perturbations)
    if not labels:
        raise CLIError('--perturbations is empty; give labels like "A,B+C"')
    cells = _read_h5ad(controls)
    model = CiteVAE.load(model_dir)
    registry = model.registry
    key = registry.perturbation_key
    if key in cells.obs:  # keep the control cells of a mixed file
        canonical = registry.vocabulary.canonical
        is_control = cells.obs[key].astype(str).map(
            lambda v: canonical(v) == registry.control).to_numpy(bool)
        if not is_control.any():
            raise CLIError(f"no cell of {controls} has the control label {registry.control!r} "
                           f"in obs[{key!r}]")
        if not is_control.all():
            console.print(f"using the {int(is_control.sum())} control cells of {cells.n_obs}")
            cells = cells[is_control].copy()
    result = model.predict(cells, labels, times=_parse_times(times, registry), sample=sample, seed=seed)
    _write_h5ad(result, out, inputs=(controls,))
    console.print(f"wrote {result.n_obs} predicted cells ({len(labels)} perturbation(s) x "
                  f"{cells.n_obs} control cells) on the {result.uns['citevae']['scale']} scale to {out}")


# benchmark -----------------------------------------------------------------------------------------
DEFAULT_DATA_DIR = Path("../shared/data")


def _benchmark_report(out: Path, scores, extras: dict) -> Path | None:
    """Call ``citevae.benchmark.report.write_report(out, scores, {"suite/seedN": extras})`` when
    that module provides it; the path it wrote, or None."""
    import importlib

    try:
        report = importlib.import_module("citevae.benchmark.report")
    except ImportError:
        return None
    write_report = getattr(report, "write_report", None)
    if write_report is None:
        return None
    try:
        result = write_report(out, scores, extras)
    except Exception as err:  # the tables are written; a failing report must not lose them
        err_console.print(Text(f"warning: no HTML report: {type(err).__name__}: {err}",
                               style="yellow"), soft_wrap=True, highlight=False)
        return None
    return Path(result) if isinstance(result, str | Path) else None


@app.command()
@_reports_errors
def benchmark(
    suites: Annotated[list[str] | None, typer.Argument(
        help="Suites to run (default: all); see citevae.benchmark.suites.SUITES.")] = None,
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Folder of the real datasets.")]
    = DEFAULT_DATA_DIR,
    seeds: Annotated[list[int] | None, typer.Option(
        "--seeds", help="Seeds (repeat or space-separate: --seeds 0 1 2).")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help=(
        "Maximum training epochs (default: per-suite settings, early stopping)."))] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for scores.csv, table.md, table.csv.")]
    = Path("results/benchmark"),
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar.")] = True,
    threads: ThreadsOption = None,
) -> None:
    """Run benchmark suites on the real data: CITE-VAE against baselines, mean ± std over seeds."""
    import pandas as pd
    from rich.markdown import Markdown
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from citevae._atomic import atomic_path
    from citevae.benchmark.suites import SUITES, run_suite
    from citevae.benchmark.tables import markdown_table, write_tables

    _threads(threads)
    names = list(suites or [])
    # "--seeds 0 1 2": click takes only the first value for the option; the rest arrive as
    # positional arguments (suite names are never numbers), so move them back to the seeds
    extra = [int(n) for n in names if n.lstrip("-").isdigit()]
    if extra and not seeds:
        raise CLIError(f"numbers {extra} given as suites; pass seeds with --seeds")
    seeds = [*(seeds or []), *extra]
    names = [n for n in names if not n.lstrip("-").isdigit()] or list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise CLIError(f"unknown suite(s) {', '.join(unknown)}; available: {', '.join(SUITES)}")
    seeds = list(dict.fromkeys(seeds)) if seeds else [0, 1, 2]
    if not data_dir.is_dir():
        raise CLIError(f"data folder not found: {data_dir}; pass --data-dir")
    out.mkdir(parents=True, exist_ok=True)
    extras: dict = {}
    frames = []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total} runs"), TimeElapsedColumn(), console=console,
                  disable=not progress) as bar:
        task = bar.add_task("benchmark", total=len(names) * len(seeds))

        def done(name: str, seed: int, found: dict) -> None:
            extras[f"{name}/seed{seed}"] = found
            bar.advance(task)

        for name in names:
            for seed in seeds:
                bar.update(task, description=f"{name} seed {seed}")
                frames.append(run_suite(name, data_dir, [seed], epochs=epochs, on_seed=done))
    scores = pd.concat(frames, ignore_index=True)
    with atomic_path(out / "scores.csv") as temp:
        scores.to_csv(temp, index=False)
    md, csv = write_tables(scores, out)
    console.print(Markdown(markdown_table(scores)))
    report = _benchmark_report(out, scores, extras)
    console.print(f"wrote scores.csv, {md.name} and {csv.name}"
                  + (f" and {report.name}" if report is not None else "") + f" to {out}")


@app.callback()
def main() -> None:
    """CITE-VAE: predict single-cell responses to unseen genetic perturbations, combinations, times."""


if __name__ == "__main__":  # pragma: no cover
    app()
