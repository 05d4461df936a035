"""Benchmark tables: mean ± std over seeds per suite, test group and method, as markdown and CSV.

Input: scores with one row per method, held-out unit and seed (columns "method", "group", "seed",
the metrics, and "suite" when several suites are pooled). Each seed's value is the mean over its
held-out units of the group; the table gives mean and std (ddof 1) of those over seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from citevae._atomic import atomic_path, write_text
from citevae.benchmark.run import CITEVAE
from citevae.errors import CiteVAEError

TABLE_METRICS = ("pearson_delta", "pearson_delta_top20_de", "mse_top20_de", "energy_distance",
                 "pearson_delta_systema")
"""Metrics shown, in order."""

LOWER_IS_BETTER = frozenset({"mse", "mse_top20_de", "energy_distance", "mmd"})
VERDICT_METRICS = ("pearson_delta_top20_de", "mse_top20_de", "energy_distance")
GROUP_ORDER = ("unseen_single", "combo_seen0", "combo_seen1", "combo_seen2", "held_out_context",
               "held_out_time", "user")
ALL_GROUPS = "all"
DISPLAY_NAMES = {CITEVAE: "CITE-VAE"}


def _display(method: str) -> str:
    return DISPLAY_NAMES.get(method, method)


def _suites(scores: pd.DataFrame) -> pd.Series:
    if "suite" in scores:
        return scores["suite"].astype(str)
    if "split" in scores:
        return scores["split"].astype(str)
    return pd.Series("benchmark", index=scores.index)


def summary_table(scores: pd.DataFrame, metrics: Sequence[str] = TABLE_METRICS,
                  include_all: bool = True) -> pd.DataFrame:
    """Long table: one row per suite, group and method with ``<metric>_mean`` / ``<metric>_std``
    and ``n_seeds``, ``n_units_min`` / ``n_units_max`` (held-out units in a seed). With
    ``include_all``, suites of several groups get a group "all" (mean over every held-out unit of
    the suite)."""
    missing = [c for c in ("method", "group", "seed", *metrics) if c not in scores]
    if missing:
        raise CiteVAEError(f"scores lack column(s) {missing}; pass the output of run_split/run_suite")
    frame = scores.assign(suite=_suites(scores))
    parts = [frame]
    if include_all:
        multi = frame.groupby("suite")["group"].transform("nunique") > 1
        if multi.any():
            parts.append(frame[multi].assign(group=ALL_GROUPS))
    frame = pd.concat(parts, ignore_index=True)
    keys = ["suite", "group", "method"]
    per_seed = frame.groupby([*keys, "seed"])[list(metrics)].mean()
    grouped = per_seed.groupby(level=keys)
    means, stds = grouped.mean(), grouped.std(ddof=1)
    out = pd.concat([means.add_suffix("_mean"), stds.add_suffix("_std")], axis=1)
    out = out[[f"{m}_{s}" for m in metrics for s in ("mean", "std")]]
    out["n_seeds"] = grouped.size()
    if "unit" in frame:
        per_seed_units = frame.groupby([*keys, "seed"])["unit"].nunique().groupby(level=keys)
        out["n_units_min"], out["n_units_max"] = per_seed_units.min(), per_seed_units.max()
    else:
        out["n_units_min"] = out["n_units_max"] = np.nan
    out = out.reset_index()
    order = {g: i for i, g in enumerate((*GROUP_ORDER, ALL_GROUPS))}
    out["_g"] = out["group"].map(lambda g: order.get(g, len(order)))
    out["_m"] = (out["method"] != CITEVAE).astype(int)
    suite_order = {s: i for i, s in enumerate(dict.fromkeys(frame["suite"]))}
    out["_s"] = out["suite"].map(suite_order)
    return out.sort_values(["_s", "_g", "_m", "method"]).drop(columns=["_s", "_g", "_m"]) \
        .reset_index(drop=True)


def _best(values: pd.Series, metric: str) -> float:
    finite = values[np.isfinite(values)]
    if finite.empty:
        return np.nan
    return finite.min() if metric in LOWER_IS_BETTER else finite.max()


def _cell(mean: float, std: float, best: float, digits: int) -> str:
    if not np.isfinite(mean):
        return "n/a"
    text = f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if np.isfinite(std) else "")
    return f"**{text}**" if np.isfinite(best) and np.isclose(mean, best, rtol=0, atol=0) else text


def verdict(summary: pd.DataFrame, suite: str, metrics: Sequence[str] = VERDICT_METRICS,
            digits: int = 3) -> str:
    """One line: is CITE-VAE ahead of the best baseline of ``suite`` on each metric (over all of its
    held-out units)?"""
    rows = summary[summary["suite"] == suite]
    groups = set(rows["group"])
    rows = rows[rows["group"] == (ALL_GROUPS if ALL_GROUPS in groups else next(iter(groups)))]
    model = rows[rows["method"] == CITEVAE]
    baselines = rows[rows["method"] != CITEVAE]
    if model.empty or baselines.empty:
        return f"{suite}: no comparison (needs CITE-VAE and at least one baseline)."
    ahead, behind = [], []
    for metric in metrics:
        column = f"{metric}_mean"
        ours = float(model[column].iloc[0])
        values = baselines.set_index("method")[column].astype(float)
        best = _best(values, metric)
        if not np.isfinite(best) or not np.isfinite(ours):
            behind.append(f"{metric} (not comparable: n/a)")
            continue
        name = values[values == best].index[0]
        text = f"{metric} ({ours:.{digits}f} vs {name} {best:.{digits}f})"
        better = ours < best if metric in LOWER_IS_BETTER else ours > best
        (ahead if better else behind).append(text)
    parts = []
    if ahead:
        parts.append("CITE-VAE ahead of the best baseline on " + ", ".join(ahead))
    if behind:
        parts.append("not yet ahead on " + ", ".join(behind))
    return f"{suite}: " + "; ".join(parts) + "."


def markdown_table(scores: pd.DataFrame, metrics: Sequence[str] = TABLE_METRICS,
                   digits: int = 3) -> str:
    """Markdown: per suite and test group a method x metric table of mean ± std over seeds (best
    per column in bold; higher is better except mse and energy distance), then per-suite verdicts."""
    summary = summary_table(scores, metrics)
    arrows = [f"{m} {'↓' if m in LOWER_IS_BETTER else '↑'}" for m in metrics]
    lines = ["# Benchmark", "",
             "Mean ± std over seeds of the per-seed mean over held-out units; log1p scale. "
             "↑ higher is better, ↓ lower is better; best per column in bold.", ""]
    verdicts = []
    for suite, of_suite in summary.groupby("suite", sort=False):
        lines += [f"## {suite}", ""]
        for group, rows in of_suite.groupby("group", sort=False):
            n_seeds = int(rows["n_seeds"].max())
            low, high = rows["n_units_min"].min(), rows["n_units_max"].max()
            span = f"{int(low)}" if low == high else f"{int(low)}-{int(high)}"
            units = f", {span} held-out unit(s) per seed" if np.isfinite(low) else ""
            lines += [f"### {group} ({n_seeds} seed(s){units})", "",
                      "| method | " + " | ".join(arrows) + " |",
                      "|---|" + "---:|" * len(metrics)]
            bests = {m: _best(rows[f"{m}_mean"].astype(float), m) for m in metrics}
            for _, row in rows.iterrows():
                cells = [_cell(float(row[f"{m}_mean"]), float(row[f"{m}_std"]), bests[m], digits)
                         for m in metrics]
                lines.append(f"| {_display(row['method'])} | " + " | ".join(cells) + " |")
            lines.append("")
        verdicts.append(verdict(summary, suite))
    lines += ["## Verdicts", "", *[f"- {v}" for v in verdicts], ""]
    return "\n".join(lines)


def write_tables(scores: pd.DataFrame, out_dir: str | Path,
                 metrics: Sequence[str] = TABLE_METRICS) -> tuple[Path, Path]:
    """Write ``table.md`` (markdown_table) and ``table.csv`` (summary_table) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, csv = out_dir / "table.md", out_dir / "table.csv"
    write_text(md, markdown_table(scores, metrics))
    with atomic_path(csv) as temp:
        summary_table(scores, metrics).to_csv(temp, index=False)
    return md, csv


def compact_table(scores: pd.DataFrame, metrics: Sequence[str] = ("pearson_delta", *VERDICT_METRICS),
                  digits: int = 3) -> str:
    """One markdown table for a README: per suite its pooled group ("all" when it has several)
    and every method, mean ± std over seeds, best per suite and column in bold."""
    summary = summary_table(scores, metrics)
    pooled = summary.groupby("suite")["group"].transform(lambda g: (g == ALL_GROUPS).any())
    summary = summary[~pooled | (summary["group"] == ALL_GROUPS)]
    header = "| suite (held-out group) | method | " + " | ".join(
        f"{m} {'↓' if m in LOWER_IS_BETTER else '↑'}" for m in metrics) + " |"
    lines = [header, "|---|---|" + "---:|" * len(metrics)]
    for (suite, group), rows in summary.groupby(["suite", "group"], sort=False):
        best = {m: _best(rows[f"{m}_mean"], m) for m in metrics}
        for first, (_, row) in enumerate(rows.iterrows()):
            label = f"{suite} ({group})" if first == 0 else ""
            cells = [_cell(row[f"{m}_mean"], row[f"{m}_std"], best[m], digits) for m in metrics]
            lines.append(f"| {label} | {_display(row['method'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
