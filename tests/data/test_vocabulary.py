"""Tests of citevae.data.vocabulary: parsing, canonical labels, multi-hot codes, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citevae.data import PerturbationVocabulary, canonical_label, get_registry, parse_condition
from citevae.errors import DataValidationError, VocabularyError


def _json_round_trip(vocabulary: PerturbationVocabulary) -> PerturbationVocabulary:
    return PerturbationVocabulary.from_dict(json.loads(json.dumps(vocabulary.to_dict())))


def test_parse_condition_sets_and_control():
    assert parse_condition("control", "control") == frozenset()
    assert parse_condition("A", "control") == {"A"}
    assert parse_condition("A+B", "control") == parse_condition("B+A", "control") == {"A", "B"}
    assert parse_condition(" B + A ", "control") == {"A", "B"}
    assert parse_condition("A_B", "ctrl", separator="_") == {"A", "B"}


@pytest.mark.parametrize(
    ("label", "match"),
    [
        ("", "empty perturbation label"),
        ("   ", "empty perturbation label"),
        ("A+", r"'A\+' has an empty component"),
        ("+A", "empty component"),
        ("A++B", "empty component"),
        ("A+control", "combines the control label 'control'"),
        (3, "label 3 is not a string"),
        (None, "label None is not a string"),
    ],
)
def test_parse_condition_refuses_bad_labels(label, match):
    with pytest.raises(DataValidationError, match=match):
        parse_condition(label, "control")


def test_canonical_label_sorted_and_control():
    assert canonical_label({"B", "A"}, "control") == "A+B"
    assert canonical_label([], "control") == "control"
    assert canonical_label(["Y", "X"], "ctrl", separator="_") == "X_Y"


def test_vocabulary_from_labels():
    labels = ["control", "B", "A+B", "B+A", "C", "control"]
    vocabulary = PerturbationVocabulary.from_labels(labels, "control")
    assert vocabulary.targets == ("A", "B", "C")
    assert vocabulary.conditions == ("A+B", "B", "C", "control")
    assert vocabulary.n_targets == 3
    assert vocabulary.canonical("B+A") == "A+B"


def test_multi_hot_codes():
    vocabulary = PerturbationVocabulary.from_labels(["control", "A", "B", "C", "A+C"], "control")
    codes = vocabulary.multi_hot(["A+C", "control", "B", "C+A", "A"])
    assert codes.shape == (5, 3)
    assert codes.dtype == np.float32
    expected = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 0, 1], [1, 0, 0]], dtype=np.float32)
    np.testing.assert_array_equal(codes.toarray(), expected)
    assert vocabulary.multi_hot([]).shape == (0, 3)


def test_multi_hot_refuses_unknown_targets_naming_them():
    vocabulary = PerturbationVocabulary.from_labels(["control", "A", "B"], "control")
    with pytest.raises(VocabularyError, match="'ZZZ'") as info:
        vocabulary.multi_hot(["A", "A+ZZZ", "QQQ"])
    assert "'QQQ'" in str(info.value) and "2 perturbation target(s)" in str(info.value)
    assert vocabulary.unknown_targets(["A+ZZZ", "B", "QQQ+A"]) == ["QQQ", "ZZZ"]


def test_extended_appends_new_targets_last():
    vocabulary = PerturbationVocabulary.from_labels(["control", "B", "C"], "control")
    wider = vocabulary.extended(["A+B", "D"])
    assert wider.targets == ("B", "C", "A", "D")  # known columns keep their index
    assert set(wider.conditions) == {"control", "B", "C", "A+B", "D"}
    codes = wider.multi_hot(["B", "A+B"]).toarray()
    np.testing.assert_array_equal(codes, [[1, 0, 0, 0], [1, 0, 1, 0]])


def test_json_round_trip_and_reapplied_codes_identical():
    labels = ["control", "KLF1", "KLF1+MAP2K6", "MAP2K6+KLF1", "TGFBR2", "control", "SET+KLF1"]
    vocabulary = PerturbationVocabulary.from_labels(labels, "control")
    loaded = _json_round_trip(vocabulary)
    assert loaded == vocabulary
    assert (loaded.multi_hot(labels) != vocabulary.multi_hot(labels)).nnz == 0


def test_perturbench_vocabulary_round_trip_gives_identical_codes(perturbench):
    adata, registry = perturbench
    vocabulary = registry.vocabulary
    assert vocabulary.control == "control"
    assert "MAP2K3" in vocabulary.targets and "MAP2K3+MAP2K6" in vocabulary.conditions
    assert len(vocabulary.conditions) == adata.obs["condition"].nunique()
    loaded = _json_round_trip(vocabulary)
    assert loaded == vocabulary
    labels = adata.obs["condition"].astype(str).tolist()
    codes = vocabulary.multi_hot(labels)
    assert (loaded.multi_hot(labels) != codes).nnz == 0
    # the number of ones per cell is the number of targets in its label
    n_targets = [0 if s == "control" else len(s.split("+")) for s in labels]
    np.testing.assert_array_equal(np.asarray(codes.sum(axis=1)).ravel(), n_targets)
    # re-encoding through the registry saved in the AnnData gives the same codes
    again = get_registry(adata).encode(adata, n_steps=1)
    assert (again.targets != codes).nnz == 0


# ---------------------------------------------------------------- properties

GENE = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1, max_size=8)


@st.composite
def label_sets(draw):
    genes = draw(st.lists(GENE, min_size=1, max_size=8, unique=True))
    combos = draw(st.lists(st.lists(st.sampled_from(genes), min_size=1, max_size=3, unique=True),
                           min_size=1, max_size=12))
    control = draw(st.sampled_from(["control", "ctrl", "non-targeting"]))
    separator = draw(st.sampled_from(["+", "_", "|"]))
    labels = [separator.join(c) for c in combos] + [control]
    return labels, control, separator, combos


@settings(max_examples=60, deadline=None, derandomize=True)
@given(data=label_sets(), seed=st.integers(0, 2**32 - 1))
def test_vocabulary_round_trip_and_order_invariance(data, seed):
    labels, control, separator, combos = data
    vocabulary = PerturbationVocabulary.from_labels(labels, control, separator)
    assert vocabulary.targets == tuple(sorted({g for c in combos for g in c}))
    assert _json_round_trip(vocabulary) == vocabulary
    rng = np.random.default_rng(seed)
    # components in another order give the same canonical label, set and code
    shuffled = [separator.join(rng.permutation(c).tolist()) for c in combos] + [control]
    assert [vocabulary.canonical(s) for s in shuffled] == [vocabulary.canonical(s) for s in labels]
    assert all(vocabulary.canonical(s) in vocabulary.conditions for s in shuffled)
    assert (vocabulary.multi_hot(shuffled) != vocabulary.multi_hot(labels)).nnz == 0
    # cells in another order give the same vocabulary
    reordered = [labels[i] for i in rng.permutation(len(labels))]
    assert PerturbationVocabulary.from_labels(reordered, control, separator) == vocabulary
    assert vocabulary.canonical(control) == control
