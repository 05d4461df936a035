"""Run CITE-VAE and the baselines on one split and seed, and score them with one metric code."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pandas as pd
from anndata import AnnData

from citevae.baselines import get_baseline
from citevae.benchmark.evaluate import Evaluation, prepare_evaluation
from citevae.data.registry import DataRegistry
from citevae.data.splits import Split, condition_units
from citevae.model.citevae import CiteVAE

CITEVAE = "citevae"


def time_label(registry: DataRegistry, step: int) -> object:
    """The time label of a latent step (on the grid for linear mappings, observed for rank)."""
    mapping = registry.time_mapping
    if mapping.mode == "linear":
        return mapping.origin + step * mapping.unit
    return mapping.labels[mapping.steps.index(step)]


def predict_units(method, evaluation: Evaluation, adata: AnnData, split: Split,
                  seed: int = 0) -> AnnData:
    """Predictions of ``method`` (fitted model or baseline) for every held-out unit, from the test
    control cells of each unit's context, concatenated.

    CITE-VAE predicts each control cell plus its predicted change (``relative``) drawn from the
    model (``sample``, with ``seed``): a predicted distribution, as the distribution metrics
    score it; at the means the noise scales and their changes under a perturbation are lost.
    """
    registry = evaluation.registry
    units = condition_units(adata, registry)
    sources = split.mask("test") & units["control"].to_numpy() & (units["step"].to_numpy() == 0)
    contexts = units["context"].to_numpy()
    parts = []
    for condition, context, step in evaluation.requests():
        controls = adata[sources & (contexts == context)]
        times = None if registry.time_key is None else [time_label(registry, step)]
        kwargs = {"relative": True, "sample": True, "seed": seed} if isinstance(method, CiteVAE) else {}
        parts.append(method.predict(controls.copy(), [condition], times=times, **kwargs))
    return _concat(parts)


def run_split(adata: AnnData, split: Split, seed: int = 0,
              baselines: Sequence[str | tuple[str, dict]] = (),
              model_options: dict | None = None, train_options: dict | None = None,
              progress_bar: bool = False, model_seed: int | None = None,
              staged: bool = False) -> tuple[pd.DataFrame, dict]:
    """Train CITE-VAE and fit ``baselines`` on the split's train cells; score all on its test units.

    A baseline is a name or ``(name, kwargs)`` for ``get_baseline`` (e.g. gene features).
    ``seed`` fixes the evaluation (test controls, PCA) and the draws of the predictions;
    ``model_seed`` (default ``seed``) CITE-VAE's initial weights and training order, so the spread
    over trained models can be measured on the same evaluation. With ``staged`` CITE-VAE is
    fitted by ``CiteVAE.train_staged`` and ``train_options`` are ``StagedConfig`` fields.

    Returns (scores: one row per method and held-out unit, extras: fitted model, predictions and
    timings for plots and reports).
    """
    evaluation = prepare_evaluation(adata, split, seed=seed)
    model_options, train_options = dict(model_options or {}), dict(train_options or {})
    start = time.perf_counter()
    model_seed = seed if model_seed is None else model_seed
    model = CiteVAE(adata, seed=model_seed, **model_options)
    if staged:
        model.train_staged(split=split, seed=model_seed, **train_options)
    else:
        model.train(split=split, seed=model_seed, progress_bar=progress_bar, **train_options)
    seconds = {CITEVAE: time.perf_counter() - start}
    predictions = {CITEVAE: predict_units(model, evaluation, adata, split, seed)}
    for spec in baselines:
        name, kwargs = (spec, {}) if isinstance(spec, str) else (spec[0], dict(spec[1]))
        start = time.perf_counter()
        baseline = get_baseline(name, **kwargs).fit(adata, split.mask("train"))
        predictions[name] = predict_units(baseline, evaluation, adata, split)
        seconds[name] = time.perf_counter() - start
    scores = pd.concat([evaluation.score(name, pred) for name, pred in predictions.items()],
                       ignore_index=True)
    scores["seed"] = seed
    scores["split"] = split.name
    return scores, {"model": model, "predictions": predictions, "seconds": seconds,
                    "evaluation": evaluation}


def _concat(parts: list[AnnData]) -> AnnData:
    import anndata as ad

    out = ad.concat(parts, index_unique="-", uns_merge="first")
    for column in out.obs.columns:
        if out.obs[column].dtype == object:
            out.obs[column] = out.obs[column].astype(str)
    out.obs_names = [f"pred{i}" for i in range(out.n_obs)]
    return out


def summarise(scores: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean over held-out units per method and seed, then mean and std over seeds."""
    metrics = list(metrics or [c for c in scores.columns
                              if c not in ("method", "unit", "group", "seed", "split")])
    per_seed = scores.groupby(["method", "seed"])[metrics].mean()
    table = per_seed.groupby("method").agg(["mean", "std"])
    return table.reindex(columns=pd.MultiIndex.from_product([metrics, ["mean", "std"]]))
