"""Gene Ontology annotations -> per-gene feature vectors (descriptors of perturbation targets).

A target gene never perturbed in training still has GO annotations; embedding them gives it a
descriptor ``a_k`` (MODEL.md section 3). Pipeline: GAF file -> gene x GO-term binary matrix ->
TF-IDF -> truncated SVD -> L2-normalised rows.
"""

from __future__ import annotations

import csv
import gzip
import logging
import re
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from citevae.errors import DataValidationError

logger = logging.getLogger(__name__)

GO_HUMAN_GAF_URL = "https://current.geneontology.org/annotations/goa_human.gaf.gz"
"""The Gene Ontology Consortium's current human GAF. It is rebuilt with every GO release, so no
fixed checksum can be pinned for it: pass ``known_hash`` to pin the file you validated."""

GAF_COLUMNS = ("gene", "go_id", "evidence", "aspect")
_GO_ID = re.compile(r"^GO:\d{7}$")
# 0-based GAF 2.x columns: 2 symbol, 3 qualifier, 4 GO id, 6 evidence code, 8 aspect.
_USECOLS = [2, 3, 4, 6, 8]


def _open_text(path: Path):
    """Open a plain or gzip-compressed text file (detected from its magic bytes)."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _count_header_lines(path: Path) -> int:
    """Number of leading '!' comment lines (the GAF header)."""
    n = 0
    with _open_text(path) as fh:
        for line in fh:
            if not line.startswith("!"):
                break
            n += 1
    return n


def _per_category(values: pd.Series, test: Callable[[pd.Series], Any]) -> np.ndarray:
    """Boolean mask from ``test`` evaluated once per category of a categorical Series."""
    categories = values.cat.categories.astype(str)
    per_category = np.asarray(test(pd.Series(categories)), dtype=bool)
    return np.append(per_category, False)[values.cat.codes.to_numpy()]


def read_gaf(
    path: str | Path,
    aspects: Sequence[str] = ("P", "F", "C"),
    exclude_evidence: Sequence[str] = ("ND",),
) -> pd.DataFrame:
    """Read a GAF 2.x file (plain or gzip) into a table of gene-term annotations.

    Rows qualified ``NOT`` are dropped, as are rows whose aspect is not in ``aspects`` or whose
    evidence code is in ``exclude_evidence`` (default: ND, "no biological data available").
    Returns a DataFrame with string columns gene (symbol), go_id, evidence, aspect; exact
    duplicate rows are removed. Raises DataValidationError naming ``path`` if the file is
    missing, unreadable, not GAF, or has no usable annotation.
    """
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"GAF file {path} does not exist (or is not a file).")
    try:
        n_header = _count_header_lines(path)
        with _open_text(path) as fh:
            raw = pd.read_csv(
                fh,
                sep="\t",
                header=None,
                skiprows=n_header,
                usecols=_USECOLS,
                dtype="category",
                quoting=csv.QUOTE_NONE,
                keep_default_na=False,
                engine="c",
            )
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise DataValidationError(f"GAF file {path} could not be read: {exc}") from exc
    except pd.errors.EmptyDataError as exc:
        raise DataValidationError(f"GAF file {path} has no annotation rows.") from exc
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataValidationError(
            f"{path} is not a GAF file (expected >= 9 tab-separated columns: symbol in 3, GO id "
            f"in 5, evidence in 7, aspect in 9): {exc}"
        ) from exc

    raw.columns = ["gene", "qualifier", "go_id", "evidence", "aspect"]
    raw = raw[~_per_category(raw["gene"], lambda c: c.str.startswith("!") | (c == ""))]
    if raw.empty:
        raise DataValidationError(f"GAF file {path} has no annotation rows.")
    go_ok = _per_category(raw["go_id"], lambda c: c.str.match(_GO_ID.pattern))
    valid = go_ok & raw["aspect"].isin(["P", "F", "C"]).to_numpy()
    if valid.mean() < 0.5:
        bad = raw.loc[~valid].iloc[0]
        raise DataValidationError(
            f"{path} is not a GAF file: column 5 should hold GO ids (GO:0000000) and column 9 "
            f"an aspect P/F/C, found {bad['go_id']!r} and {bad['aspect']!r}."
        )
    negated = _per_category(raw["qualifier"], lambda c: c.str.split("|").map(lambda q: "NOT" in q))
    keep = valid & ~negated & raw["aspect"].isin(list(aspects)).to_numpy()
    keep &= ~raw["evidence"].isin(list(exclude_evidence)).to_numpy()
    out = raw.loc[keep, list(GAF_COLUMNS)].astype(str).drop_duplicates().reset_index(drop=True)
    if out.empty:
        raise DataValidationError(
            f"GAF file {path} has no annotation left after filtering (aspects={tuple(aspects)}, "
            f"excluded evidence={tuple(exclude_evidence)}, NOT rows dropped)."
        )
    return out


def go_gene_features(
    annotations: pd.DataFrame,
    genes: Sequence[str] | None = None,
    n_components: int = 64,
    min_term_size: int = 3,
    seed: int = 0,
) -> pd.DataFrame:
    """Embed genes by their GO annotations: binary gene x term -> TF-IDF -> SVD -> L2 rows.

    ``annotations`` needs columns gene and go_id (e.g. from :func:`read_gaf`). Terms annotated to
    fewer than ``min_term_size`` genes are dropped. The embedding is always fitted on every
    annotated gene, so a gene's vector does not depend on ``genes``; ``genes`` only selects and
    orders the returned rows. Returns a DataFrame (n_genes x n_components, float64, unit L2 norm
    per row) indexed by gene symbol. Genes without any (kept) annotation are omitted: compare the
    index with ``genes``, or read ``result.attrs["missing_genes"]`` (list, in input order).
    Deterministic for a given ``seed``.
    """
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfTransformer
    from threadpoolctl import threadpool_limits

    missing_cols = {"gene", "go_id"} - set(annotations.columns)
    if missing_cols:
        raise DataValidationError(
            f"annotations lack column(s) {sorted(missing_cols)}; expected the output of read_gaf "
            "(columns gene, go_id, evidence, aspect)."
        )
    if min_term_size < 1:
        raise DataValidationError(f"min_term_size must be >= 1, got {min_term_size}.")
    pairs = annotations[["gene", "go_id"]].dropna().astype(str).drop_duplicates()
    term_size = pairs.groupby("go_id")["gene"].transform("size")
    pairs = pairs[term_size >= min_term_size]
    gene_codes, gene_index = pd.factorize(pairs["gene"], sort=True)
    term_codes, term_index = pd.factorize(pairs["go_id"], sort=True)
    n_genes, n_terms = len(gene_index), len(term_index)
    if not 1 <= n_components < min(n_genes, n_terms):
        raise DataValidationError(
            f"n_components={n_components} must be >= 1 and below min(annotated genes, kept terms) "
            f"= min({n_genes}, {n_terms}); lower n_components or min_term_size={min_term_size}."
        )
    binary = sp.csr_matrix(
        (np.ones(len(pairs), dtype=np.float64), (gene_codes, term_codes)), shape=(n_genes, n_terms)
    )
    tfidf = TfidfTransformer(norm="l2", smooth_idf=True).fit_transform(binary)
    svd = TruncatedSVD(n_components=n_components, algorithm="randomized", n_iter=7,
                       random_state=seed)
    # One BLAS thread: as fast on an idle machine and far faster on a busy one (measured 2 s vs 8 s).
    with threadpool_limits(limits=1, user_api="blas"):
        emb = svd.fit_transform(tfidf)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb / np.maximum(norms, 1e-12)
    columns = [f"go_{i}" for i in range(n_components)]
    features = pd.DataFrame(emb, index=pd.Index(gene_index, name="gene"), columns=columns)

    missing: list[str] = []
    if genes is not None:
        wanted = list(dict.fromkeys(str(g) for g in genes))
        present = set(features.index)
        missing = [g for g in wanted if g not in present]
        features = features.loc[[g for g in wanted if g in present]]
        if missing:
            logger.info(
                "%d of %d requested genes have no GO annotation and were omitted (e.g. %s).",
                len(missing), len(wanted), ", ".join(missing[:5]),
            )
    features.attrs["missing_genes"] = missing
    return features


def fetch_go_annotations(
    cache_dir: str | Path | None = None,
    url: str = GO_HUMAN_GAF_URL,
    known_hash: str | None = None,
) -> Path:
    """Download the human GAF (default: GO Consortium's current goa_human.gaf.gz) into a cache.

    The current GAF changes with every GO release, so no checksum is pinned by default; the
    SHA256 of the downloaded (or cached) file is logged so a run can record exactly which file it
    used, and ``known_hash`` ("sha256:..." / "md5:..." / bare sha256) pins it. A cached file is
    reused as is; delete it to fetch a newer release. Default cache: ``pooch.os_cache("citevae")``.
    Returns the local path. Raises DataValidationError if the file does not match ``known_hash``.
    """
    from citevae.data.datasets import _retrieve, _sha256

    fname = Path(url.split("?")[0]).name or "goa_human.gaf.gz"
    path = _retrieve(url, known_hash=known_hash, fname=fname, cache_dir=cache_dir)
    logger.info("GO annotations at %s, sha256:%s", path, _sha256(path))
    return path


def load_go_features(
    path: str | Path | None = None,
    genes: Sequence[str] | None = None,
    *,
    cache_dir: str | Path | None = None,
    aspects: Sequence[str] = ("P", "F", "C"),
    exclude_evidence: Sequence[str] = ("ND",),
    **kw: Any,
) -> pd.DataFrame:
    """GO features of ``genes`` from a local GAF ``path``, or from the downloaded current GAF.

    ``kw`` goes to :func:`go_gene_features` (n_components, min_term_size, seed). Returns its
    DataFrame (genes x n_components); unannotated genes are omitted (see ``attrs["missing_genes"]``).
    """
    gaf = Path(path) if path is not None else fetch_go_annotations(cache_dir=cache_dir)
    annotations = read_gaf(gaf, aspects=aspects, exclude_evidence=exclude_evidence)
    return go_gene_features(annotations, genes=genes, **kw)
