"""Fixtures of the data-layer tests: the real datasets (read once, set up on copies), small synthetic
AnnData factories, an independent leakage checker and ``assert_unchanged`` for bad-input tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse

from citevae.data import setup_anndata

PERTURBENCH = "norman2019_mcfaline2023_perturbench_devel.h5ad"
JURKAT = "datlinger2021_jurkat.h5ad"
HSMM = "trapnell2014_hsmm_timecourse.h5ad"
SCHIEBINGER = "schiebinger2019_days10-11.h5ad"


# ---------------------------------------------------------------- synthetic data


def synthetic_adata(
    conditions: dict[str, int],
    contexts: Sequence[str] = ("c1",),
    n_genes: int = 12,
    scale: str = "log1p",
    times: dict[str, Sequence] | None = None,
    matrix: str = "dense",
    seed: int = 0,
) -> ad.AnnData:
    """Cells of every condition label in every context (``conditions``: label -> cells per context).

    ``times`` (label -> time values cycled over that label's cells) adds ``obs["time"]``.
    ``scale`` "counts" gives Poisson counts (every cell non-empty), "log1p" their log1p.
    ``matrix`` "dense", "csr" or "csc".
    """
    rng = np.random.default_rng(seed)
    rows = []
    for context in contexts:
        for label, n in conditions.items():
            values = list((times or {}).get(label, [0]))
            for k in range(n):
                rows.append({"perturbation": label, "context": context, "time": values[k % len(values)]})
    obs = pd.DataFrame(rows)
    obs.index = [f"cell{i}" for i in range(len(obs))]
    counts = rng.poisson(3.0, size=(len(obs), n_genes)).astype(np.float32)
    counts[:, 0] += 1  # no all-zero cell
    X = counts if scale == "counts" else np.log1p(counts)
    if matrix == "csr":
        X = sparse.csr_matrix(X)
    elif matrix == "csc":
        X = sparse.csc_matrix(X)
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))
    if times is None:
        del adata.obs["time"]
    if len(contexts) == 1:
        del adata.obs["context"]
    return adata


SMALL_CONDITIONS = {"control": 10, "A": 6, "B": 5, "C": 4, "D": 4, "A+B": 5, "C+D": 3, "B+C": 4}


@pytest.fixture(scope="session")
def make_adata() -> Callable[..., ad.AnnData]:
    """Factory of small synthetic AnnData (see ``synthetic_adata``)."""
    return synthetic_adata


@pytest.fixture
def small_adata() -> ad.AnnData:
    """Two contexts, four single targets and three combinations, log1p values (dense)."""
    return synthetic_adata(SMALL_CONDITIONS, contexts=("c1", "c2"))


@pytest.fixture
def small_registered(small_adata):
    """``small_adata`` set up with covariate "context"; returns (adata, registry)."""
    registry = setup_anndata(small_adata, "perturbation", "control", covariate_keys=["context"])
    return small_adata, registry


# ---------------------------------------------------------------- AnnData not modified


def snapshot(adata: ad.AnnData) -> dict:
    """Deep copy of everything a citevae function could modify in ``adata``."""
    X = adata.X
    return {
        "obs": adata.obs.copy(deep=True),
        "var": adata.var.copy(deep=True),
        "X": X.copy() if X is not None else None,
        "uns": sorted(adata.uns.keys()),
        "layers": sorted(adata.layers.keys()),
        "obsm": sorted(adata.obsm.keys()),
        "shape": adata.shape,
    }


def assert_unchanged(adata: ad.AnnData, before: dict) -> None:
    """Assert ``adata`` equals its ``snapshot`` (obs, var, X values and type, uns/layers/obsm keys)."""
    assert adata.shape == before["shape"]
    pd.testing.assert_frame_equal(adata.obs, before["obs"])
    pd.testing.assert_frame_equal(adata.var, before["var"])
    assert sorted(adata.uns.keys()) == before["uns"]
    assert sorted(adata.layers.keys()) == before["layers"]
    assert sorted(adata.obsm.keys()) == before["obsm"]
    old, new = before["X"], adata.X
    assert type(new) is type(old)
    if old is None:
        return
    old = old.toarray() if sparse.issparse(old) else np.asarray(old)
    new = new.toarray() if sparse.issparse(new) else np.asarray(new)
    assert old.dtype == new.dtype
    np.testing.assert_array_equal(new, old)


@pytest.fixture
def refuses():
    """``refuses(adata, error, match, func, *args, **kw)``: ``func`` raises ``error`` whose message
    matches ``match`` (a regex) and ``adata`` is unchanged afterwards; returns the exception."""

    def check(adata, error, match, func, *args, **kwargs):
        before = snapshot(adata)
        with pytest.raises(error, match=match) as info:
            func(*args, **kwargs)
        assert_unchanged(adata, before)
        return info.value

    return check


# ---------------------------------------------------------------- independent leakage check


def unit_table(adata: ad.AnnData, perturbation_key: str, control: str, covariate_keys=(),
               time_key: str | None = None, separator: str = "+") -> pd.DataFrame:
    """Per cell, computed from obs alone: canonical condition, context, unit key, control flag, targets."""
    labels = adata.obs[perturbation_key].astype(str)
    targets = [frozenset() if s.strip() == control else frozenset(p.strip() for p in s.split(separator))
               for s in labels]
    condition = [separator.join(sorted(t)) if t else control for t in targets]
    if covariate_keys:
        context = adata.obs[list(covariate_keys)].astype(str).agg("|".join, axis=1).to_numpy()
    else:
        context = np.full(adata.n_obs, "all", dtype=object)
    key = [f"{c}@{x}" for c, x in zip(condition, context, strict=True)]
    if time_key is not None:
        key = [f"{k}@{t}" for k, t in zip(key, adata.obs[time_key].astype(str), strict=True)]
    return pd.DataFrame({"condition": condition, "context": context, "key": key,
                         "control": [not t for t in targets], "targets": targets},
                        index=adata.obs_names)


def assert_no_leakage(adata: ad.AnnData, split, units: pd.DataFrame) -> None:
    """Check ``split`` against ``units`` (from ``unit_table``) without using ``Split.check_leakage``."""
    assignment = split.assignment
    assert assignment.index.equals(adata.obs_names), "assignment must cover exactly the data's cells"
    assert set(assignment.unique()) <= {"train", "val", "test"}
    sets = assignment.to_numpy()
    test, train, val = sets == "test", sets == "train", sets == "val"
    control = units["control"].to_numpy()
    held = set(units["key"][test & ~control])
    seen = set(units["key"][(train | val) & ~control])
    assert not held & seen, f"held-out conditions with train/val cells: {sorted(held & seen)[:5]}"
    trained_targets = set().union(*units["targets"][train | val])
    assert not set(split.unseen_targets) & trained_targets
    for context in set(units["context"][test]):
        here = (units["context"] == context).to_numpy()
        assert (here & control & train).any(), f"no train controls in test context {context}"
        assert (here & control & test).any(), f"no test controls in test context {context}"
    # validation holds seen perturbations only
    val_keys = set(units["key"][val & ~control])
    train_keys = set(units["key"][train & ~control])
    assert val_keys <= train_keys, f"val conditions unseen in train: {sorted(val_keys - train_keys)[:5]}"


@pytest.fixture(scope="session")
def units_of() -> Callable[..., pd.DataFrame]:
    """``unit_table`` as a fixture."""
    return unit_table


@pytest.fixture(scope="session")
def no_leakage() -> Callable[..., None]:
    """``assert_no_leakage`` as a fixture."""
    return assert_no_leakage


# ---------------------------------------------------------------- real data


def _read(shared_data, name: str) -> ad.AnnData:
    return ad.read_h5ad(shared_data / name)


@pytest.fixture(scope="session")
def perturbench(shared_data):
    """PerturBench devel set up with covariate cell_type; (adata, registry). Do not modify."""
    adata = _read(shared_data, PERTURBENCH)
    registry = setup_anndata(adata, "condition", "control", covariate_keys=["cell_type"])
    return adata, registry


@pytest.fixture(scope="session")
def jurkat(shared_data):
    """Datlinger Jurkat set up with covariate stimulation; (adata, registry). Do not modify."""
    adata = _read(shared_data, JURKAT)
    registry = setup_anndata(adata, "perturbation", "control", covariate_keys=["stimulation"])
    return adata, registry


@pytest.fixture(scope="session")
def hsmm_log1p(shared_data):
    """HSMM time course, FPKM log1p-transformed with scanpy (on a copy); not set up. Do not modify."""
    adata = _read(shared_data, HSMM)
    return sc.pp.log1p(adata, copy=True)


@pytest.fixture(scope="session")
def hsmm(hsmm_log1p):
    """HSMM (log1p) set up with perturbation Media (control GM) and time Hours; (adata, registry)."""
    adata = hsmm_log1p.copy()
    registry = setup_anndata(adata, "Media", "GM", time_key="Hours")
    return adata, registry


@pytest.fixture(scope="session")
def schiebinger_raw(shared_data):
    """Schiebinger days 10-11 as stored. Do not modify."""
    return _read(shared_data, SCHIEBINGER)
