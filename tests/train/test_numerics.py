"""Numerical health: training on extreme but valid counts stays finite (the loss, the weights and
the predictions). A loss that does become non-finite is covered in ``test_resume.py``."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from citevae.model import CiteVAE
from citevae.sim import simulate_counts


def _extreme(kind: str):
    adata = simulate_counts(n_genes=20, n_targets=3, n_pairs=1, n_cells_per_condition=20, n_steps=2,
                            n_programs=2, seed=4)
    rng = np.random.default_rng(0)
    x = adata.X.toarray() * (rng.random(adata.shape) < 0.03)  # ~97% of the entries zero
    x[:, 0] += 1  # no empty cell
    if kind == "gene_in_the_millions":
        x[:, 1] = rng.integers(1_000_000, 5_000_000, size=adata.n_obs)
    adata.X = sparse.csr_matrix(x)
    return adata


@pytest.mark.parametrize("kind", ["very_sparse", "gene_in_the_millions"])
def test_training_on_extreme_counts_stays_finite(kind):
    adata = _extreme(kind)
    CiteVAE.setup_anndata(adata, "perturbation", "control")
    model = CiteVAE(adata, n_hidden=16, n_programs=2, n_steps=2)
    result = model.train(max_epochs=4, progress_bar=False, cells_per_group=16, kl_warmup_epochs=1,
                         match_start_epoch=1)
    assert result.diverged is None and len(result.history) == 4
    assert all(np.isfinite(v) for row in result.history for v in row.values())
    assert all(np.isfinite(p.detach().numpy()).all() for p in model.module.parameters())
    controls = adata[(adata.obs["perturbation"] == "control").to_numpy()].copy()
    prediction = model.predict(controls, [str(adata.uns["sim"]["targets"][0])])
    assert np.isfinite(prediction.X).all() and np.isfinite(prediction.layers["log1p"]).all()
    library = np.asarray(controls.X.sum(axis=1)).ravel()  # predictions keep each cell's depth
    np.testing.assert_allclose(np.log10(prediction.X.sum(axis=1)), np.log10(library), atol=1.0)
