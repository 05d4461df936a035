"""Tests of model files: safetensors + JSON, identical round trip, refusal of bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from citevae.errors import ModelFileError, VocabularyError
from citevae.model import CiteVAE
from citevae.model.io import METADATA_FILE, WEIGHTS_FILE
from citevae.sim import simulate_counts

SMALL = {"n_genes": 50, "n_targets": 4, "n_pairs": 2, "n_cells_per_condition": 40, "n_steps": 2}


@pytest.fixture(scope="module")
def trained():
    adata = simulate_counts(**SMALL, seed=3)
    CiteVAE.setup_anndata(adata, "perturbation", "control")
    model = CiteVAE(adata, n_hidden=32, n_programs=4, n_steps=2)
    model.train(max_epochs=2, progress_bar=False, cells_per_group=32)
    return adata, model


@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory):
    _, model = trained
    return model.save(tmp_path_factory.mktemp("models") / "model")


@pytest.fixture
def copy_of(saved, tmp_path):
    """A fresh copy of the saved directory, to tamper with."""
    target = tmp_path / "copy"
    target.mkdir()
    for name in (WEIGHTS_FILE, METADATA_FILE):
        (target / name).write_bytes((saved / name).read_bytes())
    return target


def test_directory_holds_only_safe_files(saved) -> None:
    assert sorted(p.name for p in saved.iterdir()) == sorted([WEIGHTS_FILE, METADATA_FILE])
    assert not list(saved.parent.glob(".*")), "staging directories left behind"
    metadata = json.loads((saved / METADATA_FILE).read_text())
    assert metadata["format_version"] == 1 and metadata["is_trained"] is True


def test_round_trip_predictions_identical(trained, saved) -> None:
    adata, model = trained
    controls = adata[adata.obs["perturbation"] == "control"][:10].copy()
    targets = [str(t) for t in adata.uns["sim"]["targets"]]
    unseen = next(g for g in adata.var_names if g not in targets)
    perturbations = ["control", targets[0], f"{targets[0]}+{targets[2]}", unseen]
    loaded = CiteVAE.load(saved, adata)
    assert loaded.is_trained and loaded.config == model.config
    assert loaded.registry == model.registry
    before, after = model.predict(controls, perturbations), loaded.predict(controls, perturbations)
    assert np.array_equal(before.X, after.X)
    assert np.array_equal(before.layers["log1p"], after.layers["log1p"])
    assert before.obs.equals(after.obs)
    drawn = [m.predict(controls, perturbations, sample=True, seed=9).X for m in (model, loaded)]
    assert np.array_equal(*drawn)
    assert np.array_equal(model.causal_graph(targets[1]).to_numpy(),
                          loaded.causal_graph(targets[1]).to_numpy())
    assert np.array_equal(model.get_latent(controls, inplace=False)["z"],
                          loaded.get_latent(controls, inplace=False)["z"])


@pytest.mark.parametrize("decoder", ["additive", "linear"])
def test_round_trip_of_the_program_decoders(trained, tmp_path, decoder: str) -> None:
    adata, _ = trained
    model = CiteVAE(adata, n_hidden=32, n_programs=4, n_steps=2, decoder=decoder)
    model.train(max_epochs=1, progress_bar=False, cells_per_group=32)
    loaded = CiteVAE.load(model.save(tmp_path / "model"), adata)
    assert loaded.config.decoder == decoder
    controls = adata[adata.obs["perturbation"] == "control"][:5].copy()
    target = str(adata.uns["sim"]["targets"][0])
    assert np.array_equal(model.predict(controls, [target]).X, loaded.predict(controls, [target]).X)


def test_load_into_data_with_other_genes_is_refused(trained, saved) -> None:
    adata, _ = trained
    other = adata[:, 3:].copy()
    with pytest.raises(VocabularyError, match=str(adata.var_names[0])):
        CiteVAE.load(saved, other)


def test_truncated_weights_are_refused(copy_of) -> None:
    weights = copy_of / WEIGHTS_FILE
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="safetensors"):
        CiteVAE.load(copy_of)


def test_garbage_json_is_refused(copy_of) -> None:
    (copy_of / METADATA_FILE).write_text("{not json at all")
    with pytest.raises(ModelFileError, match="JSON"):
        CiteVAE.load(copy_of)


def test_inconsistent_json_is_refused(copy_of) -> None:
    metadata = json.loads((copy_of / METADATA_FILE).read_text())
    metadata["module_config"]["n_programs"] += 1
    (copy_of / METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(ModelFileError, match="consistent"):
        CiteVAE.load(copy_of)


def test_newer_format_version_is_refused(copy_of) -> None:
    metadata = json.loads((copy_of / METADATA_FILE).read_text())
    metadata["format_version"] = 999
    (copy_of / METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(ModelFileError, match="999"):
        CiteVAE.load(copy_of)


def test_missing_file_is_refused(copy_of) -> None:
    (copy_of / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelFileError, match=WEIGHTS_FILE):
        CiteVAE.load(copy_of)


def test_existing_directory_needs_overwrite(trained, saved, tmp_path) -> None:
    _, model = trained
    with pytest.raises(ModelFileError, match="overwrite"):
        model.save(saved)
    target = tmp_path / "again"
    model.save(target)
    (target / METADATA_FILE).write_text("stale")
    model.save(target, overwrite=True)
    assert json.loads((target / METADATA_FILE).read_text())["format_version"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]
