"""A tiny run of the Causal3DIdent-style image benchmark: shapes, finiteness, figures (not who wins)."""

from __future__ import annotations

import numpy as np
import pytest

from citevae.benchmark.causal3dident import (
    METHODS,
    ImageBenchmarkConfig,
    decoder_of,
    run_image_benchmark,
    samples_figure,
    simulate_scenes,
    train_method,
    traversals_figure,
)
from citevae.data.registry import get_registry
from citevae.errors import CiteVAEError
from citevae.sim._render import LATENT_NAMES

TINY = ImageBenchmarkConfig(n_individuals=40, n_test=12, n_steps=1, image_size=16, epochs=1,
                            conv_channels=4, n_hidden=16, n_programs=10, n_invariant=1,
                            n_regression=60, training={"cells_per_group": 16, "groups_per_batch": 4})


@pytest.fixture(scope="module")
def run():
    return run_image_benchmark(TINY)


def test_scores_table(run) -> None:
    scores = run.scores
    expected = ["method", "seed", "MCC", "R2 mean", *(f"R2 {n}" for n in LATENT_NAMES), "class acc"]
    assert list(scores.columns) == expected and list(scores["method"]) == list(METHODS)
    values = scores[expected[2:]].to_numpy(dtype=float)
    assert np.isfinite(values).all()
    assert ((scores["MCC"] >= 0) & (scores["MCC"] <= 1)).all()
    assert ((scores["class acc"] >= 0) & (scores["class acc"] <= 1)).all()
    assert (values[:, 1:-1] <= 1).all()
    r2 = scores[[f"R2 {n}" for n in LATENT_NAMES]].to_numpy()
    assert np.allclose(scores["R2 mean"], r2.mean(1))


def test_representations_and_registration(run) -> None:
    assert run.test.n_obs == 12 * 2 and run.train.n_obs == 40 * 2
    registry = get_registry(run.train)
    assert registry.scale == "continuous" and registry.control == "Teapot"
    assert registry.time_key == "time" and registry.lineage_key == "individual"
    for method, rep in run.representations.items():
        assert rep.shape == (run.test.n_obs, 11), method  # CITE-VAE: [z, c]; VAEs: 10 + 1 latents
        assert np.isfinite(rep).all()


def test_figures(run) -> None:
    fig = samples_figure(run.test, run.representations, n=3)
    assert len(fig.axes) == 6
    model = run.models["citevae"]
    decoded = decoder_of(model)(run.representations["citevae"][:2])
    assert decoded.shape == (2, 16 * 16 * 3)
    fig = traversals_figure(run.test, run.representations["citevae"], decoder_of(model), "t", n_values=3)
    assert len(fig.axes) == len(LATENT_NAMES) * 3


def test_unknown_method_is_refused() -> None:
    with pytest.raises(CiteVAEError, match="unknown method"):
        train_method("pca", simulate_scenes(30, TINY, seed=0), TINY)
