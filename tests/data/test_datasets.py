"""Tests of citevae.data.datasets: local-file route on the shared data, offline pooch route."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import re
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from citevae.data import datasets as ds
from citevae.data.datasets import (
    DATASETS,
    fetch_dataset,
    load_dataset,
    load_datlinger2021,
    load_mcfaline2023,
    load_norman2019,
    load_perturbench_devel,
    load_schiebinger2019,
    load_trapnell2014_hsmm,
    read_fpkm_matrix,
)
from citevae.errors import DataValidationError

DEVEL = "norman2019_mcfaline2023_perturbench_devel.h5ad"

SHARED = [
    (load_perturbench_devel, "perturbench_devel", DEVEL, (5961, 500)),
    (load_datlinger2021, "datlinger2021", "datlinger2021_jurkat.h5ad", (7500, 2000)),
    (load_trapnell2014_hsmm, "trapnell2014_hsmm", "trapnell2014_hsmm_timecourse.h5ad",
     (271, 19494)),
    (load_schiebinger2019, "schiebinger2019", "schiebinger2019_days10-11.h5ad", (250, 1479)),
]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("loader", "name", "filename", "shape"), SHARED,
                         ids=[s[1] for s in SHARED])
def test_shared_files_load_with_spec_keys(
    shared_data: Path, loader: Callable, name: str, filename: str, shape: tuple[int, int]
) -> None:
    adata = loader(path=shared_data / filename)
    assert isinstance(adata, ad.AnnData) and adata.shape == shape
    spec = DATASETS[name]
    for key in (spec.perturbation_key, spec.time_key, *spec.covariate_keys):
        if key is not None:
            assert key in adata.obs, key
    if spec.perturbation_key is not None:
        assert spec.control in set(adata.obs[spec.perturbation_key].astype(str))


def test_perturbench_devel_is_returned_unchanged(shared_data: Path) -> None:
    raw = ad.read_h5ad(shared_data / DEVEL)
    loaded = load_dataset("perturbench_devel", path=shared_data / DEVEL)
    pd.testing.assert_frame_equal(loaded.obs, raw.obs)
    pd.testing.assert_frame_equal(loaded.var, raw.var)
    assert set(loaded.uns) == set(raw.uns)
    assert (abs(loaded.X - raw.X)).max() == 0
    assert {"k562", "A172", "T98G", "U87MG"} == set(loaded.obs["cell_type"])


def test_shared_datlinger_and_schiebinger_keep_their_layout(shared_data: Path) -> None:
    jurkat = load_datlinger2021(path=shared_data / "datlinger2021_jurkat.h5ad")
    assert jurkat.obs["perturbation"].nunique() == 21  # 20 targets + control
    assert set(jurkat.obs["stimulation"]) == {"stimulated", "unstimulated"}
    reprog = load_schiebinger2019(path=shared_data / "schiebinger2019_days10-11.h5ad")
    assert sorted(reprog.obs["day"].unique()) == [10.0, 10.5, 11.0]


def test_specs_are_well_formed() -> None:
    assert set(DATASETS) == {"norman2019", "perturbench_devel", "mcfaline2023", "datlinger2021",
                             "trapnell2014_hsmm", "schiebinger2019"}
    for name, spec in DATASETS.items():
        assert spec.name == name and spec.url.startswith("https://") and spec.filename
        assert spec.known_hash is None or re.fullmatch(
            r"md5:[0-9a-f]{32}|sha256:[0-9a-f]{64}", spec.known_hash
        ), name
        assert spec.scale in {"counts", "log1p", "fpkm", "normalised"}
        assert spec.file_format in {"h5ad", "h5ad.gz", "fpkm_tsv"}
        assert (spec.perturbation_key is None) == (spec.control is None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        DATASETS["norman2019"].url = "x"  # type: ignore[misc]


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(DataValidationError, match="norman2019") as info:
        load_dataset("norman2020")
    assert "'norman2020'" in str(info.value)
    for name in DATASETS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "content", [None, b"", b"this is not an h5ad file\n", b"\x1f\x8bnot really gzip"],
    ids=["missing", "empty", "text", "corrupt-gzip"],
)
def test_bad_files_raise_naming_the_path(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "broken.h5ad"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataValidationError, match=re.escape(str(path))):
        load_perturbench_devel(path=path)


def test_truncated_h5ad_raises_naming_the_path(shared_data: Path, tmp_path: Path) -> None:
    path = tmp_path / "truncated.h5ad"
    path.write_bytes((shared_data / DEVEL).read_bytes()[:4096])
    with pytest.raises(DataValidationError, match=re.escape(str(path))):
        load_dataset("perturbench_devel", path=path)


def test_download_route_with_file_url(
    shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = shared_data / DEVEL
    spec = dataclasses.replace(DATASETS["perturbench_devel"], url=source.as_uri(),
                               known_hash=f"sha256:{_sha256(source)}")
    cache = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger="citevae.data.datasets"):
        adata = load_dataset(spec, cache_dir=cache)
    assert _sha256(source) in caplog.text  # the download's SHA256 is logged
    assert adata.shape == (5961, 500)
    assert _sha256(cache / spec.filename) == _sha256(source)
    assert load_dataset(spec, cache_dir=cache).shape == (5961, 500)  # reuses the cache
    unpinned = dataclasses.replace(spec, known_hash=None)
    assert fetch_dataset(unpinned, cache_dir=tmp_path / "c2").is_file()
    wrong = dataclasses.replace(spec, known_hash="md5:" + "0" * 32)
    with pytest.raises(DataValidationError, match="checksum"):
        load_dataset(wrong, cache_dir=tmp_path / "c3")


def test_download_route_gzip_h5ad(shared_data: Path, tmp_path: Path) -> None:
    gz = tmp_path / "devel.h5ad.gz"
    gz.write_bytes(gzip.compress((shared_data / DEVEL).read_bytes(), compresslevel=1))
    spec = dataclasses.replace(DATASETS["mcfaline2023"], url=gz.as_uri(),
                               known_hash=f"sha256:{_sha256(gz)}")
    adata = load_dataset(spec, cache_dir=tmp_path / "cache")
    assert adata.shape == (5961, 500)
    assert (tmp_path / "cache" / spec.filename).is_file()
    assert load_mcfaline2023(path=gz).shape == (5961, 500)  # local gzip file works too


def test_download_route_missing_file_url(tmp_path: Path) -> None:
    spec = dataclasses.replace(DATASETS["norman2019"], url=(tmp_path / "absent.h5ad").as_uri(),
                               known_hash=None)
    with pytest.raises(DataValidationError, match=r"absent\.h5ad"):
        fetch_dataset(spec, cache_dir=tmp_path / "cache")


def _write_h5ad(tmp_path: Path, obs: dict) -> Path:
    n = len(next(iter(obs.values())))
    adata = ad.AnnData(X=sp.csr_matrix(np.ones((n, 3), dtype=np.float32)),
                       obs=pd.DataFrame(obs, index=[f"c{i}" for i in range(n)]))
    path = tmp_path / "small.h5ad"
    adata.write_h5ad(path)
    return path


def test_norman_combinations_use_plus(tmp_path: Path) -> None:
    path = _write_h5ad(tmp_path, {"perturbation": ["control", "KLF1", "KLF1_MAP2K6"]})
    adata = load_norman2019(path=path)
    assert list(adata.obs["perturbation"]) == ["control", "KLF1", "KLF1+MAP2K6"]
    assert list(adata.obs["perturbation_scperturb"]) == ["control", "KLF1", "KLF1_MAP2K6"]


def test_datlinger_scperturb_layout_is_standardised(tmp_path: Path) -> None:
    path = _write_h5ad(tmp_path, {"perturbation": ["ZAP70_1", "ZAP70_2", "control"],
                                  "perturbation_2": ["stimulated", "unstimulated", "stimulated"]})
    obs = load_datlinger2021(path=path).obs
    assert list(obs["perturbation"]) == ["ZAP70", "ZAP70", "control"]
    assert list(obs["guide"]) == ["ZAP70_1", "ZAP70_2", "control"]
    assert list(obs["stimulation"]) == ["stimulated", "unstimulated", "stimulated"]


def test_schiebinger_day_strings_become_floats(tmp_path: Path) -> None:
    path = _write_h5ad(tmp_path, {"day": ["0.0", "10.5", "18"]})
    assert list(load_schiebinger2019(path=path).obs["day"]) == [0.0, 10.5, 18.0]


@pytest.mark.parametrize("implicit_index", [False, True], ids=["named-index", "implicit-index"])
def test_geo_fpkm_matrix(tmp_path: Path, implicit_index: bool) -> None:
    cells = ["T0_CT_A01", "T24_CT_B02", "T72_CT_H12"]
    header = "\t".join(cells) if implicit_index else "tracking_id\t" + "\t".join(cells)
    rows = ["ENSG00000000003.10\t21.9\t0\t1.5", "ENSG00000000419.8\t0\t77.5\t0"]
    path = tmp_path / "GSE52529_fpkm_matrix.txt.gz"
    path.write_bytes(gzip.compress(("\n".join([header, *rows]) + "\n").encode()))
    adata = load_trapnell2014_hsmm(path=path)
    assert adata.shape == (3, 2) and list(adata.obs_names) == cells
    assert list(adata.obs["Hours"]) == [0.0, 24.0, 72.0]
    assert list(adata.obs["Media"]) == ["GM", "DM", "DM"]
    assert list(adata.var_names) == ["ENSG00000000003.10", "ENSG00000000419.8"]
    np.testing.assert_allclose(adata.X.toarray()[1], [0.0, 77.5], rtol=1e-6)


def test_fpkm_matrix_rejects_non_numeric(tmp_path: Path) -> None:
    path = tmp_path / "matrix.txt"
    path.write_text("gene\tc1\tc2\nA\t1\tx\n")
    with pytest.raises(DataValidationError, match=r"matrix\.txt"):
        read_fpkm_matrix(path)


def test_default_cache_is_pooch_os_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         shared_data: Path) -> None:
    import pooch

    monkeypatch.setattr(pooch, "os_cache", lambda project: tmp_path / project)
    spec = dataclasses.replace(DATASETS["perturbench_devel"], url=(shared_data / DEVEL).as_uri())
    path = ds.fetch_dataset(spec)
    assert path == tmp_path / "citevae" / spec.filename
