"""Paired observations: a lineage key links each cell to its own previous observation."""

from __future__ import annotations

import numpy as np
import pytest

from citevae.data import CiteDataModule, setup_anndata, split_combinations
from citevae.data.batching import ROLE_PREVIOUS, ROLE_TARGET
from citevae.errors import DataValidationError
from citevae.sim import simulate_counts


@pytest.fixture(scope="module")
def paired():
    adata = simulate_counts(n_genes=30, n_targets=3, n_pairs=1, n_cells_per_condition=20,
                            n_steps=2, paired=True, seed=0)
    registry = setup_anndata(adata, "perturbation", "control", time_key="time",
                             lineage_key="individual")
    return adata, registry


def test_previous_observation_is_same_individual_one_step_earlier(paired):
    adata, registry = paired
    encoded = registry.encode(adata, n_steps=2)
    individuals = adata.obs["individual"].astype(str).to_numpy()
    has = encoded.previous >= 0
    assert (has == (encoded.steps > 0)).all()
    prev = encoded.previous[has]
    assert (individuals[prev] == individuals[has]).all()
    assert (encoded.steps[prev] == encoded.steps[has] - 1).all()


def test_unpaired_registry_has_no_previous(paired):
    adata, _ = paired
    registry = setup_anndata(adata.copy(), "perturbation", "control", time_key="time")
    assert (registry.encode(adata, n_steps=2).previous == -1).all()


def test_lineage_needs_time_and_one_cell_per_time(paired):
    adata, _ = paired
    with pytest.raises(DataValidationError, match="needs a time_key"):
        setup_anndata(adata.copy(), "perturbation", "control", lineage_key="individual")
    twice = adata.copy()
    twice.obs["individual"] = "same"
    before = set(twice.uns)
    with pytest.raises(DataValidationError, match="once per time"):
        setup_anndata(twice, "perturbation", "control", time_key="time", lineage_key="individual")
    assert set(twice.uns) == before


def test_batches_carry_previous_rows_of_training_cells_only(paired):
    adata, registry = paired
    split = split_combinations(adata, seed=0, fraction=0.5)
    module = CiteDataModule(adata, registry, split.mask("train"), split.mask("val"), n_steps=2,
                            cells_per_group=8, groups_per_batch=2)
    train = split.mask("train")
    found = 0
    for batch in module.train_dataloader():
        role, previous = batch["role"].numpy(), batch["previous"].numpy()
        rows = np.flatnonzero(previous >= 0)
        assert (role[rows] == ROLE_TARGET).all()
        assert (role[previous[rows]] == ROLE_PREVIOUS).all()
        assert (batch["step"].numpy()[previous[rows]] == batch["step"].numpy()[rows] - 1).all()
        found += len(rows)
    assert found > 0
    extra = module.dataset.previous
    assert train[extra[extra >= 0]].all()
