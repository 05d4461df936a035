"""Bad input to the data layer: each case raises a citevae error naming the problem, and the user's
AnnData is left exactly as it was (``refuses`` compares obs, var, X and uns/layers/obsm keys)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse

from citevae.data import get_registry, setup_anndata
from citevae.data.registry import UNS_KEY
from citevae.data.validate import check_anndata, check_expression
from citevae.errors import CiteVAEError, DataValidationError, VocabularyError

SMALL = {"control": 4, "A": 3, "B": 3, "A+B": 3}


@pytest.fixture
def adata(make_adata):
    """Two contexts (obs "context"), log1p values, labels in obs "perturbation"."""
    return make_adata(SMALL, contexts=("c1", "c2"))


@pytest.fixture
def counts(make_adata):
    return make_adata(SMALL, contexts=("c1", "c2"), scale="counts")


def _setup(adata, **kwargs):
    kwargs = {"perturbation_key": "perturbation", "control": "control", **kwargs}
    return setup_anndata(adata, **kwargs)


def test_errors_are_value_errors():
    for error in (DataValidationError, VocabularyError):
        assert issubclass(error, CiteVAEError) and issubclass(error, ValueError)


# ---------------------------------------------------------------- keys


def test_missing_key(adata, refuses):
    refuses(adata, DataValidationError, r"perturbation key 'guide_identity' is not a column of adata\.obs",
            _setup, adata, perturbation_key="guide_identity")


@pytest.mark.parametrize(
    ("kwargs", "wrong", "right"),
    [
        ({"perturbation_key": "perturbaton"}, "perturbaton", "perturbation"),
        ({"covariate_keys": ["contxt"]}, "contxt", "context"),
        ({"time_key": "tme"}, "tme", "time"),
    ],
)
def test_misspelled_key_suggests_the_right_one(make_adata, refuses, kwargs, wrong, right):
    adata = make_adata(SMALL, contexts=("c1", "c2"), times={"control": [0], "A": [1], "B": [1],
                                                            "A+B": [1]})
    error = refuses(adata, DataValidationError, f"'{wrong}' is not a column", _setup, adata, **kwargs)
    assert f"did you mean '{right}'" in str(error)


def test_no_control_cells_in_a_context(adata, refuses):
    drop = ((adata.obs["context"] == "c2") & (adata.obs["perturbation"] == "control")).to_numpy()
    data = adata[~drop].copy()
    error = refuses(data, DataValidationError, r"no control cells in context\(s\) 'c2'",
                    _setup, data, covariate_keys=["context"])
    assert "'c1'" not in str(error)
    # without the covariate the controls of c1 serve every cell
    assert _setup(data.copy()).scale == "log1p"


def test_control_label_absent(adata, refuses):
    error = refuses(adata, DataValidationError, "has the control label 'ctrl'", _setup, adata,
                    control="ctrl")
    assert "'control'" in str(error)  # lists the labels that are there


# ---------------------------------------------------------------- perturbation labels


@pytest.mark.parametrize(
    ("label", "match"),
    [
        ("", "empty perturbation label"),
        ("A+", r"'A\+' has an empty component"),
        ("A++B", r"'A\+\+B' has an empty component"),
        ("A+control", "combines the control label"),
    ],
)
def test_bad_perturbation_labels(adata, refuses, label, match):
    adata.obs["perturbation"] = adata.obs["perturbation"].astype(str)
    adata.obs.iloc[5, adata.obs.columns.get_loc("perturbation")] = label
    refuses(adata, DataValidationError, match, _setup, adata)


@pytest.mark.parametrize("categorical", [False, True])
def test_non_string_labels(adata, refuses, categorical):
    labels = np.where(adata.obs["perturbation"] == "control", 0, 7)
    adata.obs["perturbation"] = pd.Categorical(labels) if categorical else labels
    refuses(adata, DataValidationError, r"'perturbation' holds non-text label\(s\) 0, 7", _setup, adata,
            control="0")


@pytest.mark.parametrize("missing", [None, np.nan])
def test_perturbation_missing_values(adata, refuses, missing):
    labels = adata.obs["perturbation"].astype(object).to_numpy()
    labels[[2, 9]] = missing
    adata.obs["perturbation"] = labels
    refuses(adata, DataValidationError, r"'perturbation' has 2 missing value\(s\) \(cells 'cell2', 'cell9'\)",
            _setup, adata)


def test_categorical_perturbation_missing_values(adata, refuses):
    labels = pd.Categorical(adata.obs["perturbation"].astype(str))
    labels[3] = np.nan
    adata.obs["perturbation"] = labels
    refuses(adata, DataValidationError, r"1 missing value\(s\) \(cells 'cell3'\)", _setup, adata)


def test_covariate_missing_values(adata, refuses):
    adata.obs["context"] = adata.obs["context"].astype(object)
    adata.obs.loc["cell4", "context"] = None
    refuses(adata, DataValidationError, "covariate column 'context' has 1 missing.*'cell4'", _setup, adata,
            covariate_keys=["context"])


def test_unknown_target_when_reapplying_saved_vocabulary(adata, make_adata, refuses):
    registry = _setup(adata, covariate_keys=["context"])
    new = make_adata({"control": 2, "A+NOVEL1": 2, "B": 2}, contexts=("c1", "c2"), seed=3)
    error = refuses(new, VocabularyError, r"absent from the vocabulary: 'NOVEL1'", registry.encode, new,
                    n_steps=1)
    assert "known targets: 'A', 'B'" in str(error)


def test_unknown_covariate_value_when_reapplying(adata, make_adata, refuses):
    registry = _setup(adata, covariate_keys=["context"])
    new = make_adata({"control": 2, "A": 2}, contexts=("c1", "c9"))
    refuses(new, VocabularyError, r"covariate 'context' has value\(s\) 'c9' not seen at setup",
            registry.encode, new, n_steps=1)


# ---------------------------------------------------------------- names and shape


def test_duplicate_cell_names(adata, refuses):
    names = adata.obs_names.tolist()
    names[7] = names[3]
    adata.obs_names = names
    refuses(adata, DataValidationError,
            r"1 cell name\(s\) occur more than once: 'cell3'.*obs_names_make_unique", _setup, adata)


def test_duplicate_gene_names(adata, refuses):
    names = adata.var_names.tolist()
    names[5] = names[2] = "GAPDH"
    adata.var_names = names
    refuses(adata, DataValidationError, r"1 gene name\(s\) occur more than once: 'GAPDH'", _setup, adata)


def test_empty_anndata(adata, refuses):
    empty = adata[:0].copy()
    refuses(empty, DataValidationError, r"empty \(0 cells x 12 genes\)", _setup, empty)
    no_genes = adata[:, :0].copy()
    refuses(no_genes, DataValidationError, r"empty \(26 cells x 0 genes\)", _setup, no_genes)


def test_not_an_anndata():
    with pytest.raises(DataValidationError, match="expected an AnnData object, got DataFrame"):
        check_anndata(pd.DataFrame({"a": [1]}))


def test_other_genes_than_registry(adata, refuses):
    registry = _setup(adata)
    other = adata[:, 2:].copy()
    other.var_names = [*other.var_names[:-1], "EXTRA1"]
    error = refuses(other, VocabularyError, r"3 missing \('g0', 'g1', 'g11'\) and 1 unknown \('EXTRA1'\)",
                    registry.check_genes, other)
    assert "subset the data" in str(error)
    refuses(other, VocabularyError, "'EXTRA1'", registry.encode, other, n_steps=1)


# ---------------------------------------------------------------- expression values


@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("kind", ["dense", "csr"])
def test_nan_or_infinite_values(adata, refuses, value, kind):
    X = np.array(adata.X)
    X[6, 3] = value
    adata.X = sparse.csr_matrix(X) if kind == "csr" else X
    refuses(adata, DataValidationError, r"NaN or infinite value.*cell 'cell6', gene 'g3'", _setup, adata)


@pytest.mark.parametrize("kind", ["dense", "csr"])
def test_negative_values(adata, refuses, kind):
    adata.X[8, 1] = -0.5
    adata.X = sparse.csr_matrix(adata.X) if kind == "csr" else adata.X
    refuses(adata, DataValidationError, r"1 negative value\(s\), first at cell 'cell8', gene 'g1'",
            _setup, adata)


def test_scaled_data_refused(adata, refuses):
    adata.X = (adata.X - adata.X.mean(0)) / adata.X.std(0)  # z-scored: negative values
    refuses(adata, DataValidationError, "negative value", _setup, adata)


def test_negative_values_allowed_when_declared_continuous(adata):
    adata.X[8, 1] = -0.5
    assert _setup(adata, scale="continuous").scale == "continuous"


def test_non_integer_values_declared_as_counts(adata, refuses):
    refuses(adata, DataValidationError, "declared as counts but holds non-integer values", _setup, adata,
            scale="counts")


def test_all_zero_cell_in_counts(counts, refuses):
    counts.X[10] = 0
    refuses(counts, DataValidationError, r"1 cell\(s\) have zero total counts \(e\.g\. 'cell10'\)",
            _setup, counts)
    # in log1p data an all-zero cell is allowed
    assert _setup(counts.copy(), scale="log1p").scale == "log1p"


def test_values_too_large_for_log1p(adata, refuses):
    adata.X = adata.X * 100.0 + 0.5
    refuses(adata, DataValidationError, "too large for log1p-normalised data", _setup, adata)


def test_bad_scale_layer_and_separator(adata, refuses):
    refuses(adata, DataValidationError, "scale must be 'auto' or one of .*, got 'raw'", _setup,
            adata, scale="raw")
    refuses(adata, DataValidationError, r"layer 'counts' is not in adata\.layers", _setup, adata,
            layer="counts")
    refuses(adata, DataValidationError, "separator must be a non-empty string", _setup, adata, separator="")


def test_non_numeric_matrix():
    adata = ad.AnnData(X=np.array([["a", "b"]], dtype=object))
    with pytest.raises(DataValidationError, match="non-numeric dtype"):
        check_expression(adata, None)


def test_non_positive_library_size(counts, refuses):
    counts.obs["size"] = 1.0
    counts.obs.loc["cell0", "size"] = 0.0
    refuses(counts, DataValidationError, "library sizes must be positive", _setup, counts,
            library_size_key="size")


# ---------------------------------------------------------------- time


def test_time_column_with_mixed_types(adata, refuses):
    adata.obs["t"] = pd.Series([24 if i % 2 else "day2" for i in range(adata.n_obs)],
                               index=adata.obs_names, dtype=object)
    assert {type(v) for v in adata.obs["t"]} == {int, str}
    refuses(adata, DataValidationError, r"time column 't' mixes types \(number, string\)", _setup, adata,
            time_key="t")


def test_time_column_with_missing_values(adata, refuses):
    adata.obs["t"] = 0.0
    adata.obs.loc["cell1", "t"] = np.nan
    refuses(adata, DataValidationError, "time column 't' has 1 missing.*'cell1'", _setup, adata,
            time_key="t")


def test_time_label_never_seen_rank_mode(make_adata, refuses):
    times = {"control": ["early"], "A": ["early", "late"], "B": ["late"], "A+B": ["late"]}
    adata = make_adata(SMALL, times=times)
    registry = _setup(adata, time_key="time")
    assert registry.time_mapping.mode == "rank"
    new = make_adata(SMALL, times={**times, "B": ["mid"]}, seed=2)
    refuses(new, VocabularyError, r"time label\(s\) 'mid' were not observed in training",
            registry.encode, new, n_steps=1)


def test_time_label_off_the_grid_linear_mode(make_adata, refuses):
    times = {"control": [0], "A": [24, 48], "B": [24], "A+B": [48]}
    registry = _setup(make_adata(SMALL, times=times), time_key="time")
    assert registry.time_mapping.mode == "linear"
    new = make_adata(SMALL, times={**times, "B": [36]}, seed=2)
    refuses(new, VocabularyError, r"time label\(s\) 36.*do not lie on the time grid",
            registry.encode, new, n_steps=1)
    # 72 h lies on the grid: extrapolation is allowed
    later = make_adata(SMALL, times={**times, "B": [72]}, seed=2)
    assert registry.encode(later, n_steps=1).steps.max() == 3


def test_failed_setup_keeps_previous_registry(adata):
    registry = _setup(adata)
    stored = adata.uns[UNS_KEY]
    with pytest.raises(DataValidationError):
        _setup(adata, control="nope")
    assert adata.uns[UNS_KEY] == stored
    assert get_registry(adata) == registry


# ---------------------------------------------------------------- property test


def _expected_check(x: np.ndarray, scale: str) -> tuple[str, str | None]:
    """(scale, None) if ``check_expression`` must accept ``x``; (scale, message part) if not."""
    if not np.isfinite(x).all():
        return scale, "NaN or infinite"
    if (x < 0).any() and scale != "continuous":
        return scale, "negative value"
    integer = bool(np.all(x == np.round(x)))
    if scale == "auto":
        scale = "counts" if integer and x.max() > 1 else "log1p"
    if scale == "counts" and not integer:
        return scale, "non-integer values"
    if scale == "counts" and (x.sum(axis=1) == 0).any():
        return scale, "zero total counts"
    if scale == "log1p" and x.max() > 30:
        return scale, "too large for log1p"
    return scale, None


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    data=st.data(),
    shape=st.tuples(st.integers(1, 6), st.integers(1, 5)),
    storage=st.sampled_from(["float32", "float64", "float16", "int64", "csr", "csc"]),
    scale=st.sampled_from(["auto", "counts", "log1p", "continuous"]),
    flaw=st.sampled_from([None, np.nan, np.inf, -2.0, 0.5, "zero_row"]),
)
def test_check_expression_accepts_or_names_the_problem(data, shape, storage, scale, flaw):
    """Any small matrix, stored any way, is either accepted with the right scale and row totals or
    refused with a DataValidationError naming the problem; the matrix is never changed."""
    values = data.draw(st.lists(st.integers(0, 50), min_size=shape[0] * shape[1],
                                max_size=shape[0] * shape[1]))
    x = np.asarray(values, dtype=np.float64).reshape(shape)
    row = data.draw(st.integers(0, shape[0] - 1))
    if flaw == "zero_row":
        x[row] = 0
    elif flaw is not None and not (storage == "int64" and not float(flaw).is_integer()):
        x[row, 0] = flaw
    if storage == "int64" and not np.isfinite(x).all():
        x[~np.isfinite(x)] = 1
    stored = {"csr": sparse.csr_matrix, "csc": sparse.csc_matrix}.get(storage, lambda m: m)(
        x.astype(storage if storage not in ("csr", "csc") else np.float32))
    x = np.asarray(stored.toarray() if sparse.issparse(stored) else stored, dtype=np.float64)
    adata = ad.AnnData(stored)
    expected_scale, problem = _expected_check(x, scale)
    if problem is not None:
        with pytest.raises(DataValidationError, match=problem):
            check_expression(adata, None, scale)
    else:
        found, totals = check_expression(adata, None, scale)
        assert found == expected_scale
        np.testing.assert_allclose(totals, x.sum(axis=1))
    after = adata.X.toarray() if sparse.issparse(adata.X) else np.asarray(adata.X)
    np.testing.assert_array_equal(after.astype(np.float64), x)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(names=st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f"]), min_size=1, max_size=6),
       axis=st.sampled_from(["obs", "var"]))
def test_check_anndata_refuses_exactly_the_duplicated_names(names, axis):
    n = len(names)
    adata = ad.AnnData(np.ones((n, n), dtype=np.float32))
    setattr(adata, f"{axis}_names", names)
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        with pytest.raises(DataValidationError, match=f"{len(duplicated)} .* occur more than once"):
            check_anndata(adata)
    else:
        assert check_anndata(adata) is adata
