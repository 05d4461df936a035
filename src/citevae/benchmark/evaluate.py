"""Score predictions of held-out conditions against the real cells, with one metric code for all.

Every method (CITE-VAE or a baseline) is scored on the same split: for each held-out unit
(condition in a context, at a step), its real test cells against the method's predicted cells, with
deltas taken against the test control cells of the same context, top-20 DE genes from scanpy's
Wilcoxon test of the real cells against those controls, the Systema centroid of the training
perturbations, and distribution distances in a PCA space fit on training cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from citevae.data.descriptors import log1p_normalised
from citevae.data.registry import DataRegistry, get_registry
from citevae.data.splits import Split, condition_units
from citevae.data.validate import expression_matrix, iter_row_chunks
from citevae.errors import CiteVAEError
from citevae.metrics import N_TOP_DE, PCAProjection, evaluate_perturbation, fit_pca, top_de_genes


@dataclass
class HeldOutUnit:
    """One held-out condition in one context at one step, with its reference data."""

    key: str
    group: str
    condition: str
    context: str
    step: int
    cells: np.ndarray
    controls: np.ndarray
    de_genes: np.ndarray
    centroid: np.ndarray


@dataclass
class Evaluation:
    """Log1p expression of all cells, the held-out units and the PCA space of one split."""

    registry: DataRegistry
    log1p: np.ndarray
    units: list[HeldOutUnit]
    pca: PCAProjection

    def score(self, method: str, prediction: AnnData) -> pd.DataFrame:
        """Metrics (one row per held-out unit) of a method's prediction AnnData.

        The prediction holds per-cell rows with the perturbation key, covariates and "step" in
        ``obs``, on the log1p scale in ``X`` or in its "log1p" layer.
        """
        rows = []
        for unit, predicted in self.unit_predictions(method, prediction):
            scores = evaluate_perturbation(predicted, self.log1p[unit.cells],
                                           self.log1p[unit.controls], unit.de_genes, unit.centroid,
                                           self.pca)
            rows.append({"method": method, "unit": unit.key, "group": unit.group, **scores})
        return pd.DataFrame(rows)

    def unit_predictions(self, method: str,
                         prediction: AnnData) -> list[tuple[HeldOutUnit, np.ndarray]]:
        """Each held-out unit with the predicted cells of ``method`` for it, (cells, G) on the
        log1p scale (``X`` or the "log1p" layer of ``prediction``)."""
        values = prediction.layers.get("log1p", prediction.X)
        values = np.asarray(values.toarray() if hasattr(values, "toarray") else values)
        labels = prediction.obs[self.registry.perturbation_key].astype(str).to_numpy()
        contexts = self.registry.contexts(prediction)
        steps = prediction.obs["step"].to_numpy()
        found = []
        for unit in self.units:
            chosen = (labels == unit.condition) & (contexts == unit.context)
            if self.registry.time_key is not None:
                chosen &= steps == unit.step
            if not chosen.any():
                raise CiteVAEError(f"{method} has no predicted cells for held-out unit {unit.key!r}")
            found.append((unit, values[chosen]))
        return found

    def requests(self) -> list[tuple[str, str, int]]:
        """(condition, context, step) of every held-out unit."""
        return [(u.condition, u.context, u.step) for u in self.units]


def prepare_evaluation(adata: AnnData, split: Split, n_components: int = 50,
                       seed: int = 0) -> Evaluation:
    """Reference data of every held-out unit of ``split`` (log1p scale)."""
    registry = get_registry(adata)
    matrix = expression_matrix(adata, registry.layer)
    log1p = np.concatenate([log1p_normalised(block, registry.scale)
                            for _, block in iter_row_chunks(matrix)]).astype(np.float32)
    units_table = condition_units(adata, registry)
    test, train = split.mask("test"), split.mask("train")
    control = units_table["control"].to_numpy()
    keys = units_table["key"].to_numpy()
    contexts = units_table["context"].to_numpy()
    conditions = units_table["condition"].to_numpy()
    units = []
    for key, group in split.test_groups.items():
        cells = np.flatnonzero((keys == key) & test)
        if not len(cells):
            continue
        context = contexts[cells[0]]
        controls = np.flatnonzero(test & control & (contexts == context))
        de_genes = _de_genes(log1p, cells, controls)
        units.append(HeldOutUnit(key, group, conditions[cells[0]], context,
                                 int(units_table["step"].iloc[cells[0]]), cells, controls, de_genes,
                                 _centroid(log1p, keys, train & ~control, contexts, context)))
    if not units:
        raise CiteVAEError("the split holds no held-out perturbed cells to evaluate")
    pca = fit_pca(log1p[train], n_components=min(n_components, log1p.shape[1] - 1), seed=seed)
    return Evaluation(registry, log1p, units, pca)


def _de_genes(log1p: np.ndarray, cells: np.ndarray, controls: np.ndarray) -> np.ndarray:
    """Top DE genes of ``cells`` against ``controls`` (scanpy Wilcoxon, |score| ranked)."""
    both = np.concatenate([cells, controls])
    labels = np.array(["perturbed"] * len(cells) + ["control"] * len(controls))
    data = AnnData(log1p[both], obs=pd.DataFrame({"group": labels}, index=[str(i) for i in both]))
    return top_de_genes(data, "group", "perturbed", "control", n=N_TOP_DE)


def _centroid(log1p: np.ndarray, keys: np.ndarray, trained: np.ndarray, contexts: np.ndarray,
              context: str) -> np.ndarray:
    """Systema reference: mean of the training perturbed condition means (in the context if any)."""
    here = trained & (contexts == context)
    pool = here if here.any() else trained
    means = [log1p[pool & (keys == key)].mean(0) for key in np.unique(keys[pool])]
    return np.mean(means, axis=0) if means else log1p.mean(0)
