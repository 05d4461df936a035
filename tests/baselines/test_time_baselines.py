"""Time-course baselines on a hand-computed toy (2 genes, times 0..3, one context).

Control (t=0) mean [1.25, 1.25]; A at t=1 mean [2.25, 1.25] (delta [1, 0]); A at t=3 mean
[4.25, 0.25] (delta [3, -1]). Predictions start from the test control [0.5, 2.0] at times 2, 0, 4.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from citevae.baselines import LinearInterpolation, NearestTime
from citevae.data import setup_anndata
from citevae.errors import CiteVAEError, DataValidationError

X = [[1.0, 1.0], [1.5, 1.5], [0.5, 2.0], [2.0, 1.0], [2.5, 1.5], [4.25, 0.25], [9.5, 9.5]]
LABELS = ["control", "control", "control", "A", "A", "A", "A"]
TIMES = [0, 0, 0, 1, 1, 3, 2]
TRAIN = np.array([True, True, False, True, True, True, False])


def course() -> ad.AnnData:
    obs = pd.DataFrame({"perturbation": LABELS, "hours": TIMES}, index=[f"c{i}" for i in range(7)])
    adata = ad.AnnData(np.array(X, dtype=np.float32), obs=obs, var=pd.DataFrame(index=["g1", "g2"]))
    setup_anndata(adata, "perturbation", "control", time_key="hours")
    return adata


@pytest.mark.parametrize(("baseline", "expected"), [
    (NearestTime, [[1.5, 2.0], [1.5, 2.0], [3.5, 1.0]]),  # t=2 ties -> earlier step 1
    (LinearInterpolation, [[2.5, 1.5], [0.5, 2.5], [4.5, 0.5]]),  # interpolated / extrapolated
])
def test_time_deltas(baseline, expected):
    adata = course()
    out = baseline().fit(adata, TRAIN).predict(adata[[2]], ["A"], times=[2, 0, 4])
    np.testing.assert_allclose(out.X, expected, atol=1e-6)
    assert list(out.obs["step"]) == [2, 0, 4]
    assert list(out.obs["time"]) == [2, 0, 4]
    assert out.uns["citevae"]["scale"] == "log1p"


def test_time_baselines_ignore_test_cells_and_name_unknown_perturbations():
    adata = course()
    changed = adata.copy()
    changed.X[~TRAIN] = 5.0
    for baseline in (NearestTime, LinearInterpolation):
        a = baseline().fit(adata, TRAIN).predict(adata[[2]], ["A"], times=[2]).X
        b = baseline().fit(changed, TRAIN).predict(adata[[2]], ["A"], times=[2]).X
        np.testing.assert_array_equal(a, b)
        with pytest.raises(CiteVAEError, match="'B'"):
            baseline().fit(adata, TRAIN).predict(adata[[2]], ["B"], times=[2])


def test_time_baselines_need_a_time_key():
    adata = course()
    setup_anndata(adata, "perturbation", "control")
    with pytest.raises(DataValidationError, match="time_key"):
        NearestTime().fit(adata, TRAIN)
