"""Loaders for public single-cell datasets: local file, or download (pooch, checksum, cache).

Each dataset has a :class:`DatasetSpec` in :data:`DATASETS` that records where the file lives,
its checksum where one is published, and the obs keys to pass to setup. Loaders return the data
as published, apart from the light standardisation documented on each named loader.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import shutil
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pooch
import scipy.sparse as sp

from citevae.errors import DataValidationError

logger = logging.getLogger(__name__)

MaybePath = str | Path | None
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class DatasetSpec:
    """Where a public dataset lives and how to set it up.

    ``known_hash`` is "md5:..."/"sha256:..." or None when no checksum is published (the loader then
    logs the SHA256 of what it downloaded). ``filename`` is the name of the readable file in the
    cache; ``file_format`` is "h5ad", "h5ad.gz" (gzip-compressed download) or "fpkm_tsv" (GEO
    genes x cells text matrix). ``scale`` states what X holds: "counts", "log1p", "fpkm" or
    "normalised". Keys are None where the dataset has no such axis.
    """

    name: str
    url: str
    known_hash: str | None
    filename: str
    description: str
    perturbation_key: str | None = None
    control: str | None = None
    time_key: str | None = None
    covariate_keys: tuple[str, ...] = ()
    scale: str = "counts"
    file_format: str = "h5ad"


_ZENODO_SCPERTURB = "https://zenodo.org/records/{record}/files/{name}?download=1"

DATASETS: dict[str, DatasetSpec] = {
    # scPerturb v1.4 (Zenodo 13350497). md5 as quoted, with the file size 698,680,199 B, by several
    # independent public projects that downloaded it from scPerturb records 10044268 / 13350497.
    "norman2019": DatasetSpec(
        name="norman2019",
        url=_ZENODO_SCPERTURB.format(record=13350497, name="NormanWeissman2019_filtered.h5ad"),
        known_hash="md5:c870e6967d91c017d9da827bab183cd6",
        filename="NormanWeissman2019_filtered.h5ad",
        description="Norman et al. 2019 K562 CRISPRa singles + pairs (scPerturb, raw counts).",
        perturbation_key="perturbation", control="control",
        scale="counts",
    ),
    # PerturBench's development subset, committed to its GitHub repository. No checksum is
    # published for it: known_hash=None and the downloaded file's SHA256 is logged.
    "perturbench_devel": DatasetSpec(
        name="perturbench_devel",
        url="https://raw.githubusercontent.com/altoslabs/perturbench/"
        "4dd6a03c54ef348f6be6e46e21ea7f80eb2daaa2/src/perturbench/data/resources/devel.h5ad",
        known_hash=None,
        filename="norman2019_mcfaline2023_perturbench_devel.h5ad",
        description="PerturBench devel subset: Norman 2019 K562 CRISPRa + McFaline-Figueroa 2023 "
        "glioblastoma CRISPRi (A172, T98G, U87MG); 5961 cells x 500 HVGs, log1p.",
        perturbation_key="condition", control="control",
        covariate_keys=("cell_type",),
        scale="log1p",
    ),
    # PerturBench's curated copy on Hugging Face (no checksum on its dataset card). sha256 as
    # pinned by an independent public project that verified its download of this file.
    "mcfaline2023": DatasetSpec(
        name="mcfaline2023",
        url="https://huggingface.co/datasets/altoslabs/perturbench/resolve/main/"
        "mcfaline23_gxe_processed.h5ad.gz",
        known_hash="sha256:34db710ad850b5b5fd478d123f1c10ae3d5aaa013fce6061be8216ea27aed215",
        filename="mcfaline23_gxe_processed.h5ad",
        description="McFaline-Figueroa et al. 2023 glioblastoma CRISPRi x drug (PerturBench).",
        perturbation_key="condition", control="control",
        covariate_keys=("cell_type", "treatment"),
        scale="log1p",
        file_format="h5ad.gz",
    ),
    # scPerturb (Zenodo 10044268); md5 as quoted by independent public projects for this file.
    "datlinger2021": DatasetSpec(
        name="datlinger2021",
        url=_ZENODO_SCPERTURB.format(record=10044268, name="DatlingerBock2021.h5ad"),
        known_hash="md5:5cfbcb4770e9c859a07b2cc44fd12066",
        filename="DatlingerBock2021.h5ad",
        description="Datlinger et al. 2021 Jurkat CRISPR knockouts x TCR stimulation "
        "(scifi-RNA-seq, scPerturb, ~39k cells x 25.9k genes, raw counts).",
        perturbation_key="perturbation", control="control",
        covariate_keys=("stimulation",),
        scale="counts",
    ),
    # GEO supplementary file; GEO publishes no checksum: known_hash=None, SHA256 logged.
    "trapnell2014_hsmm": DatasetSpec(
        name="trapnell2014_hsmm",
        url="https://ftp.ncbi.nlm.nih.gov/geo/series/GSE52nnn/GSE52529/suppl/"
        "GSE52529_fpkm_matrix.txt.gz",
        known_hash=None,
        filename="GSE52529_fpkm_matrix.txt.gz",
        description="Trapnell et al. 2014 human skeletal myoblasts, growth -> differentiation "
        "medium, 0/24/48/72 h (GEO GSE52529, FPKM, not counts; Ensembl gene ids).",
        perturbation_key="Media", control="GM", time_key="Hours",
        scale="fpkm",
        file_format="fpkm_tsv",
    ),
    # CellRank's copy (figshare); figshare shows no checksum we could find: known_hash=None.
    "schiebinger2019": DatasetSpec(
        name="schiebinger2019",
        url="https://figshare.com/ndownloader/files/28618734",
        known_hash=None,
        filename="reprogramming_schiebinger.h5ad",
        description="Schiebinger et al. 2019 MEF -> iPSC reprogramming time course, days 0-18 "
        "(CellRank copy, 236,285 cells x 19,089 genes, normalised + log, 1.4 GiB).",
        time_key="day", scale="log1p",
    ),
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_downloader(url: str, output_file, pooch_obj=None, check_only: bool = False):
    """pooch downloader for file:// URLs (local mirrors, shared file systems)."""
    source = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    if check_only or not source.is_file():
        if check_only:
            return source.is_file()
        raise DataValidationError(f"{url} points to no file ({source} does not exist).")
    with open(source, "rb") as src, open(output_file, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return None


def _retrieve(
    url: str, known_hash: str | None, fname: str, cache_dir: MaybePath = None,
    processor: Callable | None = None,
) -> Path:
    """pooch.retrieve ``url`` as ``fname`` into ``cache_dir`` (default pooch.os_cache("citevae")).

    Logs the SHA256 of a freshly downloaded file (the record to keep where no ``known_hash`` pins
    it; a cached file is reused without re-download). Returns the local path
    (the processor's output, e.g. the decompressed file, if a processor is given).
    """
    cache = Path(cache_dir) if cache_dir is not None else Path(pooch.os_cache("citevae"))
    downloader = _file_downloader if url.startswith("file://") else None
    target = cache / fname
    stamp_before = target.stat().st_mtime_ns if target.is_file() else None
    try:
        out = pooch.retrieve(url=url, known_hash=known_hash, fname=fname, path=cache,
                             processor=processor, downloader=downloader, progressbar=False)
    except ValueError as exc:
        if isinstance(exc, DataValidationError) or "does not match" not in str(exc):
            raise
        raise DataValidationError(
            f"The file downloaded from {url} does not match its checksum {known_hash} ({exc}). "
            "The remote file may have changed: check it, then pass a DatasetSpec with "
            "known_hash=None (dataclasses.replace) or the new hash."
        ) from exc
    if stamp_before == target.stat().st_mtime_ns:
        logger.info("Using cached %s (from %s).", target, url)
    else:
        logger.info("Downloaded %s -> %s (sha256:%s)", url, target, _sha256(target))
    return Path(out)


def fetch_dataset(dataset: str | DatasetSpec, cache_dir: MaybePath = None) -> Path:
    """Download ``dataset`` (name in DATASETS, or a spec) into the cache; return its local path.

    A cached file that matches the spec's checksum is reused. gzip downloads ("h5ad.gz") are
    decompressed next to the download. Raises DataValidationError on a checksum mismatch.
    """
    spec = get_spec(dataset)
    if spec.file_format == "h5ad.gz":
        return _retrieve(spec.url, spec.known_hash, spec.filename + ".gz", cache_dir,
                         processor=pooch.Decompress(method="gzip", name=spec.filename))
    return _retrieve(spec.url, spec.known_hash, spec.filename, cache_dir)


def get_spec(dataset: str | DatasetSpec) -> DatasetSpec:
    """The DatasetSpec of a name in DATASETS (a spec is returned as is)."""
    if isinstance(dataset, DatasetSpec):
        return dataset
    if dataset not in DATASETS:
        raise DataValidationError(
            f"Unknown dataset {dataset!r}; known datasets: {', '.join(sorted(DATASETS))}."
        )
    return DATASETS[dataset]


def _read_h5ad(path: Path) -> ad.AnnData:
    """Read an h5ad (or gzip-compressed h5ad) file; DataValidationError naming ``path`` if not."""
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic[:2] == _GZIP_MAGIC:
        with tempfile.TemporaryDirectory() as tmp:
            plain = Path(tmp) / "data.h5ad"
            try:
                with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                return ad.read_h5ad(plain)
            except Exception as exc:  # gzip, h5py and anndata raise many types
                raise DataValidationError(
                    f"{path} is not a readable gzip-compressed h5ad file: {exc}"
                ) from exc
    if magic != _HDF5_MAGIC:
        raise DataValidationError(f"{path} is not an h5ad file (no HDF5 signature).")
    try:
        return ad.read_h5ad(path)
    except Exception as exc:  # h5py/anndata raise many types for damaged files
        raise DataValidationError(f"{path} could not be read as h5ad: {exc}") from exc


def read_fpkm_matrix(path: str | Path) -> ad.AnnData:
    """Read a GEO genes x cells FPKM text matrix (tab-separated, plain or gzip) as cells x genes.

    Cell names like "T24_CT_A01" give obs["Hours"] (24; NaN if absent) and obs["Media"]
    ("GM" growth medium at 0 h, "DM" differentiation medium after). X: float32 CSR, FPKM.
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, sep="\t", compression="infer", low_memory=False)
    except (OSError, EOFError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
        raise DataValidationError(f"{path} could not be read as an FPKM matrix: {exc}") from exc
    if table.shape[1] > 0 and not pd.api.types.is_numeric_dtype(table.iloc[:, 0]):
        table = table.set_index(table.columns[0])
    if table.empty or not all(pd.api.types.is_numeric_dtype(t) for t in table.dtypes):
        raise DataValidationError(
            f"{path} is not a genes x cells FPKM matrix (expected a gene-id column, then one "
            "numeric column per cell)."
        )
    X = sp.csr_matrix(table.to_numpy(dtype=np.float32).T)
    cells = pd.Index(table.columns.astype(str))
    hours = pd.Series(cells.str.extract(r"^T(\d+)_", expand=False), index=cells).astype(float)
    media = np.where(hours.isna(), None, np.where(hours == 0, "GM", "DM"))
    obs = pd.DataFrame({"Hours": hours, "Media": pd.Categorical(media)}, index=cells)
    var = pd.DataFrame(index=pd.Index(table.index.astype(str), name="gene_id"))
    return ad.AnnData(X=X, obs=obs, var=var)


def _standardise_norman(adata: ad.AnnData) -> None:
    """scPerturb joins two-gene perturbations with '_'; use the package's 'A+B' form."""
    labels = adata.obs["perturbation"].astype(str)
    if not labels.str.contains("+", regex=False).any():
        adata.obs["perturbation_scperturb"] = adata.obs["perturbation"]
        adata.obs["perturbation"] = pd.Categorical(labels.str.replace("_", "+", regex=False))


def _standardise_datlinger(adata: ad.AnnData) -> None:
    """scPerturb stores the guide (ZAP70_1) as perturbation and TCR status as perturbation_2."""
    obs = adata.obs
    if "guide" not in obs and "perturbation" in obs:
        obs["guide"] = obs["perturbation"]
        target = obs["guide"].astype(str).str.replace(r"_\d+$", "", regex=True)
        obs["perturbation"] = pd.Categorical(target)
    if "stimulation" not in obs and "perturbation_2" in obs:
        obs["stimulation"] = obs["perturbation_2"]


def _standardise_schiebinger(adata: ad.AnnData) -> None:
    """Make obs['day'] numeric (float days) when it is stored as numeric strings."""
    if "day" in adata.obs and not pd.api.types.is_numeric_dtype(adata.obs["day"]):
        day = pd.to_numeric(adata.obs["day"].astype(str), errors="coerce")
        if not day.isna().any():
            adata.obs["day"] = day.astype(float)


_STANDARDISE: dict[str, Callable[[ad.AnnData], None]] = {
    "norman2019": _standardise_norman,
    "datlinger2021": _standardise_datlinger,
    "schiebinger2019": _standardise_schiebinger,
}


def load_dataset(
    name: str | DatasetSpec, path: MaybePath = None, cache_dir: MaybePath = None
) -> ad.AnnData:
    """Load a dataset from a local ``path`` or, if None, by download into ``cache_dir``.

    ``name`` is a key of DATASETS (or a DatasetSpec, e.g. with a mirror URL). Returns the AnnData
    after the dataset's documented light standardisation (none for most; see the named loaders);
    X's scale is ``spec.scale``. Raises DataValidationError for an unknown name or an unreadable,
    missing or non-h5ad file (naming the path). Warns if the spec's obs keys are absent.
    """
    spec = get_spec(name)
    if path is None:
        path = fetch_dataset(spec, cache_dir=cache_dir)
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"Dataset file {path} does not exist (or is not a file).")
    with open(path, "rb") as fh:
        is_hdf5 = fh.read(8) == _HDF5_MAGIC
    reader = read_fpkm_matrix if spec.file_format == "fpkm_tsv" and not is_hdf5 else _read_h5ad
    adata = reader(path)
    if spec.name in _STANDARDISE:
        _STANDARDISE[spec.name](adata)
    keys = [spec.perturbation_key, spec.time_key, *spec.covariate_keys]
    absent = [k for k in keys if k is not None and k not in adata.obs]
    if absent:
        logger.warning("%s: obs lacks %s expected by the %r spec.", path, absent, spec.name)
    return adata


def load_norman2019(path: MaybePath = None, cache_dir: MaybePath = None) -> ad.AnnData:
    """Norman et al. 2019 K562 CRISPRa (scPerturb): raw counts, obs['perturbation'] 'control',
    'A', 'A+B' (scPerturb's 'A_B' rewritten; original in obs['perturbation_scperturb'])."""
    return load_dataset("norman2019", path, cache_dir)


def load_perturbench_devel(path: MaybePath = None, cache_dir: MaybePath = None) -> ad.AnnData:
    """PerturBench devel subset (Norman 2019 + McFaline 2023): log1p, unchanged.
    Keys: obs['condition'] ('control', 'A', 'A+B'), obs['cell_type']."""
    return load_dataset("perturbench_devel", path, cache_dir)


def load_mcfaline2023(path: MaybePath = None, cache_dir: MaybePath = None) -> ad.AnnData:
    """McFaline-Figueroa et al. 2023 (PerturBench curation): log1p, unchanged.
    Keys: obs['condition'], obs['cell_type'], obs['treatment']."""
    return load_dataset("mcfaline2023", path, cache_dir)


def load_datlinger2021(path: MaybePath = None, cache_dir: MaybePath = None) -> ad.AnnData:
    """Datlinger et al. 2021 Jurkat KO x TCR stimulation: raw counts. For the scPerturb file the
    guide (obs['perturbation'], 'ZAP70_1') moves to obs['guide'], obs['perturbation'] becomes the
    target ('ZAP70'), and obs['perturbation_2'] is copied to obs['stimulation']."""
    return load_dataset("datlinger2021", path, cache_dir)


def load_trapnell2014_hsmm(path: MaybePath = None, cache_dir: MaybePath = None) -> ad.AnnData:
    """Trapnell et al. 2014 HSMM time course. X is FPKM (not counts), returned as is: apply
    log1p yourself if a model needs it. Keys: obs['Hours'] (time), obs['Media'] GM / DM."""
    return load_dataset("trapnell2014_hsmm", path, cache_dir)


def load_schiebinger2019(path: MaybePath = None, cache_dir: MaybePath = None) -> ad.AnnData:
    """Schiebinger et al. 2019 reprogramming time course: normalised, log; obs['day'] as float."""
    return load_dataset("schiebinger2019", path, cache_dir)

