"""Tests of citevae.data.time: linear grid and rank mappings of time labels to latent steps."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from citevae.data import TimeMapping
from citevae.data.time import MAX_STEPS
from citevae.errors import DataValidationError, VocabularyError


def _round_trip(mapping: TimeMapping) -> TimeMapping:
    return TimeMapping.from_dict(json.loads(json.dumps(mapping.to_dict())))


def test_hours_map_to_consecutive_steps():
    mapping = TimeMapping.from_values([48, 0, 24, 72, 24, 0])
    assert mapping.mode == "linear"
    assert mapping.unit == 24.0 and mapping.origin == 0.0
    assert mapping.steps == (0, 1, 2, 3)
    assert mapping.max_step == 3
    steps = mapping.step_of([0, 24, 48, 72, 48])
    np.testing.assert_array_equal(steps, [0, 1, 2, 3, 2])
    assert steps.dtype == np.int64


def test_half_day_gaps_set_the_unit():
    mapping = TimeMapping.from_values(pd.Series([0.0, 0.5, 1.5, 2.0]))
    assert mapping.unit == 0.5
    assert mapping.steps == (0, 1, 3, 4)
    np.testing.assert_array_equal(mapping.step_of([1.0, 2.5]), [2, 5])  # on the grid though unseen


def test_origin_is_first_label():
    mapping = TimeMapping.from_values([10, 10.5, 11])
    assert (mapping.origin, mapping.unit, mapping.steps) == (10.0, 0.5, (0, 1, 2))


def test_given_unit_overrides_gcd():
    mapping = TimeMapping.from_values([0, 24, 48], unit=12)
    assert mapping.steps == (0, 2, 4)


def test_missing_time_point_keeps_gaps():
    # 0 / 24 / 72 h: the gap of 48 h is two steps, so 48 h (never observed) maps to step 2
    mapping = TimeMapping.from_values([0, 24, 72])
    assert mapping.steps == (0, 1, 3)
    np.testing.assert_array_equal(mapping.step_of([48]), [2])


def test_extrapolation_beyond_last_label_on_grid():
    mapping = TimeMapping.from_values([0, 24, 48])
    np.testing.assert_array_equal(mapping.step_of([72, 96]), [3, 4])


@pytest.mark.parametrize("value", [36, 12.5, 1])
def test_off_grid_labels_refused(value):
    mapping = TimeMapping.from_values([0, 24, 48])
    with pytest.raises(VocabularyError, match=f"{float(value):g}.*do not lie on the time grid"):
        mapping.step_of([0, value])


def test_label_before_origin_refused():
    mapping = TimeMapping.from_values([24, 48])
    with pytest.raises(VocabularyError, match=r"0.*do not lie on the time grid"):
        mapping.step_of([0])


def test_non_numeric_label_refused_in_linear_mode():
    mapping = TimeMapping.from_values([0, 24])
    with pytest.raises(VocabularyError, match="must be numbers"):
        mapping.step_of(["late"])


def test_numeric_strings_are_numbers():
    mapping = TimeMapping.from_values(["0", "24", "48"])
    assert mapping.mode == "linear" and mapping.steps == (0, 1, 2)
    np.testing.assert_array_equal(mapping.step_of(["24", 48]), [1, 2])


def test_rank_mode_for_strings():
    mapping = TimeMapping.from_values(["early", "late", "early"])
    assert mapping.mode == "rank"
    assert mapping.labels == ("early", "late") and mapping.steps == (0, 1)
    np.testing.assert_array_equal(mapping.step_of(["late", "early"]), [1, 0])


def test_rank_mode_follows_ordered_categories():
    values = pd.Categorical(["d0", "mid", "end", "mid"], categories=["d0", "mid", "end"], ordered=True)
    mapping = TimeMapping.from_values(pd.Series(values))
    assert mapping.labels == ("d0", "mid", "end")
    assert mapping.steps == (0, 1, 2)


def test_rank_mode_n_steps_scaling():
    mapping = TimeMapping.from_values(["a", "b", "c"], n_steps=4)
    assert mapping.steps == (0, 2, 4)
    assert mapping.max_step == 4
    mapping = TimeMapping.from_values(["a", "b", "c", "d"], n_steps=6)
    assert mapping.steps == (0, 2, 4, 6)
    with pytest.raises(DataValidationError, match="n_steps >= 2"):
        TimeMapping.from_values(["a", "b", "c"], n_steps=1)


def test_rank_mode_on_numbers_ignores_gaps():
    mapping = TimeMapping.from_values([0, 1, 10], mode="rank")
    assert mapping.steps == (0, 1, 2)
    np.testing.assert_array_equal(mapping.step_of([10, 0]), [2, 0])


def test_rank_mode_refuses_unseen_labels_naming_them():
    mapping = TimeMapping.from_values(["early", "late"])
    with pytest.raises(VocabularyError, match=r"'middle'.*not observed"):
        mapping.step_of(["early", "middle"])


def test_single_label():
    assert TimeMapping.from_values([5, 5]).steps == (0,)
    assert TimeMapping.from_values(["only"]).steps == (0,)


def test_linear_mode_refused_for_strings():
    with pytest.raises(DataValidationError, match="'when' is not numeric"):
        TimeMapping.from_values(["early", "late"], mode="linear", name="when")


def test_bad_mode_and_unit():
    with pytest.raises(DataValidationError, match="'log'"):
        TimeMapping.from_values([0, 1], mode="log")
    with pytest.raises(DataValidationError, match="unit must be positive"):
        TimeMapping.from_values([0, 1], unit=0)


def test_too_many_steps_refused():
    with pytest.raises(DataValidationError, match=f"more than {MAX_STEPS}"):
        TimeMapping.from_values([0, 1, 100], name="hours")


def test_mixed_types_refused():
    with pytest.raises(DataValidationError, match=r"'t' mixes types.*number.*string"):
        TimeMapping.from_values(pd.Series([0, "24h", 48], dtype=object), name="t")


def test_missing_values_refused():
    with pytest.raises(DataValidationError, match="'t' has missing values"):
        TimeMapping.from_values(pd.Series([0.0, np.nan, 24.0]), name="t")


@pytest.mark.parametrize("values", [[0, 24, 48, 72], [10, 10.5, 11], ["early", "late"]])
def test_json_round_trip(values):
    mapping = TimeMapping.from_values(values)
    loaded = _round_trip(mapping)
    assert loaded == mapping
    np.testing.assert_array_equal(loaded.step_of(values), mapping.step_of(values))


def test_real_time_courses(hsmm_log1p, schiebinger_raw):
    hsmm = TimeMapping.from_values(hsmm_log1p.obs["Hours"], name="Hours")
    assert hsmm.labels == (0.0, 24.0, 48.0, 72.0) and hsmm.steps == (0, 1, 2, 3)
    steps = hsmm.step_of(hsmm_log1p.obs["Hours"])
    np.testing.assert_array_equal(steps, hsmm_log1p.obs["Hours"].to_numpy() // 24)
    # Schiebinger days 10 / 10.5 / 11 (a categorical of floats): half-day steps
    day = TimeMapping.from_values(schiebinger_raw.obs["day"], name="day")
    assert (day.origin, day.unit, day.steps) == (10.0, 0.5, (0, 1, 2))
    expected = ((schiebinger_raw.obs["day"].astype(float).to_numpy() - 10) * 2).astype(int)
    np.testing.assert_array_equal(day.step_of(schiebinger_raw.obs["day"]), expected)
