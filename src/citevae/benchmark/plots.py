"""Benchmark figures: predicted vs observed deltas, metric bars, program graphs, latent paths.

Every function builds a fresh ``matplotlib.figure.Figure`` on its own Agg canvas (no pyplot, so
no global figure registry or backend switch) and returns it; save it with ``fig.savefig(path)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from citevae.benchmark.evaluate import Evaluation, HeldOutUnit
from citevae.errors import CiteVAEError

ID_COLUMNS = ("method", "unit", "group", "seed", "split", "suite")
PANEL = 3.2  # inches per panel


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _find_unit(evaluation: Evaluation, unit_key: str) -> HeldOutUnit:
    for unit in evaluation.units:
        if unit.key == unit_key:
            return unit
    keys = [u.key for u in evaluation.units]
    raise CiteVAEError(f"held-out unit {unit_key!r} is not in the evaluation; choose one of {keys}")


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def unit_deltas(evaluation: Evaluation, prediction: AnnData, unit: HeldOutUnit
                ) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, observed) mean delta vs the unit's control cells on its top DE genes (log1p)."""
    registry = evaluation.registry
    values = prediction.layers.get("log1p", prediction.X)
    values = np.asarray(values.toarray() if hasattr(values, "toarray") else values)
    labels = prediction.obs[registry.perturbation_key].astype(str).to_numpy()
    chosen = (labels == unit.condition) & (registry.contexts(prediction) == unit.context)
    if registry.time_key is not None:
        chosen &= prediction.obs["step"].to_numpy() == unit.step
    if not chosen.any():
        raise CiteVAEError(f"the prediction has no cells for held-out unit {unit.key!r}")
    genes = np.asarray(unit.de_genes)
    control = evaluation.log1p[unit.controls][:, genes].mean(0)
    observed = evaluation.log1p[unit.cells][:, genes].mean(0) - control
    predicted = values[chosen][:, genes].mean(0) - control
    return predicted, observed


def delta_scatter(evaluation: Evaluation, predictions: dict[str, AnnData], unit_key: str,
                  methods: Sequence[str] | None = None) -> Figure:
    """Predicted vs observed mean delta (vs the unit's control cells) on its top DE genes.

    One panel per method (default: all of ``predictions``), identity line, Pearson r in the title.
    """
    unit = _find_unit(evaluation, unit_key)
    methods = list(methods or predictions)
    missing = [m for m in methods if m not in predictions]
    if missing:
        raise CiteVAEError(f"no predictions for method(s) {missing}; have {list(predictions)}")
    deltas = {m: unit_deltas(evaluation, predictions[m], unit) for m in methods}
    span = max(float(np.abs(np.concatenate(d)).max()) for d in deltas.values()) * 1.1 or 1.0
    fig = _figure(PANEL * len(methods), PANEL + 0.4)
    axes = fig.subplots(1, len(methods), squeeze=False)[0]
    for ax, method in zip(axes, methods, strict=True):
        predicted, observed = deltas[method]
        ax.axhline(0, color="0.85", lw=0.8, zorder=0)
        ax.axvline(0, color="0.85", lw=0.8, zorder=0)
        ax.plot([-span, span], [-span, span], color="0.4", ls="--", lw=1, label="identity")
        ax.scatter(observed, predicted, s=14, alpha=0.8)
        ax.set_xlim(-span, span)
        ax.set_ylim(-span, span)
        ax.set_aspect("equal")
        ax.set_title(f"{method}\nPearson r = {_pearson(predicted, observed):.2f}", fontsize=9)
        ax.set_xlabel("observed delta (log1p)")
    axes[0].set_ylabel("predicted delta (log1p)")
    fig.suptitle(f"{unit.key}: top {len(unit.de_genes)} DE genes", fontsize=10)
    return fig


def metric_columns(scores: pd.DataFrame) -> list[str]:
    """Numeric metric columns of a scores table (all but method/unit/group/seed/split/suite)."""
    return [c for c in scores.columns
            if c not in ID_COLUMNS and pd.api.types.is_numeric_dtype(scores[c])]


def metric_bars(scores: pd.DataFrame, metrics: Sequence[str] | None = None) -> Figure:
    """Bars of the mean +- std over seeds (of the per-seed mean over units) per method.

    One panel per metric; with several test groups, one bar per method within each group.
    """
    metrics = list(metrics or metric_columns(scores))
    missing = [m for m in metrics if m not in scores.columns]
    if missing or not metrics:
        raise CiteVAEError(f"metric column(s) {missing or metrics} are not in the scores; "
                           f"have {metric_columns(scores)}")
    seeds = scores["seed"] if "seed" in scores else pd.Series(0, index=scores.index)
    groups = scores["group"] if "group" in scores else pd.Series("all", index=scores.index)
    table = scores.assign(seed=seeds, group=groups.astype(str))
    methods = list(dict.fromkeys(table["method"]))
    group_names = list(dict.fromkeys(table["group"]))
    per_seed = table.groupby(["method", "group", "seed"])[metrics].mean()
    stats = per_seed.groupby(["method", "group"]).agg(["mean", "std"])
    fig = _figure(max(2.4, 0.45 * len(methods) * len(group_names) + 0.8) * len(metrics), PANEL)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    width = 0.8 / len(methods)
    colours = matplotlib.colormaps["tab10"]
    for ax, metric in zip(axes, metrics, strict=True):
        for i, method in enumerate(methods):
            xs, means, stds = [], [], []
            for g, group in enumerate(group_names):
                if (method, group) in stats.index:
                    xs.append(g + (i - (len(methods) - 1) / 2) * width)
                    means.append(stats.loc[(method, group), (metric, "mean")])
                    stds.append(np.nan_to_num(stats.loc[(method, group), (metric, "std")]))
            ax.bar(xs, means, width=width, yerr=stds, capsize=2, color=colours(i % 10),
                   label=method)
        ax.set_xticks(range(len(group_names)))
        ax.set_xticklabels(group_names if len(group_names) > 1 else [""], rotation=20,
                           fontsize=8)
        ax.set_title(metric, fontsize=9)
        ax.axhline(0, color="0.3", lw=0.6)
    axes[0].legend(fontsize=7, frameon=False)
    return fig


def program_graph(model, perturbations: Sequence[str], max_programs: int | None = None) -> Figure:
    """Heatmaps of Lambda(u) (``model.causal_graph``) per perturbation, one shared colour scale
    centred at 0; entry [i, j] = weight of program j -> program i (first ``max_programs``)."""
    perturbations = list(perturbations)
    if not perturbations:
        raise CiteVAEError("program_graph needs at least one perturbation")
    graphs = [model.causal_graph(p) for p in perturbations]
    if max_programs is not None:
        graphs = [g.iloc[:max_programs, :max_programs] for g in graphs]
    vmax = max(float(np.abs(g.to_numpy()).max()) for g in graphs) or 1.0
    fig = _figure(PANEL * len(perturbations) + 1.4, PANEL + 0.3)
    axes = fig.subplots(1, len(perturbations), squeeze=False)[0]
    image = None
    for ax, name, graph in zip(axes, perturbations, graphs, strict=True):
        image = ax.imshow(graph.to_numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        labels = list(graph.columns)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(graph.index)))
        ax.set_yticklabels(list(graph.index), fontsize=6)
        ax.set_xlabel("source program j")
        ax.set_title(name, fontsize=9)
    axes[0].set_ylabel("target program i")
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="Lambda(u)[i, j]")
    return fig


def latent_trajectories(model, controls: AnnData, perturbations: Sequence[str],
                        programs: Sequence[int] | None = None, n_programs: int = 4) -> Figure:
    """Mean latent path over latent steps (``model.trajectories``) of ``controls`` per program.

    One panel per program (default: the ``n_programs`` whose end-point means differ most from the
    start across perturbations), one line per perturbation, band = +- std over cells.
    """
    perturbations = list(perturbations)
    if not perturbations:
        raise CiteVAEError("latent_trajectories needs at least one perturbation")
    paths = {p: model.trajectories(controls, p) for p in perturbations}
    means = {p: path.mean(0) for p, path in paths.items()}
    stds = {p: path.std(0) for p, path in paths.items()}
    n_latent = next(iter(means.values())).shape[1]
    if programs is None:
        change = np.max([np.abs(m[-1] - m[0]) for m in means.values()], axis=0)
        programs = sorted(np.argsort(-change, kind="stable")[:min(n_programs, n_latent)].tolist())
    programs = [int(p) for p in programs]
    bad = [p for p in programs if not 0 <= p < n_latent]
    if bad:
        raise CiteVAEError(f"program index(es) {bad} out of range; the model has {n_latent}")
    fig = _figure(PANEL * len(programs), PANEL)
    axes = fig.subplots(1, len(programs), squeeze=False)[0]
    colours = matplotlib.colormaps["tab10"]
    for ax, program in zip(axes, programs, strict=True):
        for i, name in enumerate(perturbations):
            mean, std = means[name][:, program], stds[name][:, program]
            steps = np.arange(len(mean))
            ax.plot(steps, mean, color=colours(i % 10), lw=1.5, label=name)
            ax.fill_between(steps, mean - std, mean + std, color=colours(i % 10), alpha=0.2,
                            lw=0)
        ax.set_title(f"z{program}", fontsize=9)
        ax.set_xlabel("latent step")
    axes[0].set_ylabel("latent value")
    axes[0].legend(fontsize=7, frameon=False)
    return fig
