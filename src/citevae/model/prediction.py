"""Prediction requests (control cells x perturbations x times) and their AnnData output."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from citevae.data.registry import DataRegistry
from citevae.data.validate import check_anndata
from citevae.errors import CiteVAEError, format_names


@dataclass(frozen=True)
class PredictionRows:
    """One row per predicted cell: source control cell, perturbation and latent step (R rows)."""

    source: np.ndarray
    perturbation_index: np.ndarray
    perturbations: list[str]
    steps: np.ndarray
    time_labels: np.ndarray


def build_prediction_rows(registry: DataRegistry, controls: AnnData, perturbations: Sequence[str],
                          times: Sequence | None, n_steps: int) -> PredictionRows:
    """Validate a prediction request and lay out its rows (perturbation-major, then time, cell)."""
    check_anndata(controls)
    registry.check_genes(controls)
    key = registry.perturbation_key
    if key in controls.obs:
        labels = controls.obs[key].astype(str)
        not_control = sorted({v for v in labels if registry.vocabulary.canonical(v) != registry.control})
        if not_control:
            raise CiteVAEError(
                f"predictions start from control cells, but the given cells include "
                f"{format_names(not_control)} in obs[{key!r}]; pass only {registry.control!r} cells"
            )
    if isinstance(perturbations, str):
        perturbations = [p for p in perturbations.split(",") if p.strip()] or [perturbations]
    if not len(perturbations):
        raise CiteVAEError("no perturbations given to predict")
    canonical = [registry.vocabulary.canonical(p) for p in perturbations]
    if registry.time_key is None:
        if times is not None:
            raise CiteVAEError("times were given, but the model was set up without a time key")
        labels = np.array([str(n_steps)], dtype=object)
        steps_per_time = np.array([n_steps])
    else:
        mapping = registry.time_mapping
        labels = np.array(list(times) if times is not None else [mapping.labels[-1]], dtype=object)
        steps_per_time = mapping.step_of(labels)
    n_cells, n_times = controls.n_obs, len(labels)
    grid = np.stack(np.meshgrid(np.arange(len(canonical)), np.arange(n_times), np.arange(n_cells),
                                indexing="ij"), -1).reshape(-1, 3)
    is_control = np.array([c == registry.control for c in canonical])[grid[:, 0]]
    steps = np.where(is_control & (registry.time_key is None), 0, steps_per_time[grid[:, 1]])
    time_labels = steps.astype(str).astype(object) if registry.time_key is None else labels[grid[:, 1]]
    return PredictionRows(grid[:, 2], grid[:, 0], canonical, steps.astype(np.int64), time_labels)


def predictions_to_anndata(values: np.ndarray, rows: PredictionRows, controls: AnnData,
                           registry: DataRegistry, sample: bool, seed: int | None,
                           log1p: np.ndarray | None = None) -> AnnData:
    """Wrap predicted expression (R, G) with obs, var and the stated scale.

    ``log1p`` (R, G), if given, becomes the "log1p" layer (expected log1p-normalised expression).
    """
    obs = pd.DataFrame({
        registry.perturbation_key: pd.Categorical(np.array(rows.perturbations)[rows.perturbation_index]),
        "time": _time_column(rows.time_labels, registry),
        "step": rows.steps,
        "control_cell": controls.obs_names[rows.source].to_numpy(),
    })
    for key in registry.covariate_keys:
        obs[key] = pd.Categorical(controls.obs[key].astype(str).to_numpy()[rows.source])
    obs.index = [f"pred{i}" for i in range(len(obs))]
    scale = registry.scale
    out = AnnData(values.astype(np.float32), obs=obs, var=pd.DataFrame(index=list(registry.var_names)))
    out.uns["citevae"] = {
        "scale": scale,
        "description": (
            "expected counts at the source control cell's library size" if scale == "counts" and not sample
            else f"{scale} values, as the training data"
        ) + ("; sampled" if sample else "; means (deterministic)"),
        "sample": bool(sample),
        "seed": -1 if seed is None else int(seed),
    }
    if log1p is not None:
        out.layers["log1p"] = log1p.astype(np.float32)
    return out


def _time_column(labels: np.ndarray, registry: DataRegistry) -> np.ndarray:
    """Time labels as numbers for a linear (numeric) time mapping, else as strings (h5ad-safe)."""
    if registry.time_mapping is not None and registry.time_mapping.mode == "linear":
        return labels.astype(float)
    return labels.astype(str)
