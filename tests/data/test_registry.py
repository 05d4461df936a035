"""Tests of citevae.data.registry: setup on real and synthetic data, scale detection, encoding, JSON."""

from __future__ import annotations

import json
import logging

import anndata as ad
import numpy as np
import pytest

from citevae.data import DataRegistry, get_registry, setup_anndata
from citevae.data.registry import UNS_KEY
from citevae.errors import DataValidationError, VocabularyError


def _assert_round_trips(adata, registry: DataRegistry) -> None:
    assert get_registry(adata) == registry
    assert DataRegistry.from_json(registry.to_json()) == registry
    assert DataRegistry.from_dict(json.loads(json.dumps(registry.to_dict()))) == registry
    assert isinstance(adata.uns[UNS_KEY], str)


# ---------------------------------------------------------------- real data


def test_perturbench_registers_as_log1p(perturbench):
    adata, registry = perturbench
    assert registry.scale == "log1p"
    assert registry.covariate_keys == ("cell_type",)
    assert registry.covariate_categories == {"cell_type": ("A172", "T98G", "U87MG", "k562")}
    assert registry.var_names == tuple(adata.var_names) and registry.n_genes == 500
    assert registry.time_key is None and registry.time_mapping is None
    assert registry.library_sizes(adata) is None
    _assert_round_trips(adata, registry)
    encoded = registry.encode(adata, n_steps=4)
    assert set(encoded.contexts) == {"A172", "T98G", "U87MG", "k562"}
    control = (adata.obs["condition"] == "control").to_numpy()
    np.testing.assert_array_equal(encoded.is_control, control)
    np.testing.assert_array_equal(encoded.steps, np.where(control, 0, 4))  # R1: no time key
    assert encoded.targets.shape == (adata.n_obs, registry.vocabulary.n_targets)
    codes = encoded.covariates[:, 0]
    categories = np.array(registry.covariate_categories["cell_type"])
    np.testing.assert_array_equal(categories[codes], adata.obs["cell_type"].astype(str).to_numpy())
    assert encoded.library is None


def test_jurkat_registers_as_counts(jurkat):
    adata, registry = jurkat
    assert registry.scale == "counts"
    assert registry.covariate_categories == {"stimulation": ("stimulated", "unstimulated")}
    assert registry.vocabulary.n_targets == 20
    _assert_round_trips(adata, registry)
    library = registry.library_sizes(adata)
    assert library.dtype == np.float32
    np.testing.assert_allclose(library, np.asarray(adata.X.sum(axis=1)).ravel(), rtol=1e-6)
    assert library.min() >= 1  # every cell has counts (obs["ncounts"] counts all genes, not these 2000)


def test_hsmm_fpkm_is_refused_raw_and_accepted_after_log1p(shared_data, hsmm):
    raw = ad.read_h5ad(shared_data / "trapnell2014_hsmm_timecourse.h5ad")
    with pytest.raises(DataValidationError, match="too large for log1p"):
        setup_anndata(raw, "Media", "GM", time_key="Hours")
    assert UNS_KEY not in raw.uns
    adata, registry = hsmm
    assert registry.scale == "log1p"
    assert registry.time_key == "Hours"
    assert registry.time_mapping.steps == (0, 1, 2, 3)
    assert registry.vocabulary.targets == ("DM",)
    _assert_round_trips(adata, registry)
    encoded = registry.encode(adata, n_steps=99)  # n_steps is unused with a time key
    np.testing.assert_array_equal(encoded.steps, adata.obs["Hours"].to_numpy() // 24)
    assert set(encoded.contexts) == {"all"}
    assert encoded.covariates.shape == (adata.n_obs, 0)


def test_schiebinger_with_added_perturbation_column(schiebinger_raw):
    adata = schiebinger_raw.copy()
    adata.obs["perturbation"] = "control"
    registry = setup_anndata(adata, "perturbation", "control", time_key="day")
    assert registry.scale == "log1p"
    assert registry.vocabulary.targets == () and registry.vocabulary.conditions == ("control",)
    assert registry.time_mapping.unit == 0.5 and registry.time_mapping.steps == (0, 1, 2)
    _assert_round_trips(adata, registry)
    encoded = registry.encode(adata, n_steps=1)
    assert encoded.is_control.all() and encoded.targets.shape == (adata.n_obs, 0)
    assert set(encoded.steps) == {0, 1, 2}
    assert UNS_KEY not in schiebinger_raw.uns  # the copy was set up, not the shared object


# ---------------------------------------------------------------- synthetic data


def test_setup_stores_registry_and_changes_nothing_else(small_adata):
    obs = small_adata.obs.copy()
    X = small_adata.X.copy()
    registry = setup_anndata(small_adata, "perturbation", "control", covariate_keys="context")
    assert registry.covariate_keys == ("context",)
    assert list(small_adata.uns) == [UNS_KEY]
    assert small_adata.obs.equals(obs)
    np.testing.assert_array_equal(small_adata.X, X)
    _assert_round_trips(small_adata, registry)


def test_scale_detection_and_declaration(make_adata, caplog):
    conditions = {"control": 4, "A": 4}
    counts = make_adata(conditions, scale="counts")
    with caplog.at_level(logging.INFO, logger="citevae.data.registry"):
        assert setup_anndata(counts, "perturbation", "control").scale == "counts"
    assert "expression scale: counts (detected)" in caplog.text
    assert setup_anndata(make_adata(conditions, scale="log1p"), "perturbation", "control").scale == "log1p"
    # integer data declared as log1p is accepted as declared
    assert setup_anndata(counts, "perturbation", "control", scale="log1p").scale == "log1p"
    # integers no larger than 1 are taken as log1p-like unless declared
    binary = make_adata(conditions, scale="counts")
    binary.X = np.minimum(binary.X, 1)
    assert setup_anndata(binary, "perturbation", "control").scale == "log1p"
    assert setup_anndata(binary, "perturbation", "control", scale="counts").scale == "counts"


def test_counts_in_a_layer(make_adata):
    adata = make_adata({"control": 4, "A": 4}, scale="counts")
    adata.layers["counts"] = adata.X.copy()
    adata.X = np.log1p(adata.X)
    registry = setup_anndata(adata, "perturbation", "control", layer="counts")
    assert registry.scale == "counts" and registry.layer == "counts"
    np.testing.assert_allclose(registry.library_sizes(adata), adata.layers["counts"].sum(axis=1))


def test_library_size_key(make_adata):
    adata = make_adata({"control": 4, "A": 4}, scale="counts")
    adata.obs["size"] = np.arange(1, adata.n_obs + 1, dtype=float)
    registry = setup_anndata(adata, "perturbation", "control", library_size_key="size")
    np.testing.assert_array_equal(registry.library_sizes(adata), adata.obs["size"].to_numpy(np.float32))


def test_combination_labels_canonicalised(make_adata):
    adata = make_adata({"control": 3, "A+B": 3, "B+A": 3, "A": 3})
    registry = setup_anndata(adata, "perturbation", "control")
    assert registry.vocabulary.conditions == ("A", "A+B", "control")
    encoded = registry.encode(adata, n_steps=2)
    combo = adata.obs["perturbation"].isin(["A+B", "B+A"]).to_numpy()
    assert set(encoded.conditions[combo]) == {"A+B"}
    np.testing.assert_array_equal(encoded.targets[combo].toarray(), np.ones((combo.sum(), 2)))


def test_two_covariates_form_joint_contexts(make_adata):
    adata = make_adata({"control": 3, "A": 3}, contexts=("x", "y"))
    adata.obs["donor"] = np.where(np.arange(adata.n_obs) % 2, "d1", "d2")
    registry = setup_anndata(adata, "perturbation", "control", covariate_keys=["context", "donor"])
    contexts = registry.contexts(adata)
    assert set(contexts) == {"x|d1", "x|d2", "y|d1", "y|d2"}
    assert registry.encode(adata, n_steps=1).covariates.shape == (adata.n_obs, 2)


def test_encode_reapplies_saved_registry_to_new_data(small_registered, make_adata):
    _, registry = small_registered
    loaded = DataRegistry.from_json(registry.to_json())
    other = make_adata({"control": 2, "B+A": 2, "C": 2}, contexts=("c2",), seed=5)
    other.obs["context"] = "c2"
    encoded = loaded.encode(other, n_steps=3)
    expected = registry.vocabulary.multi_hot(other.obs["perturbation"].tolist())
    assert (encoded.targets != expected).nnz == 0
    assert set(encoded.conditions) == {"control", "A+B", "C"}
    assert set(encoded.covariates[:, 0]) == {1}  # code of "c2"


def test_encode_with_new_targets_allowed(small_registered, make_adata):
    _, registry = small_registered
    other = make_adata({"control": 2, "A+NEW": 2}, contexts=("c1",))
    other.obs["context"] = "c1"
    with pytest.raises(VocabularyError, match="'NEW'"):
        registry.encode(other, n_steps=1)
    encoded = registry.encode(other, n_steps=1, allow_new_targets=True)
    assert encoded.target_names == (*registry.vocabulary.targets, "NEW")
    row = encoded.targets[np.flatnonzero(~encoded.is_control)[0]].toarray().ravel()
    assert row[registry.vocabulary.targets.index("A")] == 1 and row[-1] == 1 and row.sum() == 2


def test_check_genes(small_registered):
    adata, registry = small_registered
    registry.check_genes(adata)
    reordered = adata[:, adata.var_names[::-1]].copy()
    with pytest.raises(VocabularyError, match="another order"):
        registry.check_genes(reordered)


def test_get_registry_requires_setup(make_adata):
    with pytest.raises(DataValidationError, match="has not been set up"):
        get_registry(make_adata({"control": 2}))


def test_registry_from_newer_version_refused(small_registered):
    _, registry = small_registered
    data = registry.to_dict()
    data["version"] = 99
    with pytest.raises(DataValidationError, match="version 99"):
        DataRegistry.from_dict(data)
