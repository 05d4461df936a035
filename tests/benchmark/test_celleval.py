"""cell-eval layout of benchmark predictions, and a cell-eval run on it (small simulated split)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from citevae import setup_anndata
from citevae.baselines import get_baseline
from citevae.benchmark import celleval
from citevae.benchmark.celleval import (
    CONTROL,
    PERT_COL,
    REAL,
    cell_eval_inputs,
    run_cell_eval,
    write_cell_eval,
)
from citevae.benchmark.evaluate import prepare_evaluation
from citevae.benchmark.run import predict_units
from citevae.data import split_combinations
from citevae.errors import CiteVAEError
from citevae.sim import simulate_counts


@pytest.fixture(scope="module")
def scored():
    """An evaluation of held-out pairs and the additive and control-mean predictions for them."""
    adata = simulate_counts(n_genes=30, n_targets=5, n_pairs=5, n_cells_per_condition=30, seed=0)
    setup_anndata(adata, perturbation_key="perturbation", control="control",
                  covariate_keys=["cell_type"])
    split = split_combinations(adata, seed=0, fraction=0.4)
    evaluation = prepare_evaluation(adata, split, n_components=5)
    predictions = {name: predict_units(get_baseline(name).fit(adata, split.mask("train")),
                                       evaluation, adata, split)
                   for name in ("additive", "control_mean")}
    return evaluation, predictions


def test_inputs_hold_each_unit_and_the_controls_in_both_files(scored):
    evaluation, predictions = scored
    inputs = cell_eval_inputs(evaluation, predictions)
    assert set(inputs) == {unit.context for unit in evaluation.units}
    predicted = dict((unit.key, cells) for unit, cells in
                     evaluation.unit_predictions("additive", predictions["additive"]))
    for context, files in inputs.items():
        assert set(files) == {REAL, "additive", "control_mean"}
        units = [unit for unit in evaluation.units if unit.context == context]
        controls = evaluation.log1p[units[0].controls]
        for adata in files.values():
            labels = adata.obs[PERT_COL].astype(str).to_numpy()
            assert list(adata.var_names) == list(evaluation.registry.var_names)
            assert set(labels) == {CONTROL} | {unit.key for unit in units}
            np.testing.assert_array_equal(adata.X[labels == CONTROL], controls)
        for unit in units:
            real = files[REAL]
            mine = real.obs[PERT_COL].astype(str).to_numpy() == unit.key
            np.testing.assert_array_equal(real.X[mine], evaluation.log1p[unit.cells])
            additive = files["additive"]
            mine = additive.obs[PERT_COL].astype(str).to_numpy() == unit.key
            np.testing.assert_array_equal(additive.X[mine], predicted[unit.key])


def test_a_method_called_real_is_refused(scored):
    evaluation, predictions = scored
    with pytest.raises(CiteVAEError, match="may not be called 'real'"):
        cell_eval_inputs(evaluation, {REAL: predictions["additive"]})


def test_written_files_read_back_identical(scored, tmp_path):
    evaluation, predictions = scored
    inputs = cell_eval_inputs(evaluation, predictions)
    paths = write_cell_eval(tmp_path, inputs)
    assert len(paths) == sum(len(files) for files in inputs.values())
    for context, files in inputs.items():
        for name, adata in files.items():
            back = ad.read_h5ad(tmp_path / f"{name}_{celleval._slug(context)}.h5ad")
            np.testing.assert_array_equal(back.X, adata.X)
            assert list(back.obs[PERT_COL].astype(str)) == list(adata.obs[PERT_COL].astype(str))


def test_cell_eval_scores_every_method(scored, tmp_path):
    evaluation, predictions = scored
    table = run_cell_eval(tmp_path, cell_eval_inputs(evaluation, predictions), profile="minimal")
    contexts = {unit.context for unit in evaluation.units}
    assert set(zip(table["method"], table["context"], strict=True)) == {
        (name, context) for name in predictions for context in contexts}
    for name in predictions:
        for context in contexts:
            assert (tmp_path / f"{name}_{celleval._slug(context)}_agg_results.csv").is_file()
    # cell-eval's Pearson delta is ours: both take deltas against the same control cells
    ours = evaluation.score("additive", predictions["additive"]).set_index("unit")["pearson_delta"]
    theirs = pd.concat([pd.read_csv(path) for path in tmp_path.glob("additive_*_results.csv")
                        if not path.name.endswith("agg_results.csv")]).set_index(PERT_COL)
    assert set(theirs.index) == set(ours.index)
    np.testing.assert_allclose(theirs.loc[ours.index, "pearson_delta"], ours, atol=1e-5)


def test_without_cell_eval_a_clear_error(scored, tmp_path, monkeypatch):
    monkeypatch.setattr(celleval, "cell_eval_available", lambda: False)
    evaluation, predictions = scored
    with pytest.raises(CiteVAEError, match="cell-eval is not installed: pip install cell-eval"):
        run_cell_eval(tmp_path, cell_eval_inputs(evaluation, predictions))
