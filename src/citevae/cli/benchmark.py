"""``citevae benchmark``: suites on the real data, tables, report."""


from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from citevae.cli._common import (
    CLIError,
    ThreadsOption,
    app,
    console,
    err_console,
    reports_errors,
    use_threads,
)

if TYPE_CHECKING:
    import pandas as pd

# benchmark -----------------------------------------------------------------------------------------
DEFAULT_DATA_DIR = Path("../shared/data")


def _benchmark_report(out: Path, scores, extras: dict) -> Path | None:
    """Write the HTML report (``citevae.benchmark.report.write_report``); None, with a warning, if
    it fails: the tables are already written and must not be lost to a report error."""
    from citevae.benchmark.report import write_report

    try:
        return Path(write_report(out, scores, extras))
    except Exception as err:
        err_console.print(Text(f"warning: no HTML report: {type(err).__name__}: {err}",
                               style="yellow"), soft_wrap=True, highlight=False)
        return None


def _cell_eval(folder: Path, suite: str, seed: int, found: dict) -> "pd.DataFrame | None":
    """Write one split's cell-eval inputs to ``folder`` and, when cell-eval is installed, score
    them; the aggregated means (one row per method and context) or None."""
    from citevae.benchmark.celleval import (
        cell_eval_available,
        cell_eval_inputs,
        run_cell_eval,
        write_cell_eval,
    )

    inputs = cell_eval_inputs(found["evaluation"], found["predictions"])
    write_cell_eval(folder, inputs)
    if not cell_eval_available():
        return None
    table = run_cell_eval(folder, inputs)
    means = table[table["statistic"] == "mean"].drop(columns="statistic")
    means.insert(0, "seed", seed)
    means.insert(0, "suite", suite)
    return means


@app.command()
@reports_errors
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
    cell_eval: Annotated[bool, typer.Option("--cell-eval", help=(
        "Also write each split's predictions and real cells in cell-eval's layout under "
        "OUT/cell_eval, and score them with cell-eval when it is installed."))] = False,
    threads: ThreadsOption = None,
) -> None:
    """Run benchmark suites on the real data: CITE-VAE against baselines, mean ± std over seeds."""
    import pandas as pd
    from rich.markdown import Markdown
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from citevae._atomic import atomic_path
    from citevae.benchmark.celleval import cell_eval_available
    from citevae.benchmark.suites import SUITES, run_suite
    from citevae.benchmark.tables import markdown_table, write_tables

    use_threads(threads)
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
    frames, cell_eval_frames = [], []
    if cell_eval and not cell_eval_available():
        err_console.print(Text("cell-eval is not installed (pip install cell-eval): writing its "
                               "input files only", style="yellow"), soft_wrap=True, highlight=False)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total} runs"), TimeElapsedColumn(), console=console,
                  disable=not progress) as bar:
        task = bar.add_task("benchmark", total=len(names) * len(seeds))

        def done(name: str, seed: int, found: dict) -> None:
            extras[f"{name}/seed{seed}"] = found
            frame = _cell_eval(out / "cell_eval" / f"{name}_seed{seed}", name, seed,
                               found) if cell_eval else None
            if frame is not None:
                cell_eval_frames.append(frame)
            bar.advance(task)

        for name in names:
            for seed in seeds:
                bar.update(task, description=f"{name} seed {seed}")
                frames.append(run_suite(name, data_dir, [seed], epochs=epochs, on_seed=done))
    scores = pd.concat(frames, ignore_index=True)
    with atomic_path(out / "scores.csv") as temp:
        scores.to_csv(temp, index=False)
    md, csv = write_tables(scores, out)
    if cell_eval_frames:
        with atomic_path(out / "cell_eval" / "summary.csv") as temp:
            pd.concat(cell_eval_frames, ignore_index=True).to_csv(temp, index=False)
    console.print(Markdown(markdown_table(scores)))
    report = _benchmark_report(out, scores, extras)
    console.print(f"wrote scores.csv, {md.name} and {csv.name}"
                  + (f" and {report.name}" if report is not None else "") + f" to {out}")

