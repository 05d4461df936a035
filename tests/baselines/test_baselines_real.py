"""Smoke test on the PerturBench devel data: every applicable baseline predicts held-out conditions."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from citevae.baselines import BASELINES, get_baseline
from citevae.data import setup_anndata, split_combinations, split_context
from citevae.errors import DataValidationError

PERTURBENCH = "norman2019_mcfaline2023_perturbench_devel.h5ad"


@pytest.fixture(scope="module")
def perturbench(shared_data) -> ad.AnnData:
    adata = ad.read_h5ad(shared_data / PERTURBENCH)
    setup_anndata(adata, "condition", "control", covariate_keys=["cell_type"])
    return adata


def _check(out: ad.AnnData, n_controls: int, perturbations: list[str]) -> None:
    assert out.shape == (n_controls * len(perturbations), 500)
    assert not np.isnan(out.X).any() and (out.X >= 0).all()
    assert sorted(set(out.obs["condition"])) == sorted(perturbations)


def test_combination_split(perturbench):
    split = split_combinations(perturbench, seed=0)
    controls = perturbench[split.mask("test") & (perturbench.obs["condition"] == "control").to_numpy()]
    held = sorted({key.split("@")[0] for key in split.test_groups})
    for name in ("control_mean", "training_mean", "additive", "linear"):
        out = get_baseline(name).fit(perturbench, split.mask("train")).predict(controls, held)
        _check(out, controls.n_obs, held)
    for name in ("nearest_time", "linear_interpolation"):
        with pytest.raises(DataValidationError, match="time_key"):
            BASELINES[name]().fit(perturbench, split.mask("train"))


def test_context_split(perturbench):
    split = split_context(perturbench, "A172", seed=0)
    here = (perturbench.obs["cell_type"] == "A172").to_numpy()
    controls = perturbench[split.mask("test") & here & (perturbench.obs["condition"] == "control").to_numpy()]
    held = sorted({key.split("@")[0] for key in split.test_groups})
    out = get_baseline("context_transfer").fit(perturbench, split.mask("train")).predict(controls, held)
    _check(out, controls.n_obs, held)
