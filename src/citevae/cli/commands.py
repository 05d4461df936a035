"""``citevae demo | simulate | train | predict``."""


import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table
from rich.text import Text

from citevae.cli._common import (
    CLIError,
    ThreadsOption,
    app,
    console,
    err_console,
    read_h5ad,
    reports_errors,
    simulate_app,
    use_threads,
    write_h5ad,
)

DEFAULT_PROGRAMS = 16
"""Latent programs of a jointly trained model when --n-programs is not given."""


# demo ----------------------------------------------------------------------------------------------
@app.command()
@reports_errors
def demo(
    out: Annotated[Path | None, typer.Option("--out", help="Folder for model, predictions, table.")] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Training epochs.")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Seed of simulation, split and training.")] = 0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar.")] = True,
    threads: ThreadsOption = None,
) -> None:
    """Simulate counts, hold out target pairs, train CiteVAE and compare it with baselines."""
    from citevae.demo import run_demo

    use_threads(threads)
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
@reports_errors
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
    write_h5ad(adata, out)
    console.print(f"wrote {adata.n_obs} cells x {adata.n_vars} genes "
                  f"({adata.obs['perturbation'].nunique()} conditions) to {out}")


@simulate_app.command("vector")
@reports_errors
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
    write_h5ad(adata, out)
    console.print(f"wrote {adata.n_obs} cells x {adata.n_vars} features to {out}")


# train ---------------------------------------------------------------------------------------------
class ScaleChoice(StrEnum):
    auto = "auto"
    counts = "counts"
    log1p = "log1p"
    continuous = "continuous"


@app.command()
@reports_errors
def train(
    data: Annotated[Path, typer.Argument(help="Training data (.h5ad); read only.")],
    perturbation_key: Annotated[str, typer.Option("--perturbation-key", help="obs column of labels.")],
    control: Annotated[str, typer.Option("--control", help="Label of control cells.")],
    out: Annotated[Path, typer.Option("--out", help="Model directory to write.")],
    time_key: Annotated[str | None, typer.Option("--time-key", help="obs column of times.")] = None,
    time_unit: Annotated[float | None, typer.Option("--time-unit", help=(
        "Time per latent step for numeric times (default: the gap between observed times); "
        "smaller gives finer latent paths."))] = None,
    covariate_key: Annotated[list[str] | None, typer.Option(
        "--covariate-key", help="obs column of a covariate, e.g. cell type (repeatable).")] = None,
    layer: Annotated[str | None, typer.Option("--layer", help="Layer to model instead of X.")] = None,
    scale: Annotated[ScaleChoice, typer.Option("--scale", help="Expression scale.")] = ScaleChoice.auto,
    max_epochs: Annotated[int, typer.Option("--max-epochs", min=1, help="Training epochs.")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Training seed.")] = 0,
    n_programs: Annotated[int | None, typer.Option("--n-programs", min=1, help=(
        "Latent programs (default 16; with --staged chosen from the data)."))] = None,
    staged: Annotated[bool, typer.Option("--staged", help=(
        "Fit stage by stage (CiteVAE.train_staged, linear drift) instead of by the joint "
        "objective; --max-epochs, --resume and --checkpoint-dir do not apply."))] = False,
    staged_options: Annotated[str | None, typer.Option("--staged-options", help=(
        'JSON of StagedConfig fields for --staged, e.g. \'{"mechanism_steps": 400}\'.'))] = None,
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
    --resume finishes the run with the result of an uninterrupted one. --staged fits the model
    stage by stage instead (no checkpoints).
    """
    from citevae.model import CiteVAE
    from citevae.train.checkpoints import CHECKPOINT_FILE

    use_threads(threads)
    if staged and resume:
        raise CLIError("--resume continues the joint training; --staged has no checkpoints")
    if staged_options is not None and not staged:
        raise CLIError("--staged-options needs --staged")
    if resume and overwrite:
        raise CLIError("--resume and --overwrite contradict each other; pass one of them")
    if out.exists() and not (overwrite or resume):
        raise CLIError(f"{out} exists; pass --overwrite to replace it")
    if staged:
        options = _json_object(staged_options, "--staged-options")
        if n_programs is not None:
            options["n_programs"] = n_programs
        adata = _setup(data, perturbation_key, control, time_key, covariate_key, layer, scale,
                       time_unit)
        model = CiteVAE(adata, linear_transition=True)
        console.print(f"fitting CiteVAE stage by stage on {adata.n_obs} cells")
        result = model.train_staged(seed=seed, num_threads=threads, **options)
        path = model.save(out, overwrite=overwrite)
        console.print(f"fitted {result.components.n_programs} programs and "
                      f"{model.config.n_invariant} invariant dimensions in {result.seconds:.0f} s; "
                      f"saved to {path}")
        return
    checkpoints = checkpoint_dir or out.with_name(f"{out.name}.checkpoints")
    stale = checkpoints / CHECKPOINT_FILE
    if stale.exists() and not resume:
        if not overwrite:
            raise CLIError(f"{stale} holds the checkpoint of an earlier run; pass --resume to "
                           "continue it or --overwrite to start over")
        stale.unlink()
    adata = _setup(data, perturbation_key, control, time_key, covariate_key, layer, scale, time_unit)
    model = CiteVAE(adata, n_programs=n_programs or DEFAULT_PROGRAMS)
    console.print(f"training {model!r} on {adata.n_obs} cells")
    result = model.train(max_epochs=max_epochs, seed=seed, progress_bar=progress, num_threads=threads,
                         checkpoint_dir=checkpoints, resume=resume)
    if result.diverged:
        err_console.print(Text(f"warning: training stopped: {result.diverged}", style="yellow"),
                          soft_wrap=True, highlight=False)
    path = model.save(out, overwrite=overwrite or resume)
    console.print(f"trained {result.epochs_run} epoch(s), best validation loss "
                  f"{result.best_score:.4g} at epoch {result.best_epoch}; saved to {path}")


def _setup(data: Path, perturbation_key: str, control: str, time_key: str | None,
           covariate_key: list[str] | None, layer: str | None, scale: ScaleChoice,
           time_unit: float | None):
    """The training file, read and registered with ``CiteVAE.setup_anndata``."""
    from citevae.model import CiteVAE

    adata = read_h5ad(data)
    CiteVAE.setup_anndata(adata, perturbation_key=perturbation_key, control=control,
                          time_key=time_key, covariate_keys=list(covariate_key or ()), layer=layer,
                          scale=scale.value, time_unit=time_unit)
    return adata


def _json_object(text: str | None, option: str) -> dict:
    """The JSON object given to ``option`` ({} when not given)."""
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise CLIError(f"{option} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise CLIError(f"{option} must be a JSON object like '{{\"key\": 1}}', got {text}")
    return value


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
@reports_errors
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

    use_threads(threads)
    if not model_dir.is_dir():
        raise CLIError(f"model directory not found: {model_dir}")
    labels = _split_list(perturbations)
    if not labels:
        raise CLIError('--perturbations is empty; give labels like "A,B+C"')
    cells = read_h5ad(controls)
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
    write_h5ad(result, out, inputs=(controls,))
    console.print(f"wrote {result.n_obs} predicted cells ({len(labels)} perturbation(s) x "
                  f"{cells.n_obs} control cells) on the {result.uns['citevae']['scale']} scale to {out}")

