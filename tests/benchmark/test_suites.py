"""Benchmark suites: each builds a leak-free split of the real data (no training)."""

from __future__ import annotations

import numpy as np
import pytest

from citevae.benchmark.suites import SUITES, load_suite
from citevae.data.registry import get_registry
from citevae.data.splits import condition_units
from citevae.errors import CiteVAEError

EXPECTED_GROUPS = {
    "k562_combinations": {"combo_seen2"},
    "k562_unseen_singles": {"unseen_single"},
    "mcfaline_context": {"held_out_context"},
    "datlinger_context": {"held_out_context"},
    "hsmm_interpolation": {"held_out_time"},
    "hsmm_extrapolation": {"held_out_time"},
}


@pytest.fixture(scope="module")
def seed0(shared_data):
    """Suites built for seed 0, once per module: ``seed0(name) -> SuiteSetup``."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = load_suite(name, shared_data, seed=0)
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(SUITES))
def test_suite_builds_a_leak_free_split(seed0, name):
    setup = seed0(name)
    adata, split = setup.adata, setup.split
    registry = get_registry(adata)
    split.check_leakage(adata, registry)
    assert EXPECTED_GROUPS[name] <= set(split.test_groups.values())
    # independent check: no held-out unit has a cell outside the test set
    units = condition_units(adata, registry)
    test = split.mask("test")
    held = units["key"].isin(list(split.test_groups)).to_numpy() & ~units["control"].to_numpy()
    assert held.any() and not (held & ~test).any()
    assert test[units["control"].to_numpy()].any()  # test controls to predict from
    assert setup.baselines and all(isinstance(b, str | tuple) for b in setup.baselines)


def test_unseen_singles_targets_have_go_features_and_never_train(seed0):
    setup = seed0("k562_unseen_singles")
    registry = get_registry(setup.adata)
    unseen = set(setup.split.unseen_targets)
    assert unseen and unseen <= set(setup.gene_features.index)
    assert setup.model_options["gene_features"] is setup.gene_features
    seen = setup.split.mask("train") | setup.split.mask("val")
    trained = setup.adata.obs["condition"].astype(str)[seen]
    assert not any(registry.vocabulary.parse(c) & unseen for c in set(trained))
    linear = [b for b in setup.baselines if isinstance(b, tuple)]
    assert linear and linear[0][0] == "linear" and "gene_features" in linear[0][1]


def test_hsmm_genes_chosen_without_held_out_cells(seed0):
    inter = seed0("hsmm_interpolation").adata
    extra = seed0("hsmm_extrapolation").adata
    assert inter.n_vars == extra.n_vars == 2000
    assert not inter.var_names.equals(extra.var_names)  # held-out cells change the choice
    assert float(inter.X.max()) < 20  # log1p of FPKM, not FPKM
    assert get_registry(inter).time_key == "Hours"


def test_mcfaline_context_rotates_with_seed(seed0, shared_data):
    contexts = {seed0("mcfaline_context").split.params["context"]}
    contexts |= {load_suite("mcfaline_context", shared_data, seed=s).split.params["context"]
                 for s in (1, 2)}
    assert contexts == {"A172", "T98G", "U87MG"}


def test_unknown_suite_and_missing_data(tmp_path):
    with pytest.raises(CiteVAEError, match="unknown benchmark suite 'nope'"):
        load_suite("nope", tmp_path)
    with pytest.raises(CiteVAEError, match="missing"):
        load_suite("k562_combinations", tmp_path)


def test_subsampling_caps_cells_per_condition(shared_data):
    setup = load_suite("k562_combinations", shared_data, seed=0, cells_per_group=10)
    assert setup.adata.obs["condition"].value_counts().max() <= 10
    assert np.isin(["control"], setup.adata.obs["condition"].astype(str)).all()
