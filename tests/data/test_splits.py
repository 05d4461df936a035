"""Tests of citevae.data.splits: every split kind on real data, checked for leakage independently of
``Split.check_leakage``; seeds, JSON round trip, user-given splits and a property test."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citevae.data import (
    Split,
    setup_anndata,
    split_combinations,
    split_context,
    split_from_column,
    split_simulation,
    split_time,
)
from citevae.errors import DataValidationError, SplitLeakageError


@pytest.fixture(scope="module")
def perturbench_units(perturbench, units_of):
    adata, _ = perturbench
    return units_of(adata, "condition", "control", ["cell_type"])


@pytest.fixture(scope="module")
def jurkat_units(jurkat, units_of):
    adata, _ = jurkat
    return units_of(adata, "perturbation", "control", ["stimulation"])


@pytest.fixture(scope="module")
def hsmm_units(hsmm, units_of):
    adata, _ = hsmm
    return units_of(adata, "Media", "GM", time_key="Hours")


def _test_perturbed(split, units) -> np.ndarray:
    return split.mask("test") & ~units["control"].to_numpy()


def _same(a: Split, b: Split) -> bool:
    return a.assignment.equals(b.assignment) and a.test_groups == b.test_groups


# ---------------------------------------------------------------- PerturBench


def test_perturbench_split_combinations(no_leakage, perturbench, perturbench_units):
    adata, _ = perturbench
    units = perturbench_units
    split = split_combinations(adata, seed=0, fraction=0.3)
    no_leakage(adata, split, units)
    test = _test_perturbed(split, units)
    assert test.any()
    # only combinations are held out; every single perturbation stays in training
    assert all(len(t) == 2 for t in units["targets"][test])
    singles = units["targets"].map(len).to_numpy() == 1
    assert not (split.mask("test") & singles).any()
    assert set(split.test_groups.values()) == {"combo_seen2"}
    assert set(split.test_groups) == set(units["key"][test])
    n_combos = units.loc[units["targets"].map(len) == 2, "condition"].nunique()
    assert units["condition"][test].nunique() == round(0.3 * n_combos)


def test_perturbench_split_simulation(no_leakage, perturbench, perturbench_units):
    adata, registry = perturbench
    units = perturbench_units
    split = split_simulation(adata, seed=0, unseen_fraction=0.25, combo_fraction=0.3)
    no_leakage(adata, split, units)
    unseen = set(split.unseen_targets)
    assert unseen and unseen <= set(registry.vocabulary.targets)
    # unseen targets occur in no train/val condition, and every condition naming one is test
    seen = split.mask("train") | split.mask("val")
    for targets in units["targets"][seen]:
        assert not targets & unseen
    names_unseen = units["targets"].map(lambda t: bool(t & unseen)).to_numpy()
    assert (split.mask("test")[names_unseen]).all()
    groups = set(split.test_groups.values())
    assert "unseen_single" in groups and groups <= {"unseen_single", "combo_seen0", "combo_seen1",
                                                   "combo_seen2"}
    for key, group in split.test_groups.items():
        targets = set(key.split("@")[0].split("+"))
        if group == "unseen_single":
            assert len(targets) == 1 and targets <= unseen
        else:
            assert len(targets) == 2 and group == f"combo_seen{len(targets - unseen)}"


def test_perturbench_split_context(no_leakage, perturbench, perturbench_units):
    adata, _ = perturbench
    units = perturbench_units
    split = split_context(adata, "A172", seed=0, fraction=0.5)
    no_leakage(adata, split, units)
    test = _test_perturbed(split, units)
    assert test.any()
    assert set(units["context"][test]) == {"A172"}
    held = set(units["condition"][test])
    # held-out perturbations are still trained in the other cell types
    elsewhere = split.mask("train") & (units["context"] != "A172").to_numpy()
    assert held <= set(units["condition"][elsewhere])
    assert set(split.test_groups) == {f"{c}@A172" for c in held}
    # the A172 perturbations not held out stay in training there
    a172 = (units["context"] == "A172").to_numpy() & ~units["control"].to_numpy()
    assert set(units["condition"][a172 & split.mask("train")]) == set(units["condition"][a172]) - held


def test_perturbench_split_context_given_perturbations(no_leakage, perturbench, perturbench_units):
    adata, _ = perturbench
    split = split_context(adata, "A172", perturbations=["MAPK1", "SGK1"], seed=3)
    no_leakage(adata, split, perturbench_units)
    assert set(split.test_groups) == {"MAPK1@A172", "SGK1@A172"}
    with pytest.raises(DataValidationError, match=r"'KLF1'.*not in 'A172'"):
        split_context(adata, "A172", perturbations=["KLF1"])
    with pytest.raises(DataValidationError, match="context 'HeLa' is not in the data"):
        split_context(adata, "HeLa")


def test_perturbench_seeds(perturbench):
    adata, _ = perturbench
    for draw in (split_simulation, split_combinations, lambda a, seed: split_context(a, "A172", seed=seed)):
        assert _same(draw(adata, seed=4), draw(adata, seed=4))
        assert not draw(adata, seed=4).assignment.equals(draw(adata, seed=5).assignment)
    assert split_simulation(adata, seed=4).unseen_targets != split_simulation(adata, seed=5).unseen_targets


def test_perturbench_split_from_column(no_leakage, perturbench, perturbench_units):
    adata, _ = perturbench
    drawn = split_combinations(adata, seed=2)
    data = adata.copy()
    data.obs["my_split"] = drawn.assignment.to_numpy()
    split = split_from_column(data, "my_split")
    assert split.name == "column"
    assert split.assignment.equals(drawn.assignment)
    assert set(split.test_groups) == set(drawn.test_groups)
    no_leakage(data, split, perturbench_units)
    # one cell of a held-out condition moved to train is leakage
    key = next(iter(drawn.test_groups))
    cell = perturbench_units.index[(perturbench_units["key"] == key).to_numpy()][0]
    data.obs.loc[cell, "my_split"] = "train"
    with pytest.raises(SplitLeakageError, match=key.replace("+", r"\+")):
        split_from_column(data, "my_split")


# ---------------------------------------------------------------- Jurkat


def test_jurkat_split_context(no_leakage, jurkat, jurkat_units):
    adata, _ = jurkat
    split = split_context(adata, "stimulated", seed=0)
    no_leakage(adata, split, jurkat_units)
    test = _test_perturbed(split, jurkat_units)
    assert set(jurkat_units["context"][test]) == {"stimulated"}
    held = set(jurkat_units["condition"][test])
    assert len(held) == 10  # half of the 20 targets
    unstim = (jurkat_units["context"] == "unstimulated").to_numpy()
    assert held <= set(jurkat_units["condition"][unstim & split.mask("train")])
    # controls of the stimulated context are in train, val and test; none of the other context in test
    stim_controls = (~unstim) & jurkat_units["control"].to_numpy()
    assert {"train", "test"} <= set(split.assignment[stim_controls])
    assert not (split.mask("test") & unstim).any()


# ---------------------------------------------------------------- HSMM time course


def test_hsmm_split_time_interpolation(no_leakage, hsmm, hsmm_units):
    adata, _ = hsmm
    split = split_time(adata, [48], seed=0)
    no_leakage(adata, split, hsmm_units)
    hours = adata.obs["Hours"].to_numpy()
    dm = (adata.obs["Media"] == "DM").to_numpy()
    np.testing.assert_array_equal(split.mask("test") & dm, dm & (hours == 48))
    assert split.test_groups == {"DM@all@t2": "held_out_time"}
    assert set(hours[dm & split.mask("train")]) == {24, 72}
    assert split.params["held_out"] == ["48"]
    from_iterator = split_time(adata, iter([48]), seed=0)
    assert from_iterator.params["held_out"] == ["48"] and from_iterator.assignment.equals(split.assignment)


def test_hsmm_split_time_extrapolation(no_leakage, hsmm, hsmm_units):
    adata, registry = hsmm
    split = split_time(adata, [72], seed=0)
    no_leakage(adata, split, hsmm_units)
    train = split.mask("train") | split.mask("val")
    steps = registry.encode(adata, n_steps=1).steps
    assert steps[train].max() == 2 and set(steps[_test_perturbed(split, hsmm_units)]) == {3}
    # a registry built from the training times alone still maps 72 h to step 3 of its grid
    train_data = adata[train].copy()
    train_registry = setup_anndata(train_data, "Media", "GM", time_key="Hours")
    assert train_registry.time_mapping.labels == (0.0, 24.0, 48.0)
    np.testing.assert_array_equal(train_registry.time_mapping.step_of([72]), [3])
    np.testing.assert_array_equal(train_registry.encode(adata, n_steps=1).steps, steps)


def test_hsmm_split_time_refusals(hsmm, perturbench):
    adata, _ = hsmm
    with pytest.raises(DataValidationError, match="no perturbed cell is observed at time"):
        split_time(adata, [0])
    with pytest.raises(Exception, match="36"):
        split_time(adata, [36])
    with pytest.raises(DataValidationError, match="needs a time key"):
        split_time(perturbench[0], [1])


def test_hsmm_seeds_and_from_column(no_leakage, hsmm, hsmm_units):
    adata, _ = hsmm
    assert _same(split_time(adata, [48], seed=1), split_time(adata, [48], seed=1))
    assert not split_time(adata, [48], seed=1).assignment.equals(split_time(adata, [48], seed=2).assignment)
    data = adata.copy()
    data.obs["s"] = split_time(adata, [48], seed=1).assignment.to_numpy()
    split = split_from_column(data, "s")
    no_leakage(data, split, hsmm_units)
    assert split.test_groups == {"DM@all@t2": "user"}


# ---------------------------------------------------------------- Schiebinger time course


def test_schiebinger_split_time(no_leakage, units_of, schiebinger_raw):
    adata = schiebinger_raw.copy()
    adata.obs["perturbation"] = "control"
    setup_anndata(adata, "perturbation", "control", time_key="day")
    with pytest.raises(DataValidationError, match="no perturbed cell"):
        split_time(adata, [10.5])
    # cells after day 10 as "treated": hold out the middle day (interpolation on a half-day grid)
    adata.obs["perturbation"] = np.where(adata.obs["day"].astype(float) > 10, "reprog", "control")
    setup_anndata(adata, "perturbation", "control", time_key="day")
    split = split_time(adata, [10.5], seed=0)
    no_leakage(adata, split, units_of(adata, "perturbation", "control", time_key="day"))
    assert split.test_groups == {"reprog@all@t1": "held_out_time"}


# ---------------------------------------------------------------- save / load and errors


def test_save_load_round_trip(perturbench, tmp_path):
    adata, _ = perturbench
    split = split_simulation(adata, seed=7)
    path = split.save(tmp_path / "split.json")
    loaded = Split.load(path)
    assert (loaded.name, loaded.seed, loaded.unseen_targets, loaded.unseen_scope) == (
        split.name, split.seed, split.unseen_targets, split.unseen_scope)
    assert loaded.test_groups == split.test_groups and loaded.params == split.params
    assert loaded.assignment.loc[adata.obs_names].equals(split.assignment)
    aligned = Split.load(path, adata)
    assert aligned.assignment.equals(split.assignment)
    aligned.check_leakage(adata)
    # reordered data: the loaded split follows the data's cell order
    reordered = adata[::-1]
    again = Split.load(path, reordered)
    assert again.assignment.equals(split.assignment.loc[reordered.obs_names])
    # data with cells the split does not know is refused
    renamed = adata[:3].copy()
    renamed.obs_names = ["new0", "new1", "new2"]
    with pytest.raises(DataValidationError, match=r"3 cell\(s\).*'new0'"):
        Split.load(path, renamed)


def test_split_errors(small_registered, make_adata):
    adata, _ = small_registered
    split = split_combinations(adata, seed=0)
    with pytest.raises(DataValidationError, match="'training'"):
        split.mask("training")
    with pytest.raises(SplitLeakageError, match="other cells"):
        split.check_leakage(adata[::-1].copy())
    with pytest.raises(DataValidationError, match="val_fraction must be in"):
        split_combinations(adata, val_fraction=1.0)
    with pytest.raises(DataValidationError, match="unseen_fraction must be in"):
        split_simulation(adata, unseen_fraction=-0.1)
    data = adata.copy()
    data.obs["s"] = "train"
    data.obs.loc[data.obs_names[0], "s"] = "holdout"
    with pytest.raises(DataValidationError, match="'s' holds 'holdout'"):
        split_from_column(data, "s")
    with pytest.raises(DataValidationError, match=r"'nope' is not in adata\.obs"):
        split_from_column(data, "nope")
    singles = make_adata({"control": 4, "A": 4})
    setup_anndata(singles, "perturbation", "control")
    with pytest.raises(DataValidationError, match="no combination perturbations"):
        split_combinations(singles)


def test_split_from_column_without_test_controls_refused(small_registered):
    adata, _ = small_registered
    data = adata.copy()
    values = np.where(data.obs["perturbation"] == "A+B", "test", "train")
    data.obs["s"] = values
    with pytest.raises(SplitLeakageError, match="no control cells in test"):
        split_from_column(data, "s")


# ---------------------------------------------------------------- property test

SYNTHETIC = {"control": 10, "A": 6, "B": 5, "C": 4, "D": 4, "A+B": 5, "C+D": 3, "B+C": 4, "D+A": 3, "E": 2}


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["simulation", "combinations", "context"]),
    seed=st.integers(0, 2**31 - 1),
    fraction=st.floats(0.0, 0.9),
    val_fraction=st.floats(0.0, 0.9),
    control_test_fraction=st.floats(0.0, 0.9),
    n_controls=st.integers(2, 8),
)
def test_random_splits_never_leak(no_leakage, units_of, make_adata, kind, seed, fraction, val_fraction,
                                  control_test_fraction, n_controls):
    adata = make_adata({**SYNTHETIC, "control": n_controls}, contexts=("c1", "c2"))
    setup_anndata(adata, "perturbation", "control", covariate_keys=["context"])
    fractions = {"val_fraction": val_fraction, "control_test_fraction": control_test_fraction}
    if kind == "simulation":
        split = split_simulation(adata, seed=seed, unseen_fraction=fraction, combo_fraction=fraction,
                                 **fractions)
    elif kind == "combinations":
        split = split_combinations(adata, seed=seed, fraction=fraction, **fractions)
    else:
        split = split_context(adata, "c2", seed=seed, fraction=fraction, **fractions)
    units = units_of(adata, "perturbation", "control", ["context"])
    no_leakage(adata, split, units)
    # every cell is assigned exactly once, and perturbed test cells are exactly the test groups
    assert split.assignment.notna().all() and len(split.assignment) == adata.n_obs
    test_keys = set(units["key"][_test_perturbed(split, units)])
    assert test_keys == set(split.test_groups)
    # every context keeps control cells for training
    for context in ("c1", "c2"):
        here = (units["context"] == context).to_numpy() & units["control"].to_numpy()
        assert (here & split.mask("train")).any()
    # the same seed gives the same split
    again = {"simulation": split_simulation, "combinations": split_combinations}.get(kind)
    if again is not None:
        kwargs = ({"unseen_fraction": fraction, "combo_fraction": fraction} if kind == "simulation"
                  else {"fraction": fraction})
        assert _same(again(adata, seed=seed, **kwargs, **fractions), split)
