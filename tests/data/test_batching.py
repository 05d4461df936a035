"""Tests of citevae.data.batching: condition groups with matched step-0 controls, the batch sampler
(coverage, seeding, DDP ranks) and the tensors of CiteDataModule for dense, CSR and CSC data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import sparse

from citevae.data import (
    CiteDataModule,
    ConditionBatchSampler,
    condition_groups,
    setup_anndata,
    split_combinations,
    split_context,
)
from citevae.data.batching import ROLE_SOURCE, ROLE_TARGET
from citevae.errors import DataValidationError

CONDITIONS = {"control": 12, "A": 9, "B": 7, "A+B": 6, "C": 5}
# controls at steps 0 and 1 (only step-0 controls may be sources), perturbations at steps 1 and 2
TIMES = {"control": [0, 0, 1], "A": [1, 2], "B": [1], "A+B": [2], "C": [1, 2]}
KEYS = ("x", "library", "targets", "step", "covariates", "group", "role", "previous")


@pytest.fixture
def timed(make_adata):
    """Two contexts with time labels 0 / 1 / 2; set up; returns (adata, registry, split)."""
    adata = make_adata(CONDITIONS, contexts=("c1", "c2"), times=TIMES)
    registry = setup_anndata(adata, "perturbation", "control", time_key="time", covariate_keys=["context"])
    split = split_combinations(adata, seed=0, fraction=0.5)
    return adata, registry, split


def _module(adata, registry, split, **kwargs) -> CiteDataModule:
    kwargs = {"cells_per_group": 4, "groups_per_batch": 3, "seed": 0, **kwargs}
    return CiteDataModule(adata, registry, split.mask("train"), split.mask("val"), **kwargs)


def _cell_info(obs, key="perturbation", time_key="time", covariate="context"):
    """Per cell, from obs alone: canonical condition, context, time label and control flag."""
    labels = obs[key].astype(str).to_numpy()
    canonical = np.array(["+".join(sorted(s.split("+"))) for s in labels], dtype=object)
    context = obs[covariate].astype(str).to_numpy()
    time = obs[time_key].to_numpy() if time_key else np.zeros(len(obs))
    return canonical, context, time, labels == "control"


def _check_batch(batch, obs, sources_allowed, groups_per_batch, cells_per_group, **info_kwargs):
    """Structure of one batch: one condition per group of targets, matched step-0 controls as sources."""
    condition, context, time, control = _cell_info(obs, **info_kwargs)
    index, group, role = batch["index"], batch["group"], batch["role"]
    assert len(index) == len(group) == len(role)
    assert set(np.unique(role)) <= {ROLE_SOURCE, ROLE_TARGET}
    slots = np.unique(group)
    assert len(slots) <= groups_per_batch
    for slot in slots:
        targets = index[(group == slot) & (role == ROLE_TARGET)]
        sources = index[(group == slot) & (role == ROLE_SOURCE)]
        assert 1 <= len(targets) <= cells_per_group and len(sources) == len(targets)
        assert len({(condition[i], context[i], time[i]) for i in targets}) == 1
        assert control[sources].all()
        assert (time[sources] == time.min()).all()  # step-0 controls
        assert set(context[sources]) == {context[targets[0]]}
        assert set(sources) <= set(sources_allowed)
    return index[role == ROLE_TARGET]


def _targets_of_epoch(sampler) -> np.ndarray:
    return np.concatenate([b["index"][b["role"] == ROLE_TARGET] for b in sampler])


def _same_batches(a, b) -> bool:
    return len(a) == len(b) and all(
        all(np.array_equal(x[k], y[k]) for k in ("index", "group", "role")) for x, y in zip(a, b, strict=True)
    )


# ---------------------------------------------------------------- groups and sampler


def test_condition_groups_match_step0_controls(timed):
    adata, registry, split = timed
    encoded = registry.encode(adata, n_steps=1)
    train = np.flatnonzero(split.mask("train"))
    controls = np.intersect1d(np.flatnonzero(encoded.is_control), train)
    groups = condition_groups(encoded, train, controls)
    assert sorted(np.concatenate([g.cells for g in groups]).tolist()) == train.tolist()
    keys = [g.key for g in groups]
    assert keys == sorted(keys) and "A@c1@t1" in keys and "control@c1@t1" in keys
    for group in groups:
        context = group.key.split("@")[1]
        assert set(encoded.contexts[group.controls]) == {context}
        assert (encoded.steps[group.controls] == 0).all() and encoded.is_control[group.controls].all()
        assert set(group.controls) <= set(train)
    with pytest.raises(DataValidationError, match="no step-0 control cells of context 'c2'"):
        condition_groups(encoded, train, controls[encoded.contexts[controls] == "c1"])


def test_sampler_batches_and_epoch_coverage(timed):
    adata, registry, split = timed
    dm = _module(adata, registry, split)
    sampler = dm.train_dataloader().sampler
    assert isinstance(sampler, ConditionBatchSampler)
    train = np.flatnonzero(split.mask("train"))
    train_controls = train[(adata.obs["perturbation"] == "control").to_numpy()[train]]
    batches = list(sampler)
    assert len(batches) == len(sampler) > 1
    targets = np.concatenate([_check_batch(b, adata.obs, train_controls, 3, 4) for b in batches])
    np.testing.assert_array_equal(np.sort(targets), train)  # each training cell once per epoch
    # test cells never appear, neither as targets nor as sources
    test = np.flatnonzero(split.mask("test"))
    assert not set(np.concatenate([b["index"] for b in batches])) & set(test)


def test_sampler_seeding_and_epochs(timed):
    adata, registry, split = timed
    dm = _module(adata, registry, split)
    first = list(dm.train_dataloader().sampler)
    assert _same_batches(first, list(dm.train_dataloader().sampler))  # same seed and epoch
    sampler = dm.train_dataloader().sampler
    sampler.set_epoch(1)
    other_epoch = list(sampler)
    assert not _same_batches(first, other_epoch)
    np.testing.assert_array_equal(np.sort(_targets_of_epoch(other_epoch)), np.sort(_targets_of_epoch(first)))
    sampler.set_epoch(0)
    assert _same_batches(first, list(sampler))
    other_seed = list(_module(adata, registry, split, seed=1).train_dataloader().sampler)
    assert not _same_batches(first, other_seed)


def test_sampler_without_shuffle_is_fixed(timed):
    adata, registry, split = timed
    dm = _module(adata, registry, split)
    sampler = ConditionBatchSampler(dm.train_groups, 4, 3, shuffle=False, seed=0)
    order = _targets_of_epoch(sampler)
    sampler.set_epoch(5)
    np.testing.assert_array_equal(_targets_of_epoch(sampler), order)
    np.testing.assert_array_equal(order, np.concatenate([g.cells for g in dm.train_groups]))


@pytest.mark.parametrize(("cells_per_group", "groups_per_batch"), [(4, 3), (3, 2), (100, 1), (1, 5)])
def test_two_ranks_disjoint_and_equal(timed, cells_per_group, groups_per_batch):
    adata, registry, split = timed
    groups = _module(adata, registry, split).train_groups
    ranks = [ConditionBatchSampler(groups, cells_per_group, groups_per_batch, seed=3, rank=r, world_size=2)
             for r in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(2)
    batches = [list(s) for s in ranks]
    assert len(batches[0]) == len(batches[1]) == len(ranks[0]) == len(ranks[1])
    targets = [_targets_of_epoch(b) if b else np.zeros(0, int) for b in batches]
    assert not set(targets[0]) & set(targets[1])
    for t in targets:
        assert len(t) == len(set(t))
    single = ConditionBatchSampler(groups, cells_per_group, groups_per_batch, seed=3)
    assert len(ranks[0]) == len(single) // 2


def test_sampler_refuses_bad_arguments(timed):
    adata, registry, split = timed
    groups = _module(adata, registry, split).train_groups
    with pytest.raises(DataValidationError, match="no condition groups"):
        ConditionBatchSampler([])
    with pytest.raises(DataValidationError, match=">= 1"):
        ConditionBatchSampler(groups, cells_per_group=0)


def test_validation_batches(timed):
    adata, registry, split = timed
    dm = _module(adata, registry, split)
    val = np.flatnonzero(split.mask("val"))
    assert len(val) > 0
    allowed = np.flatnonzero((split.mask("train") | split.mask("val"))
                             & (adata.obs["perturbation"] == "control").to_numpy())
    batches = list(dm.val_dataloader().sampler)
    targets = np.concatenate([_check_batch(b, adata.obs, allowed, 3, 4) for b in batches])
    np.testing.assert_array_equal(np.sort(targets), val)
    assert _same_batches(batches, list(dm.val_dataloader().sampler))
    no_val = CiteDataModule(adata, registry, split.mask("train"))
    assert no_val.val_dataloader() == []


def test_real_perturbench_epoch(perturbench):
    adata, registry = perturbench
    split = split_context(adata, "A172", seed=0)
    dm = CiteDataModule(adata, registry, split.mask("train"), split.mask("val"), cells_per_group=64,
                        groups_per_batch=4)
    train = np.flatnonzero(split.mask("train"))
    train_controls = train[(adata.obs["condition"] == "control").to_numpy()[train]]
    batches = list(dm.train_dataloader().sampler)
    info = {"key": "condition", "time_key": None, "covariate": "cell_type"}
    targets = np.concatenate([_check_batch(b, adata.obs, train_controls, 4, 64, **info) for b in batches])
    np.testing.assert_array_equal(np.sort(targets), train)


# ---------------------------------------------------------------- tensors of the data module


def _first_batch(dm: CiteDataModule) -> tuple[dict, dict]:
    loader = dm.train_dataloader()
    return next(iter(loader.sampler)), next(iter(loader))


def test_dense_log1p_batch_tensors(timed):
    adata, registry, split = timed
    dm = _module(adata, registry, split)
    raw, batch = _first_batch(dm)
    assert set(batch) == set(KEYS)
    n, index = len(raw["index"]), raw["index"]
    shapes = {"x": (n, adata.n_vars), "library": (n,), "targets": (n, 3), "step": (n,),
              "covariates": (n, 1), "group": (n,), "role": (n,), "previous": (n,)}
    dtypes = {"x": torch.float32, "library": torch.float32, "targets": torch.float32,
              "step": torch.long, "covariates": torch.long, "group": torch.long, "role": torch.long,
              "previous": torch.long}
    for key in KEYS:
        assert tuple(batch[key].shape) == shapes[key], key
        assert batch[key].dtype == dtypes[key], key
    np.testing.assert_allclose(batch["x"].numpy(), adata.X[index], rtol=1e-6)
    np.testing.assert_array_equal(batch["library"].numpy(), np.ones(n))  # log1p: no library size
    expected = registry.vocabulary.multi_hot(adata.obs["perturbation"].astype(str).to_numpy()[index])
    np.testing.assert_array_equal(batch["targets"].numpy(), expected.toarray())
    np.testing.assert_array_equal(batch["step"].numpy(), adata.obs["time"].to_numpy()[index])
    np.testing.assert_array_equal(batch["covariates"].numpy()[:, 0],
                                  (adata.obs["context"].to_numpy()[index] == "c2").astype(int))
    np.testing.assert_array_equal(batch["group"].numpy(), raw["group"])
    np.testing.assert_array_equal(batch["role"].numpy(), raw["role"])
    np.testing.assert_array_equal(batch["previous"].numpy(), -np.ones(n))  # unpaired: no lineage


def _counts_module(make_adata, matrix):
    adata = make_adata(CONDITIONS, contexts=("c1", "c2"), scale="counts", matrix=matrix, n_genes=30)
    registry = setup_anndata(adata, "perturbation", "control", covariate_keys=["context"])
    split = split_combinations(adata, seed=1)
    return adata, _module(adata, registry, split, n_steps=3)


def test_sparse_counts_batch_tensors(make_adata):
    adata, dm = _counts_module(make_adata, "csr")
    assert dm.registry.scale == "counts"
    raw, batch = _first_batch(dm)
    index = raw["index"]
    dense = adata.X.toarray()
    np.testing.assert_array_equal(batch["x"].numpy(), dense[index])
    np.testing.assert_array_equal(batch["library"].numpy(), dense[index].sum(axis=1))
    control = (adata.obs["perturbation"] == "control").to_numpy()[index]
    np.testing.assert_array_equal(batch["step"].numpy(), np.where(control, 0, 3))  # n_steps without time
    assert batch["x"].dtype == torch.float32 and batch["library"].dtype == torch.float32


def test_csc_matrix_gives_the_same_batches_as_csr(make_adata):
    adata_csr, csr = _counts_module(make_adata, "csr")
    adata_csc, csc = _counts_module(make_adata, "csc")
    assert sparse.issparse(adata_csc.X) and adata_csc.X.format == "csc"
    np.testing.assert_array_equal(adata_csr.X.toarray(), adata_csc.X.toarray())
    for a, b in zip(csr.train_dataloader(), csc.train_dataloader(), strict=True):
        for key in KEYS:
            assert torch.equal(a[key], b[key]), key
    assert adata_csc.X.format == "csc"  # the user's matrix is not converted in place


def test_real_jurkat_counts_batch(jurkat):
    adata, registry = jurkat
    split = split_context(adata, "stimulated", seed=0)
    dm = CiteDataModule(adata, registry, split.mask("train"), split.mask("val"), cells_per_group=32,
                        groups_per_batch=2)
    raw, batch = _first_batch(dm)
    rows = adata.X[raw["index"]].toarray()
    np.testing.assert_array_equal(batch["x"].numpy(), rows)
    np.testing.assert_allclose(batch["library"].numpy(), rows.sum(axis=1))
    assert tuple(batch["targets"].shape) == (len(raw["index"]), 20)
    assert tuple(batch["covariates"].shape) == (len(raw["index"]), 1)
