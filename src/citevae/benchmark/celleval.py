"""Benchmark predictions in the layout cell-eval reads, and a cell-eval run when it is installed.

cell-eval (Arc Institute, ``pip install cell-eval``) compares a predicted and a real AnnData that
share genes and an ``obs`` column of perturbation labels, with control cells under one control
label in both (it tests each perturbation against those controls in each file). For one split
and seed, ``cell_eval_inputs`` builds, and ``write_cell_eval`` writes, per context of the
held-out units:

- ``real_<context>.h5ad``: the real test cells of every held-out unit and the context's test
  control cells;
- ``<method>_<context>.h5ad``: each method's predicted cells of every unit and the same controls;

on the log1p scale, labelled by unit key (condition, context and step) in ``obs["perturbation"]``
and ``control`` for the controls. ``run_cell_eval`` scores each method's file against the real
one with ``cell_eval.MetricsEvaluator`` and writes its per-unit and aggregated tables beside them.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from citevae._atomic import atomic_path
from citevae.benchmark.evaluate import Evaluation
from citevae.errors import CiteVAEError

PERT_COL = "perturbation"
CONTROL = "control"
REAL = "real"


def cell_eval_available() -> bool:
    """Whether the ``cell_eval`` package can be imported."""
    return importlib.util.find_spec("cell_eval") is not None


def cell_eval_inputs(evaluation: Evaluation, predictions: Mapping[str, ad.AnnData]
                     ) -> dict[str, dict[str, ad.AnnData]]:
    """{context: {"real" or method: AnnData (cells, G)}} in cell-eval's layout (module docstring).

    ``predictions`` maps method names to prediction AnnData as scored by ``Evaluation.score``.
    """
    if REAL in predictions:
        raise CiteVAEError(f"a method may not be called {REAL!r}: it names the real cells' file")
    per_method = {name: dict((unit.key, cells) for unit, cells in
                             evaluation.unit_predictions(name, prediction))
                  for name, prediction in predictions.items()}
    out: dict[str, dict[str, ad.AnnData]] = {}
    for context in dict.fromkeys(unit.context for unit in evaluation.units):
        units = [unit for unit in evaluation.units if unit.context == context]
        if any(unit.key == CONTROL for unit in units):
            raise CiteVAEError(f"a held-out unit is called {CONTROL!r}, the control label")
        controls = evaluation.log1p[units[0].controls]
        real = [(unit.key, evaluation.log1p[unit.cells]) for unit in units]
        out[context] = {REAL: _labelled(real, controls, evaluation.registry.var_names)}
        for name, cells in per_method.items():
            predicted = [(unit.key, cells[unit.key]) for unit in units]
            out[context][name] = _labelled(predicted, controls, evaluation.registry.var_names)
    return out


def write_cell_eval(folder: str | Path, inputs: Mapping[str, Mapping[str, ad.AnnData]]) -> list[Path]:
    """Write ``cell_eval_inputs`` to ``folder`` as ``<real|method>_<context>.h5ad``; the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for context, files in inputs.items():
        for name, adata in files.items():
            path = folder / f"{_slug(name)}_{_slug(context)}.h5ad"
            with atomic_path(path) as temp:
                adata.write_h5ad(temp)
            paths.append(path)
    return paths


def run_cell_eval(folder: str | Path, inputs: Mapping[str, Mapping[str, ad.AnnData]],
                  profile: str = "full") -> pd.DataFrame:
    """Score every method of ``cell_eval_inputs`` with cell-eval against the real cells, per
    context, and write ``<method>_<context>_results.csv`` and ``..._agg_results.csv`` in ``folder``.

    Returns the aggregated tables stacked: one row per method, context and statistic (mean,
    std, ...), one column per cell-eval metric. Needs ``cell_eval`` (``pip install cell-eval``).
    """
    if not cell_eval_available():
        raise CiteVAEError("cell-eval is not installed: pip install cell-eval")
    from cell_eval import MetricsEvaluator

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for context, files in inputs.items():
        for name, predicted in files.items():
            if name == REAL:
                continue
            stem = f"{_slug(name)}_{_slug(context)}"
            evaluator = MetricsEvaluator(predicted, files[REAL], control_pert=CONTROL,
                                         pert_col=PERT_COL, num_threads=1,
                                         outdir=str(folder / f"{stem}_de"))
            results, aggregated = evaluator.compute(profile=profile, write_csv=False)
            results.write_csv(folder / f"{stem}_results.csv")
            aggregated.write_csv(folder / f"{stem}_agg_results.csv")
            frame = aggregated.to_pandas()
            frame.insert(0, "context", context)
            frame.insert(0, "method", name)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _labelled(groups: list[tuple[str, np.ndarray]], controls: np.ndarray,
              genes: tuple[str, ...]) -> ad.AnnData:
    """One AnnData of labelled cell groups followed by the controls."""
    labels = [label for label, cells in groups for _ in range(len(cells))] + [CONTROL] * len(controls)
    values = np.concatenate([cells for _, cells in groups] + [controls]).astype(np.float32)
    obs = pd.DataFrame({PERT_COL: pd.Categorical(labels)},
                       index=[f"cell{i}" for i in range(len(labels))])
    return ad.AnnData(values, obs=obs, var=pd.DataFrame(index=list(genes)))


def _slug(name: str) -> str:
    """A file-name-safe version of a method or context name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "all"
