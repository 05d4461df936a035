"""Tests of citevae.data.gene_knowledge on the real org.Hs.eg.db GAF and on small GAF files."""

from __future__ import annotations

import gzip
import hashlib
import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from citevae.data.gene_knowledge import (
    fetch_go_annotations,
    go_gene_features,
    load_go_features,
    read_gaf,
)
from citevae.errors import DataValidationError

GAF = "go_human_orghsegdb_3.16.gaf.gz"
DEVEL = "norman2019_mcfaline2023_perturbench_devel.h5ad"


def _gaf_line(symbol: str, go_id: str, evidence: str = "IDA", aspect: str = "P",
              qualifier: str = "") -> str:
    cols = ["UniProtKB", f"ID_{symbol}", symbol, qualifier, go_id, "PMID:1", evidence, "",
            aspect, f"{symbol} protein", "", "protein", "taxon:9606", "20200101", "UniProt", "", ""]
    return "\t".join(cols) + "\n"


SMALL_GAF = (
    "!gaf-version: 2.2\n!generated-by: test\n"
    + _gaf_line("AAA", "GO:0000001")
    + _gaf_line("AAA", "GO:0000002", evidence="IEA", aspect="F")
    + _gaf_line("BBB", "GO:0000001", qualifier="NOT|involved_in")
    + _gaf_line("BBB", "GO:0000003", evidence="ND")
    + _gaf_line("CCC", "GO:0000003", aspect="C")
    + _gaf_line("CCC", "GO:0000003", aspect="C")
)


@pytest.fixture(scope="module")
def annotations(shared_data: Path) -> pd.DataFrame:
    return read_gaf(shared_data / GAF)


@pytest.fixture(scope="module")
def features(annotations: pd.DataFrame) -> pd.DataFrame:
    return go_gene_features(annotations, n_components=64, seed=0)


def _cos(f: pd.DataFrame, a: str, b: str) -> float:
    return float(f.loc[a].to_numpy() @ f.loc[b].to_numpy())


def test_read_gaf_real_file(annotations: pd.DataFrame) -> None:
    assert list(annotations.columns) == ["gene", "go_id", "evidence", "aspect"]
    assert 300_000 < len(annotations) <= 348_116
    assert set(annotations["aspect"]) == {"P", "F", "C"}
    assert "ND" not in set(annotations["evidence"])
    assert annotations["go_id"].str.fullmatch(r"GO:\d{7}").all()
    assert annotations["gene"].nunique() > 18_000
    assert not annotations.duplicated().any()
    assert {"MAP2K1", "KLF1", "CEBPA"} <= set(annotations["gene"])


def test_read_gaf_filters_not_nd_aspect_and_duplicates(tmp_path: Path) -> None:
    plain = tmp_path / "small.gaf"
    plain.write_text(SMALL_GAF)
    out = read_gaf(plain)
    pairs = set(zip(out["gene"], out["go_id"], strict=True))
    assert pairs == {("AAA", "GO:0000001"), ("AAA", "GO:0000002"), ("CCC", "GO:0000003")}
    only_f = read_gaf(plain, aspects=("F",))
    assert set(only_f["go_id"]) == {"GO:0000002"}
    no_iea = read_gaf(plain, exclude_evidence=("ND", "IEA"))
    assert "IEA" not in set(no_iea["evidence"])
    with_nd = read_gaf(plain, exclude_evidence=())
    assert ("BBB", "GO:0000003") in set(zip(with_nd["gene"], with_nd["go_id"], strict=True))
    gz = tmp_path / "small.gaf.gz"
    gz.write_bytes(gzip.compress(SMALL_GAF.encode()))
    pd.testing.assert_frame_equal(read_gaf(gz), out)


@pytest.mark.parametrize(
    "content",
    [
        None,  # missing file
        b"",  # empty
        b"!gaf-version: 2.2\n!only a header\n",  # header only
        b"gene\tvalue\nA\t1\nB\t2\n",  # a table, but not GAF
        b"\x1f\x8b\x08\x00garbage that is not gzip",  # corrupt gzip
        "\t".join(["x"] * 12).encode() + b"\n",  # 12 columns without GO ids
    ],
    ids=["missing", "empty", "header-only", "not-gaf", "corrupt-gzip", "no-go-ids"],
)
def test_read_gaf_bad_files_name_the_path(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "bad.gaf"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataValidationError, match=r"bad\.gaf"):
        read_gaf(path)


def test_read_gaf_nothing_left_after_filtering(tmp_path: Path) -> None:
    path = tmp_path / "small.gaf"
    path.write_text(SMALL_GAF)
    with pytest.raises(DataValidationError, match="no annotation left"):
        read_gaf(path, aspects=("X",))


def test_features_shape_norm_and_similarity(features: pd.DataFrame) -> None:
    assert features.shape[1] == 64 and features.shape[0] > 18_000
    assert features.index.is_unique
    np.testing.assert_allclose(np.linalg.norm(features.to_numpy(), axis=1), 1.0, atol=1e-9)
    assert _cos(features, "MAP2K1", "MAP2K1") == pytest.approx(1.0)
    # Kinases of the same MAPK cascade step are closer than a kinase and an unrelated gene.
    assert _cos(features, "MAP2K1", "MAP2K2") > _cos(features, "MAP2K1", "ALB") + 0.3
    assert _cos(features, "MAPK1", "MAPK3") > _cos(features, "MAPK1", "HBB") + 0.3
    assert _cos(features, "CEBPA", "CEBPB") > _cos(features, "CEBPA", "MAP2K1")


def test_features_deterministic_and_genes_select_rows(
    annotations: pd.DataFrame, features: pd.DataFrame
) -> None:
    genes = ["MAPK3", "NOT_A_GENE", "MAP2K1", "MAPK3", "KLF1"]
    sub = go_gene_features(annotations, genes=genes, n_components=64, seed=0)
    assert list(sub.index) == ["MAPK3", "MAP2K1", "KLF1"]
    assert sub.attrs["missing_genes"] == ["NOT_A_GENE"]
    # Fitted on all annotated genes, so a gene's vector does not depend on `genes`.
    np.testing.assert_allclose(sub.to_numpy(), features.loc[sub.index].to_numpy())
    other = go_gene_features(annotations, genes=["MAP2K1"], n_components=8, seed=1)
    assert other.shape == (1, 8)


def test_features_validate_inputs(annotations: pd.DataFrame) -> None:
    with pytest.raises(DataValidationError, match="go_id"):
        go_gene_features(annotations.rename(columns={"go_id": "term"}))
    small = annotations[annotations["gene"].isin(["MAP2K1", "MAP2K2", "MAPK1", "MAPK3"])]
    with pytest.raises(DataValidationError, match="n_components"):
        go_gene_features(small, n_components=64, min_term_size=1)
    with pytest.raises(DataValidationError, match="min_term_size"):
        go_gene_features(annotations, min_term_size=0)


def test_perturbation_targets_are_covered(shared_data: Path, features: pd.DataFrame) -> None:
    obs = ad.read_h5ad(shared_data / DEVEL).obs
    targets = {g for c in obs["condition"].astype(str).unique() if c != "control"
               for g in c.split("+")}
    covered = targets & set(features.index)
    assert len(covered) >= 0.9 * len(targets)


def test_fetch_go_annotations_file_url(
    shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = shared_data / GAF
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    url = source.as_uri()
    with caplog.at_level(logging.INFO, logger="citevae.data.gene_knowledge"):
        path = fetch_go_annotations(cache_dir=tmp_path / "cache", url=url)
    assert digest in caplog.text  # no pinned hash: the SHA256 of what was fetched is logged
    path = fetch_go_annotations(cache_dir=tmp_path / "cache", url=url,
                                known_hash=f"sha256:{digest}")
    assert path.parent == tmp_path / "cache" and path.name == GAF
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    with pytest.raises(DataValidationError, match="checksum"):
        fetch_go_annotations(cache_dir=tmp_path / "other", url=url, known_hash="sha256:" + "0" * 64)


def test_load_go_features_local_path(shared_data: Path) -> None:
    f = load_go_features(shared_data / GAF, genes=["KLF1", "GATA1"], n_components=16,
                         aspects=("P",))
    assert f.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(f.to_numpy(), axis=1), 1.0)


def test_load_go_features_without_path_fetches(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from citevae.data import gene_knowledge

    calls: list[Path | None] = []

    def fake_fetch(cache_dir: Path | None = None) -> Path:
        calls.append(cache_dir)
        return shared_data / GAF

    monkeypatch.setattr(gene_knowledge, "fetch_go_annotations", fake_fetch)
    f = load_go_features(genes=["MAPK1"], cache_dir=tmp_path, n_components=8, aspects=("F",))
    assert calls == [tmp_path] and f.shape == (1, 8)
