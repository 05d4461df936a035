"""Train / validation / test splits as code: seeded, saved as JSON and checked for leakage.

A split assigns whole conditions (one perturbation in one context) to the test set, so a test
perturbation is never seen in training in that context. Cells of training conditions are divided
into train and validation (validation holds SEEN perturbations only, for checkpoint selection).
Control cells of each context are divided into train, validation and test: test controls are the
cells a model starts from when it predicts the held-out conditions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from citevae._atomic import write_text
from citevae.data.registry import DataRegistry, get_registry
from citevae.errors import DataValidationError, SplitLeakageError, format_names

SETS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Per-cell assignment to train / val / test and the test group of each held-out condition.

    Attributes:
        name: kind of split ("simulation", "combinations", "context", "time", "column").
        seed: seed it was drawn with.
        assignment: "train" / "val" / "test" per cell, indexed by obs_names.
        test_groups: held-out "condition@context" -> group ("unseen_single", "combo_seen0", ...).
        unseen_targets: target genes that no training condition may contain (within
            ``unseen_scope`` context, or anywhere if it is None).
        params: the arguments that drew it.
    """

    name: str
    seed: int
    assignment: pd.Series
    test_groups: dict[str, str]
    unseen_targets: tuple[str, ...] = ()
    unseen_scope: str | None = None
    params: dict = field(default_factory=dict)

    def mask(self, which: str) -> np.ndarray:
        """Boolean mask over cells of one set ("train", "val" or "test")."""
        if which not in SETS:
            raise DataValidationError(f"split set must be one of {SETS}, got {which!r}")
        return (self.assignment == which).to_numpy()

    def check_leakage(self, adata: AnnData, registry: DataRegistry | None = None) -> None:
        """Raise ``SplitLeakageError`` if a held-out condition or unseen target reaches training.

        Also requires control cells in both train and test in every context with test cells.
        """
        registry = registry or get_registry(adata)
        if not adata.obs_names.equals(self.assignment.index):
            raise SplitLeakageError("the split was drawn on other cells than this AnnData's")
        units = condition_units(adata, registry)
        seen = self.mask("train") | self.mask("val")
        test = self.mask("test")
        leaked = sorted(set(units.key[test & ~units.control]) & set(units.key[seen]))
        if leaked:
            raise SplitLeakageError(
                f"held-out condition(s) {format_names(leaked)} also have cells in train/val"
            )
        scope = np.ones(len(units), bool) if self.unseen_scope is None else (
            units.context == self.unseen_scope
        )
        trained_targets = set().union(
            *(registry.vocabulary.parse(c) for c in set(units.condition[seen & scope])), set()
        )
        reached = sorted(set(self.unseen_targets) & trained_targets)
        if reached:
            raise SplitLeakageError(f"unseen target(s) {format_names(reached)} occur in training")
        for context in sorted(set(units.context[test])):
            here = units.context == context
            for where, mask in (("train", self.mask("train")), ("test", test)):
                if not (here & units.control & mask).any():
                    raise SplitLeakageError(
                        f"context {context!r} has test cells but no control cells in {where}"
                    )

    def to_dict(self) -> dict:
        """Plain JSON-ready dictionary (cell names listed per set)."""
        return {
            "name": self.name,
            "seed": self.seed,
            "params": self.params,
            "test_groups": self.test_groups,
            "unseen_targets": list(self.unseen_targets),
            "unseen_scope": self.unseen_scope,
            "cells": {s: self.assignment.index[self.mask(s)].tolist() for s in SETS},
        }

    @classmethod
    def from_dict(cls, data: dict) -> Split:
        """Inverse of ``to_dict``."""
        names = [n for s in SETS for n in data["cells"][s]]
        values = [s for s in SETS for _ in data["cells"][s]]
        return cls(data["name"], int(data["seed"]), pd.Series(values, index=names, dtype=object),
                   dict(data["test_groups"]), tuple(data["unseen_targets"]),
                   data["unseen_scope"], dict(data["params"]))

    def save(self, path: str | Path) -> Path:
        """Write the split as JSON to ``path``."""
        return write_text(path, json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path, adata: AnnData | None = None) -> Split:
        """Read a split saved by ``save``; with ``adata``, reorder to its cells (all must be there)."""
        split = cls.from_dict(json.loads(Path(path).read_text()))
        if adata is None:
            return split
        missing = adata.obs_names.difference(split.assignment.index)
        if len(missing):
            raise DataValidationError(
                f"{len(missing)} cell(s) of the data are not in the saved split, e.g. "
                f"{format_names(missing.tolist(), 5)}"
            )
        return _replace_assignment(split, split.assignment.loc[adata.obs_names])


def split_simulation(
    adata: AnnData,
    seed: int = 0,
    unseen_fraction: float = 0.25,
    combo_fraction: float = 0.3,
    val_fraction: float = 0.1,
    control_test_fraction: float = 0.25,
) -> Split:
    """GEARS-style split: hold out a fraction of single target genes and combinations.

    Every condition containing an unseen gene is test ("unseen_single", "combo_seen0",
    "combo_seen1"); a ``combo_fraction`` of the combinations of two seen genes is test
    ("combo_seen2"). Unseen genes are chosen among targets perturbed alone.
    """
    _check_fraction("unseen_fraction", unseen_fraction)
    registry = get_registry(adata)
    units, rng = condition_units(adata, registry), _rng(seed)
    singles = sorted(c for c in set(units.condition) if _n_targets(registry, c) == 1)
    n_unseen = round(unseen_fraction * len(singles))
    unseen = {str(g) for g in rng.choice(singles, size=n_unseen, replace=False)} if n_unseen else set()
    combos_seen2 = sorted(
        c for c in set(units.condition)
        if _n_targets(registry, c) > 1 and not registry.vocabulary.parse(c) & unseen
    )
    held_combos = _choose(rng, combos_seen2, combo_fraction)
    groups = {}
    for condition in sorted(set(units.condition) - {registry.control}):
        targets = registry.vocabulary.parse(condition)
        n_seen = len(targets - unseen)
        if len(targets) == 1 and targets & unseen:
            groups[condition] = "unseen_single"
        elif len(targets) > 1 and (n_seen < len(targets) or condition in held_combos):
            groups[condition] = f"combo_seen{n_seen}"
    params = {"unseen_fraction": unseen_fraction, "combo_fraction": combo_fraction}
    return _assemble(adata, registry, units, "simulation", seed, groups, val_fraction,
                     control_test_fraction, params, unseen_targets=sorted(unseen))


def split_combinations(
    adata: AnnData,
    seed: int = 0,
    fraction: float = 0.3,
    val_fraction: float = 0.1,
    control_test_fraction: float = 0.25,
) -> Split:
    """Random hold-out of a ``fraction`` of the combinations; all single perturbations train."""
    registry = get_registry(adata)
    units = condition_units(adata, registry)
    combos = sorted(c for c in set(units.condition) if _n_targets(registry, c) > 1)
    if not combos:
        raise DataValidationError("the data has no combination perturbations to hold out")
    held = _choose(_rng(seed), combos, fraction)
    groups = {c: "combo_seen2" for c in held}
    return _assemble(adata, registry, units, "combinations", seed, groups, val_fraction,
                     control_test_fraction, {"fraction": fraction})


def split_context(
    adata: AnnData,
    context: str,
    seed: int = 0,
    perturbations: Sequence[str] | None = None,
    fraction: float = 0.5,
    val_fraction: float = 0.1,
    control_test_fraction: float = 0.25,
) -> Split:
    """Hold out perturbations in one context (e.g. a cell type) while other contexts keep them.

    ``context`` is a joint covariate value as in ``registry.contexts`` (the covariate value itself
    when one covariate is registered). Without ``perturbations``, a ``fraction`` of the conditions
    observed both in ``context`` and elsewhere is held out.
    """
    registry = get_registry(adata)
    units = condition_units(adata, registry)
    known = sorted(set(units.context))
    if context not in known:
        raise DataValidationError(f"context {context!r} is not in the data (contexts: {known})")
    here = units.context == context
    shared = sorted(set(units.condition[here & ~units.control]) &
                    set(units.condition[~here & ~units.control]))
    if perturbations is None:
        if not shared:
            raise DataValidationError(
                f"no perturbation of context {context!r} is observed in another context"
            )
        held = _choose(_rng(seed), shared, fraction)
    else:
        held = {registry.vocabulary.canonical(p) for p in perturbations}
        absent = sorted(held - set(units.condition[here]))
        if absent:
            raise DataValidationError(f"perturbation(s) {format_names(absent)} are not in {context!r}")
    groups = {f"{c}@{context}": "held_out_context" for c in held}
    return _assemble(adata, registry, units, "context", seed, groups, val_fraction,
                     control_test_fraction, {"context": context, "fraction": fraction})


def split_time(
    adata: AnnData,
    held_out: Iterable,
    seed: int = 0,
    val_fraction: float = 0.1,
    control_test_fraction: float = 0.25,
) -> Split:
    """Hold out every perturbed cell observed at the given time labels (interpolation/extrapolation)."""
    held_out = list(held_out)  # an iterator would be consumed by its first use below
    registry = get_registry(adata)
    if registry.time_key is None:
        raise DataValidationError("split_time needs a time key registered (setup_anndata time_key)")
    units = condition_units(adata, registry)
    held_steps = registry.time_mapping.step_of(list(held_out))
    test = np.isin(units.step, held_steps) & ~units.control
    if not test.any():
        raise DataValidationError(f"no perturbed cell is observed at time(s) {list(held_out)}")
    groups = {k: "held_out_time" for k in sorted(set(units.key[test]))}
    params = {"held_out": [str(v) for v in held_out]}
    return _assemble(adata, registry, units, "time", seed, groups, val_fraction,
                     control_test_fraction, params)


def split_from_column(adata: AnnData, key: str) -> Split:
    """Use a user-given obs column of "train" / "val" / "test" values as the split."""
    registry = get_registry(adata)
    if key not in adata.obs.columns:
        raise DataValidationError(f"split column {key!r} is not in adata.obs")
    values = adata.obs[key].astype(str)
    wrong = sorted(set(values) - set(SETS))
    if wrong:
        raise DataValidationError(
            f"split column {key!r} holds {format_names(wrong)}; allowed values are {SETS}"
        )
    units = condition_units(adata, registry)
    test = (values == "test").to_numpy()
    groups = {k: "user" for k in sorted(set(units.key[test & ~units.control]))}
    split = Split("column", 0, values.astype(object), groups, params={"key": key})
    split.check_leakage(adata, registry)
    return split


def condition_units(adata: AnnData, registry: DataRegistry) -> pd.DataFrame:
    """Per cell: canonical condition, context, step, control flag and unit keys.

    ``pair`` is "condition@context"; ``key`` adds "@t<step>" when a time key is registered, so a
    condition observed at several times forms one unit per time.
    """
    encoded = registry.encode(adata, n_steps=1)
    pairs = np.array([f"{c}@{x}" for c, x in zip(encoded.conditions, encoded.contexts,
                                                 strict=True)], dtype=object)
    keys = pairs if registry.time_key is None else np.array(
        [f"{p}@t{s}" for p, s in zip(pairs, encoded.steps, strict=True)], dtype=object)
    return pd.DataFrame(
        {"condition": encoded.conditions, "context": encoded.contexts, "step": encoded.steps,
         "control": encoded.is_control, "pair": pairs, "key": keys}, index=adata.obs_names,
    )


def _assemble(
    adata: AnnData, registry: DataRegistry, units: pd.DataFrame, name: str, seed: int,
    groups: dict[str, str], val_fraction: float, control_test_fraction: float, params: dict,
    unseen_targets: Sequence[str] = (),
) -> Split:
    """Turn condition-level test groups into a per-cell assignment and check it."""
    _check_fraction("val_fraction", val_fraction)
    _check_fraction("control_test_fraction", control_test_fraction)
    rng = _rng(seed + 1)
    group_of = [groups.get(k, groups.get(p, groups.get(c))) for k, p, c in
                zip(units.key, units.pair, units.condition, strict=True)]
    held = np.array([g is not None for g in group_of]) & ~units.control.to_numpy()
    expanded = {k: g for k, g, h in zip(units.key, group_of, held, strict=True) if h}
    assignment = np.full(len(units), "train", dtype=object)
    assignment[held] = "test"
    test_contexts = set(units.context[held])
    control_cells = units[units.control.to_numpy()]
    for context, controls in sorted(control_cells.groupby("context").indices.items()):
        controls = rng.permutation(np.flatnonzero(units.control.to_numpy())[controls])
        n_test = round(control_test_fraction * len(controls)) if context in test_contexts else 0
        if context in test_contexts and len(controls) >= 2:
            n_test = min(max(n_test, 1), len(controls) - 1)
        assignment[controls[:n_test]] = "test"
        n_rest = len(controls) - n_test  # keep >= 1 control in train when there is one to keep
        n_val = min(round(val_fraction * n_rest), max(n_rest - 1, 0))
        assignment[controls[n_test : n_test + n_val]] = "val"
    seen_cells = np.flatnonzero(~held & ~units.control.to_numpy())
    for _, members in sorted(units.iloc[seen_cells].groupby("key").indices.items()):
        cells = rng.permutation(seen_cells[members])
        n_val = min(round(val_fraction * len(cells)), len(cells) - 1)  # >= 1 cell stays in train
        assignment[cells[:n_val]] = "val"
    split = Split(name, seed, pd.Series(assignment, index=adata.obs_names, dtype=object),
                  dict(sorted(expanded.items())), tuple(sorted(unseen_targets)),
                  params={**params, "val_fraction": val_fraction,
                          "control_test_fraction": control_test_fraction})
    split.check_leakage(adata, registry)
    return split


def _replace_assignment(split: Split, assignment: pd.Series) -> Split:
    return Split(split.name, split.seed, assignment, split.test_groups, split.unseen_targets,
                 split.unseen_scope, split.params)


def _choose(rng: np.random.Generator, items: Sequence[str], fraction: float) -> set[str]:
    _check_fraction("fraction", fraction)
    n = round(fraction * len(items))
    if items and fraction > 0:
        n = max(n, 1)
    return {str(x) for x in rng.choice(list(items), size=n, replace=False)} if n else set()


def _n_targets(registry: DataRegistry, condition: str) -> int:
    return len(registry.vocabulary.parse(condition))


def _check_fraction(name: str, value: float) -> None:
    if not 0 <= value < 1:
        raise DataValidationError(f"{name} must be in [0, 1), got {value}")


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)
