"""Training and prediction streaming from an h5ad opened backed (``anndata.read_h5ad(backed="r")``).

The expression matrix stays on disk (sparse CSR X as anndata's backed dataset); the data module
reads only the rows of each batch, and batches equal those built from the same data in memory.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

from citevae import setup_anndata
from citevae.data.batching import CiteDataModule
from citevae.data.registry import get_registry
from citevae.model.citevae import CiteVAE
from citevae.sim import simulate_counts

KEYS = {"perturbation_key": "perturbation", "control": "control", "covariate_keys": ["cell_type"]}
BATCH = {"cells_per_group": 16, "groups_per_batch": 2}


def _is_backed_matrix(matrix) -> bool:
    """True for anndata's on-disk sparse dataset (not numpy, not scipy: nothing read whole)."""
    return not isinstance(matrix, np.ndarray) and not sparse.issparse(matrix) \
        and hasattr(matrix, "to_memory")


@pytest.fixture(scope="module")
def h5ad_path(tmp_path_factory):
    adata = simulate_counts(n_programs=3, n_genes=40, n_targets=3, n_pairs=1,
                            n_cells_per_condition=30, n_contexts=2, seed=0)
    assert sparse.isspmatrix_csr(adata.X)
    path = tmp_path_factory.mktemp("streaming") / "sim.h5ad"
    adata.write_h5ad(path)
    return path


def _backed(path) -> ad.AnnData:
    adata = ad.read_h5ad(path, backed="r")
    setup_anndata(adata, **KEYS)  # registry goes to .uns in memory only; the file is not written
    return adata


def test_setup_on_backed_reads_nothing_whole(h5ad_path):
    adata = _backed(h5ad_path)
    assert adata.isbacked
    assert _is_backed_matrix(adata.X), type(adata.X)
    assert get_registry(adata).scale == "counts"
    # the file itself is unchanged (opened read-only): a fresh open has no registry
    with_file = ad.read_h5ad(h5ad_path, backed="r")
    assert "_citevae" not in with_file.uns
    with_file.file.close()


def _first_batch(adata: ad.AnnData) -> dict:
    registry = get_registry(adata)
    train = np.random.default_rng(0).random(adata.n_obs) < 0.9
    module = CiteDataModule(adata, registry, train, ~train, seed=3, **BATCH)
    return module, next(iter(module.train_dataloader()))


def test_backed_batches_equal_in_memory_batches(h5ad_path):
    backed = _backed(h5ad_path)
    memory = ad.read_h5ad(h5ad_path)
    setup_anndata(memory, **KEYS)
    backed_module, from_disk = _first_batch(backed)
    _, from_memory = _first_batch(memory)
    assert _is_backed_matrix(backed_module.dataset.matrix)  # the loader reads from disk
    assert from_disk.keys() == from_memory.keys()
    for key in from_disk:
        assert np.array_equal(from_disk[key].numpy(), from_memory[key].numpy()), key
    assert from_disk["x"].sum() > 0


def test_train_and_predict_from_backed(h5ad_path):
    adata = _backed(h5ad_path)
    model = CiteVAE(adata, n_programs=3, n_hidden=32, seed=0)
    result = model.train(max_epochs=2, progress_bar=False, kl_warmup_epochs=1, **BATCH)
    assert result.epochs_run == 2 and len(result.history) == 2
    assert np.isfinite(result.history[-1]["train_loss"])
    assert _is_backed_matrix(adata.X)  # still on disk after training
    controls = adata[np.flatnonzero(adata.obs["perturbation"].astype(str) == "control")[:8]]
    target = model.registry.vocabulary.targets[0]
    prediction = model.predict(controls, [target])
    assert prediction.n_obs == 8 and prediction.n_vars == adata.n_vars
    assert np.isfinite(np.asarray(prediction.X)).all()
    adata.file.close()


def test_latents_of_a_backed_view(h5ad_path):
    adata = _backed(h5ad_path)
    model = CiteVAE(adata, n_programs=3, n_hidden=32, seed=0)
    model.is_trained = True  # the encoders' output, trained or not, is what is compared
    rows = np.arange(3, adata.n_obs, 7)
    from_view = model.get_latent(adata[rows], inplace=False)
    whole = model.get_latent(adata, inplace=False)
    np.testing.assert_allclose(from_view["z"], whole["z"][rows], rtol=1e-5, atol=1e-6)
    adata.file.close()
