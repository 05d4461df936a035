"""One self-contained HTML benchmark report (summary table and embedded PNG figures), and a check
that it renders in headless Chromium.

``write_report`` writes ``out_dir/figures/*.png`` and ``out_dir/report.html``; the HTML embeds every
figure as a base64 data URI and loads nothing from elsewhere. Its one inline script records, on
load, the decoded size of every image in a hidden ``#render-check`` element, which
``check_report_renders`` reads back from Chromium's ``--dump-dom``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from citevae._atomic import write_bytes
from citevae.benchmark import plots
from citevae.benchmark.run import summarise
from citevae.errors import CiteVAEError

PREFERRED_METRICS = ("pearson_delta_top20_de", "pearson_delta_systema", "mse_top20_de",
                     "energy_distance")
CHROMIUM_PATHS = ("/usr/bin/chromium", "chromium", "chromium-browser")
INSTALL_HINT = ("install Debian's Chromium with `apt-get update && apt-get install -y chromium` "
                "(it provides /usr/bin/chromium)")
MAX_TRAJECTORY_CELLS = 200
N_GRAPH_PERTURBATIONS = 3
DPI = 110

RENDER_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var sizes = images.map(function (im) {
    var done = im.complete && im.naturalWidth > 0 && im.naturalHeight > 0;
    return [im.getAttribute("data-figure"), done ? im.naturalWidth : 0,
            done ? im.naturalHeight : 0];
  });
  var check = document.getElementById("render-check");
  check.setAttribute("data-total", String(images.length));
  check.setAttribute("data-rendered",
                     String(sizes.filter(function (s) { return s[1] > 0; }).length));
  check.textContent = JSON.stringify(sizes);
});
"""

STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f2f2f2; } td.label { text-align: left; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
"""


@dataclass
class _Figure:
    name: str
    caption: str
    png: bytes


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "run"


def _seed_of(run_name: str) -> float:
    match = re.search(r"seed[_-]?(\d+)", run_name.rsplit("/", 1)[-1])
    return float(match.group(1)) if match else np.inf


def first_runs(extras_by_run: dict[str, dict]) -> dict[str, tuple[str, dict]]:
    """{suite: (run name, extras)} of the lowest seed of each suite ("suite/seedN" run names;
    insertion order breaks ties and names without a seed)."""
    chosen: dict[str, tuple[str, dict]] = {}
    for name, extras in extras_by_run.items():
        suite = name.split("/", 1)[0]
        if suite not in chosen or _seed_of(name) < _seed_of(chosen[suite][0]):
            chosen[suite] = (name, extras)
    return chosen


def _suite_column(scores: pd.DataFrame) -> str | None:
    for column in ("suite", "split"):
        if column in scores.columns and scores[column].nunique() > 1:
            return column
    return None


def _plot_metrics(scores: pd.DataFrame) -> list[str]:
    available = plots.metric_columns(scores)
    chosen = [m for m in PREFERRED_METRICS if m in available
              and scores[m].notna().any()]
    return chosen or available[:4]


def _summary_html(scores: pd.DataFrame) -> str:
    """HTML table: mean +- std over seeds (of the mean over held-out units) per (suite,) method."""
    metrics = plots.metric_columns(scores)
    column = _suite_column(scores)
    parts = [(None, scores)] if column is None else list(scores.groupby(column, sort=False))
    head = ([column] if column else []) + ["method", "seeds"] + metrics
    rows = []
    for suite, part in parts:
        table = summarise(part, metrics)
        seeds = part.groupby("method")["seed"].nunique() if "seed" in part else None
        for method in dict.fromkeys(part["method"]):
            cells = [suite] if column else []
            cells += [method, int(seeds[method]) if seeds is not None else 1]
            for metric in metrics:
                mean, std = table.loc[method, (metric, "mean")], table.loc[method, (metric, "std")]
                cells.append("nan" if pd.isna(mean) else f"{mean:.3f}" if pd.isna(std)
                             else f"{mean:.3f} &plusmn; {std:.3f}")
            rows.append(cells)
    labels = len(head) - len(metrics)
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in head) + "</tr>"]
    for cells in rows:
        tds = [f'<td class="label">{html.escape(str(c))}</td>' for c in cells[:labels]]
        tds += [f"<td>{c}</td>" for c in cells[labels:]]
        out.append("<tr>" + "".join(tds) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _seconds_html(extras_by_run: dict[str, dict]) -> str:
    frame = pd.DataFrame({name: extras.get("seconds", {}) for name, extras in extras_by_run.items()}).T
    if frame.empty:
        return ""
    out = ["<table>", "<tr><th>run</th>" + "".join(f"<th>{html.escape(str(m))}</th>"
                                                    for m in frame.columns) + "</tr>"]
    for name, row in frame.iterrows():
        out.append(f'<tr><td class="label">{html.escape(str(name))}</td>'
                   + "".join(f"<td>{v:.1f}</td>" if pd.notna(v) else "<td></td>" for v in row)
                   + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _run_figures(suite: str, run: str, extras: dict) -> list[_Figure]:
    """Delta scatter, program graphs and latent paths of one run."""
    evaluation, predictions, model = extras["evaluation"], extras["predictions"], extras["model"]
    unit = evaluation.units[0]
    slug = _slug(suite)
    figures = [_Figure(
        f"{slug}_delta_scatter",
        f"{run}: predicted vs observed mean change (log1p, vs the test control cells of "
        f"{unit.context}) on the top {len(unit.de_genes)} DE genes of held-out {unit.key}; dashed "
        "line = identity.",
        _png(plots.delta_scatter(evaluation, predictions, unit.key, list(predictions))))]
    held_out = list(dict.fromkeys(u.condition for u in evaluation.units))
    conditions = held_out[:N_GRAPH_PERTURBATIONS]
    if model is not None:  # fill up with single targets the model knows
        for target in model.registry.vocabulary.targets:
            if len(conditions) >= N_GRAPH_PERTURBATIONS:
                break
            if target not in conditions:
                conditions.append(target)
    if model is not None and conditions:
        figures.append(_Figure(
            f"{slug}_program_graph",
            f"{run}: causal graph Lambda(u) between latent programs for {', '.join(conditions)} "
            f"(held out: {', '.join(held_out[:len(conditions)])}); entry [i, j] = weight of "
            "z_j -> z_i, colour scale shared and centred at 0.",
            _png(plots.program_graph(model, conditions))))
        adata = getattr(model, "adata", None)
        if adata is not None:
            controls = adata[unit.controls[:MAX_TRAJECTORY_CELLS]].copy()
            control = model.registry.vocabulary.control
            figures.append(_Figure(
                f"{slug}_latent_trajectories",
                f"{run}: mean latent path of {controls.n_obs} test control cells of "
                f"{unit.context} under each perturbation (band = +- 1 std over cells), for the "
                "programs that move most.",
                _png(plots.latent_trajectories(model, controls, [control, *conditions]))))
    return figures


def write_report(out_dir: str | Path, scores: pd.DataFrame, extras_by_run: dict[str, dict],
                 title: str = "citevae benchmark") -> Path:
    """Write ``out_dir/figures/*.png`` and the self-contained ``out_dir/report.html``; return its path.

    scores: run_split score rows (one per method, unit and seed; a "suite" or "split" column
    separates suites). extras_by_run: {"suite/seedN": run_split extras}; figures use the lowest
    seed of each suite. All files are written atomically.
    """
    if scores.empty:
        raise CiteVAEError("the scores table is empty; run the benchmark before writing a report")
    out_dir = Path(out_dir)
    figure_dir = out_dir / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)

    figures: list[_Figure] = []
    column = _suite_column(scores)
    parts = [("all", scores)] if column is None else list(scores.groupby(column, sort=False))
    for suite, part in parts:
        metrics = _plot_metrics(part)
        label = "" if column is None else f"{suite}: "
        figures.append(_Figure(
            f"{_slug(str(suite))}_metric_bars",
            f"{label}mean over held-out units per seed, then mean +- std over seeds, per method "
            "(and per test group).",
            _png(plots.metric_bars(part, metrics))))
    for suite, (run, extras) in first_runs(extras_by_run).items():
        figures.extend(_run_figures(suite, run, extras))

    sections = []
    for figure in figures:
        write_bytes(figure_dir / f"{figure.name}.png", figure.png)
        data = base64.b64encode(figure.png).decode("ascii")
        sections.append(
            f'<figure id="{figure.name}"><img data-figure="{figure.name}" alt="{figure.name}" '
            f'src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>")
    seconds = _seconds_html(extras_by_run)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    document = "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>", f"<style>{STYLE}</style>",
        f"<script>{RENDER_SCRIPT}</script>", "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Written {stamp}; {scores['method'].nunique()} methods, "
        f"{scores['unit'].nunique() if 'unit' in scores else 0} held-out units, "
        f"{scores['seed'].nunique() if 'seed' in scores else 1} seed(s).</p>",
        "<h2>Summary</h2>",
        "<p>Mean over held-out units per seed, then mean &plusmn; std over seeds.</p>",
        _summary_html(scores),
        *(["<h2>Time (seconds, training or fitting plus prediction)</h2>", seconds]
          if seconds else []),
        "<h2>Figures</h2>", *sections,
        '<pre id="render-check" hidden data-total="-1" data-rendered="-1"></pre>',
        "</body></html>", ""])
    path = out_dir / "report.html"
    write_bytes(path, document.encode("utf-8"))
    return path


def find_chromium() -> str:
    """Path of a Chromium executable (/usr/bin/chromium first); a clear error if there is none."""
    for candidate in CHROMIUM_PATHS:
        found = shutil.which(candidate)
        if found:
            return found
    raise CiteVAEError(f"Chromium is not installed (looked for {', '.join(CHROMIUM_PATHS)}); "
                       f"{INSTALL_HINT}")


def _embedded_png_sizes(document: str) -> dict[str, tuple[int, int]]:
    """{figure name: (width, height)} read from the IHDR of every embedded PNG."""
    sizes = {}
    pattern = r'<img data-figure="([^"]+)"[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"'
    for name, data in re.findall(pattern, document):
        png = base64.b64decode(data)
        sizes[name] = struct.unpack(">II", png[16:24])
    return sizes


def check_report_renders(html_path: str | Path, chromium: str | None = None,
                         timeout: float = 120.0) -> dict:
    """Open the report in headless Chromium and confirm every <img> decoded at its PNG size.

    Returns {"images": total <img> in the rendered DOM, "rendered": those with naturalWidth > 0,
    "embedded": PNG data URIs in the file, "sizes": {figure: [width, height]}, "browser": path}.
    Raises CiteVAEError if Chromium is missing, the check script did not run, or an image failed.
    """
    html_path = Path(html_path).resolve()
    if not html_path.is_file():
        raise CiteVAEError(f"report {html_path} does not exist; write it with write_report first")
    if chromium is None:
        browser = find_chromium()
    elif (browser := shutil.which(chromium)) is None:
        raise CiteVAEError(f"Chromium executable {chromium!r} does not exist; {INSTALL_HINT}")
    expected = _embedded_png_sizes(html_path.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix="citevae-chromium-") as profile:
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                   "--no-first-run", "--disable-background-networking",
                   "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                   "--virtual-time-budget=10000", "--dump-dom", html_path.as_uri()]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                    check=False)
        except subprocess.TimeoutExpired as error:
            raise CiteVAEError(f"headless Chromium did not finish within {timeout} s "
                               f"on {html_path}") from error
    match = re.search(r'<pre id="render-check"[^>]*>(.*?)</pre>', result.stdout, re.S)
    if result.returncode != 0 or match is None:
        raise CiteVAEError(f"headless Chromium could not render {html_path} (exit "
                           f"{result.returncode}): {result.stderr.strip()[-800:]}")
    tag = match.group(0)
    total = int(re.search(r'data-total="(-?\d+)"', tag).group(1))
    rendered = int(re.search(r'data-rendered="(-?\d+)"', tag).group(1))
    if total < 0:
        raise CiteVAEError(f"the render-check script of {html_path} did not run in Chromium; "
                           "was the report written by citevae.benchmark.report.write_report?")
    sizes = {name: [int(w), int(h)] for name, w, h in json.loads(html.unescape(match.group(1)))}
    failed = sorted(name for name, (w, h) in sizes.items() if w <= 0 or h <= 0)
    wrong = sorted(name for name, size in sizes.items()
                   if name in expected and tuple(size) != expected[name] and name not in failed)
    if failed or rendered != total or total != len(expected) or wrong:
        raise CiteVAEError(
            f"{html_path}: {rendered} of {total} images rendered ({len(expected)} embedded); "
            f"not rendered: {failed or 'none'}; wrong size: {wrong or 'none'}")
    return {"images": total, "rendered": rendered, "embedded": len(expected), "sizes": sizes,
            "browser": browser}

