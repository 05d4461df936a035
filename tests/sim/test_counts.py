"""Tests of the counts simulator: layout, additive mechanisms, pairing, NB counts, h5ad, and
ground-truth counterfactuals."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.linalg import solve_triangular

from citevae.module.distances import energy_distance
from citevae.sim import counterfactual_counts, simulate_counts
from citevae.sim._mechanisms import Transition

SMALL = {
    "n_programs": 3,
    "n_genes": 30,
    "n_targets": 4,
    "n_pairs": 3,
    "n_cells_per_condition": 20,
    "n_control_cells": 15,
    "n_steps": 2,
}


@pytest.fixture(scope="module")
def unpaired() -> ad.AnnData:
    return simulate_counts(**SMALL, seed=1)


@pytest.fixture(scope="module")
def paired() -> ad.AnnData:
    return simulate_counts(**SMALL, paired=True, n_contexts=2, seed=2)


def test_shapes_and_layout(unpaired: ad.AnnData) -> None:
    a, sim = unpaired, unpaired.uns["sim"]
    assert a.shape == (15 + (4 + 3) * 20, 30)
    assert list(a.var_names[:2]) == ["G0000", "G0001"]
    assert {"perturbation", "time", "individual", "cell_type", "library_size"} <= set(a.obs.columns)
    for key in ("z_true", "c_true", "noise_true"):
        assert a.obsm[key].shape == (a.n_obs, 3)
    targets, pairs = list(sim["targets"]), list(sim["pairs"])
    assert len(targets) == 4 and set(targets) <= set(a.var_names)
    assert targets == sorted(targets)
    assert list(a.var_names[a.var["is_target"]]) == targets
    assert len(pairs) == len(set(pairs)) == 3
    for pair in pairs:
        parts = pair.split("+")
        assert len(parts) == 2 and parts == sorted(parts) and set(parts) <= set(targets)
    assert list(a.obs["perturbation"].cat.categories) == ["control", *targets, *pairs]
    assert list(sim["conditions"]) == ["control", *targets, *pairs]
    sizes = a.obs["perturbation"].value_counts()
    assert sizes["control"] == 15 and all(sizes[c] == 20 for c in [*targets, *pairs])
    assert list(a.obs["cell_type"].cat.categories) == ["ctx0"]
    assert sim["target_weights"].shape == (4, 3, 3)
    assert sim["target_noise_mean"].shape == sim["target_noise_logscale"].shape == (4, 3)


def test_counts_are_nonnegative_integers(unpaired: ad.AnnData) -> None:
    X = unpaired.X
    assert isinstance(X, sp.csr_matrix) and X.dtype == np.float32
    assert X.data.min() >= 0 and np.array_equal(X.data, np.round(X.data))
    np.testing.assert_array_equal(unpaired.obs["library_size"].to_numpy(), np.asarray(X.sum(1)).ravel())
    assert (unpaired.obs["library_size"] > 0).all()


def test_unpaired_individuals_never_at_both_ends(unpaired: ad.AnnData) -> None:
    obs = unpaired.obs
    control = obs["perturbation"] == "control"
    assert (obs.loc[control, "time"] == 0).all()
    assert (obs.loc[~control, "time"] == 2).all()
    at_start = set(obs.loc[obs["time"] == 0, "individual"])
    at_end = set(obs.loc[obs["time"] == 2, "individual"])
    assert not at_start & at_end
    assert obs["individual"].nunique() == len(obs)


def test_paired_every_individual_at_every_step(paired: ad.AnnData) -> None:
    obs = paired.obs
    per_ind = obs.groupby("individual", observed=True).agg(
        steps=("time", "nunique"),
        rows=("time", "size"),
        conds=("perturbation", "nunique"),
        ctxs=("cell_type", "nunique"),
    )
    assert len(per_ind) == 2 * (15 + 7 * 20)
    assert (per_ind["steps"] == 3).all() and (per_ind["rows"] == 3).all()
    assert (per_ind["conds"] == 1).all() and (per_ind["ctxs"] == 1).all()
    # every condition appears in every context
    table = obs.groupby(["cell_type", "perturbation"], observed=True).size().unstack()
    assert table.shape == (2, 8) and table.notna().all().all()


def test_combinations_are_sums_of_singles(unpaired: ad.AnnData) -> None:
    sim = unpaired.uns["sim"]
    conditions, targets = list(sim["conditions"]), list(sim["targets"])
    for key, single in [
        ("condition_weights", "target_weights"),
        ("condition_noise_mean", "target_noise_mean"),
        ("condition_noise_logscale", "target_noise_logscale"),
    ]:
        assert np.all(sim[key][0] == 0.0), "control must have zero mechanism parameters"
        for i, cond in enumerate(conditions[1:], start=1):
            idx = [targets.index(t) for t in cond.split("+")]
            np.testing.assert_allclose(sim[key][i], sim[single][idx].sum(0), atol=1e-15)


def test_mechanisms_on_graph_and_tied_to_target_gene(unpaired: ad.AnnData) -> None:
    sim = unpaired.uns["sim"]
    graph, W = sim["graph"], sim["target_weights"]
    assert not np.any(np.triu(graph))
    assert np.all(W[:, ~graph] == 0.0) and np.all(W[:, graph] != 0.0)
    idx = [list(unpaired.var_names).index(t) for t in sim["targets"]]
    loadings = sim["gene_loadings"][idx]
    cosine = np.sum(-sim["target_noise_mean"] * loadings, 1) / (
        np.linalg.norm(sim["target_noise_mean"], axis=1) * np.linalg.norm(loadings, axis=1)
    )
    assert np.all(cosine > 0.7), cosine


def test_paired_z_follows_recursion_exactly(paired: ad.AnnData) -> None:
    sim = paired.uns["sim"]
    h = Transition.from_uns(sim)
    z, noise = paired.obsm["z_true"], paired.obsm["noise_true"]
    codes = paired.obs["perturbation"].cat.codes.to_numpy()
    rows = np.flatnonzero(paired.obs["time"].to_numpy() > 0)  # previous row is the same individual
    for k in range(len(sim["conditions"])):
        sel = rows[codes[rows] == k]
        lhs = np.eye(3) - sim["condition_weights"][k]
        expected = solve_triangular(lhs, (h(z[sel - 1]) + noise[sel]).T, lower=True, unit_diagonal=True)
        np.testing.assert_allclose(z[sel], expected.T, rtol=1e-12, atol=1e-12)
    # the invariant state does not change along an individual's sequence
    np.testing.assert_array_equal(paired.obsm["c_true"][rows], paired.obsm["c_true"][rows - 1])


def test_knockdown_lowers_the_target_gene() -> None:
    a = simulate_counts(n_programs=4, n_genes=50, n_targets=6, n_pairs=0, n_cells_per_condition=150, seed=4)
    X = a.X.toarray()
    X = np.log1p(X / X.sum(1, keepdims=True) * 1e4)
    pert = a.obs["perturbation"].to_numpy()
    control = X[pert == "control"].mean(0)
    targets = a.uns["sim"]["targets"]
    genes = [a.var_names.get_loc(t) for t in targets]
    lowered = [X[pert == t, g].mean() < control[g] - 0.1 for t, g in zip(targets, genes, strict=True)]
    assert all(lowered)


def test_contexts_shift_basal_state(paired: ad.AnnData) -> None:
    sim = paired.uns["sim"]
    assert np.all(sim["context_z0_shift"][0] == 0) and np.any(sim["context_z0_shift"][1] != 0)
    c, ctx = paired.obsm["c_true"], paired.obs["cell_type"].to_numpy()
    gap = np.abs(c[ctx == "ctx1"].mean(0) - c[ctx == "ctx0"].mean(0) - sim["context_c_shift"][1])
    assert np.all(gap < 0.3)


def test_poisson_limit_and_no_pairs(tmp_path) -> None:
    a = simulate_counts(**{**SMALL, "n_pairs": 0}, dispersion=np.inf, seed=0)
    assert list(a.uns["sim"]["pairs"]) == []
    assert a.obs["perturbation"].nunique() == 5
    a.write_h5ad(tmp_path / "nopairs.h5ad")
    assert len(ad.read_h5ad(tmp_path / "nopairs.h5ad").uns["sim"]["pairs"]) == 0


def test_determinism_per_seed() -> None:
    a, b = simulate_counts(**SMALL, seed=7), simulate_counts(**SMALL, seed=7)
    c = simulate_counts(**SMALL, seed=8)
    assert (a.X != b.X).nnz == 0
    np.testing.assert_array_equal(a.obsm["z_true"], b.obsm["z_true"])
    assert list(a.obs["perturbation"]) == list(b.obs["perturbation"])
    assert (a.X != c.X).nnz > 0
    assert not np.allclose(a.obsm["z_true"], c.obsm["z_true"])


def test_global_rng_untouched() -> None:
    state = np.random.get_state()[1].copy()
    simulate_counts(**SMALL, seed=0)
    assert np.array_equal(np.random.get_state()[1], state)


def test_h5ad_round_trip(paired: ad.AnnData, tmp_path) -> None:
    path = tmp_path / "counts.h5ad"
    paired.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert (back.X != paired.X).nnz == 0
    assert back.obs.equals(paired.obs)
    np.testing.assert_array_equal(back.obsm["z_true"], paired.obsm["z_true"])
    assert set(back.uns["sim"]) == set(paired.uns["sim"])
    for key, value in paired.uns["sim"].items():
        np.testing.assert_array_equal(np.asarray(back.uns["sim"][key]), np.asarray(value), err_msg=key)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_programs": 0}, "n_programs"),
        ({"n_genes": 0}, "n_genes"),
        ({"n_targets": 0}, "n_targets"),
        ({"n_targets": 31}, "n_targets"),
        ({"n_pairs": 7}, "n_pairs"),
        ({"n_pairs": -1}, "n_pairs"),
        ({"n_cells_per_condition": 0}, "n_cells_per_condition"),
        ({"n_control_cells": 0}, "n_control_cells"),
        ({"n_steps": 0}, "n_steps"),
        ({"n_contexts": 0}, "n_contexts"),
        ({"mean_library_size": 0.0}, "mean_library_size"),
        ({"dispersion": -1.0}, "dispersion"),
        ({"dispersion": 0.0}, "dispersion"),
        ({"effect_size": -0.5}, "effect_size"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        simulate_counts(**{**SMALL, **kwargs})


def test_counterfactual_layout_and_determinism(paired: ad.AnnData) -> None:
    sources = paired.obs_names[(paired.obs["time"] == 0).to_numpy()][:12]
    pair = "+".join(paired.uns["sim"]["targets"][:2])
    out = counterfactual_counts(paired, pair, cells=sources, seed=4)
    assert out.shape == (12, paired.n_vars)
    assert list(out.var_names) == list(paired.var_names)
    assert (out.obs["time"] == SMALL["n_steps"]).all()
    assert list(out.obs["source_cell"]) == list(sources)
    assert list(out.obs["cell_type"]) == list(paired.obs.loc[sources, "cell_type"])
    counts = out.X.toarray()
    assert (counts >= 0).all() and np.array_equal(counts, np.round(counts))
    np.testing.assert_array_equal(out.obsm["c_true"], paired[sources].obsm["c_true"])
    again = counterfactual_counts(paired, pair, cells=sources, seed=4)
    np.testing.assert_array_equal(again.X.toarray(), counts)
    np.testing.assert_array_equal(again.obsm["z_true"], out.obsm["z_true"])
    assert not np.array_equal(counterfactual_counts(paired, pair, cells=sources, seed=5).X.toarray(),
                              counts)
    swapped = "+".join(paired.uns["sim"]["targets"][1::-1])
    np.testing.assert_array_equal(
        counterfactual_counts(paired, swapped, cells=sources, seed=4).X.toarray(), counts)


def test_counterfactual_matches_the_simulated_condition() -> None:
    """Control cells rolled out under a simulated pair land where that pair's cells are (same
    latent distribution), and a pair the data never held can be asked for too."""
    adata = simulate_counts(**{**SMALL, "n_cells_per_condition": 1500, "n_control_cells": 1500,
                               "n_steps": 4}, effect_size=1.5, seed=6)
    pair = str(adata.uns["sim"]["pairs"][0])
    real = torch.from_numpy(adata.obsm["z_true"][(adata.obs["perturbation"] == pair).to_numpy()])
    same = counterfactual_counts(adata, pair, seed=0).obsm["z_true"]
    control = counterfactual_counts(adata, "control", seed=0).obsm["z_true"]
    np.testing.assert_allclose(same.mean(0), real.mean(0).numpy(), atol=0.12)
    np.testing.assert_allclose(same.std(0), real.std(0).numpy(), rtol=0.1)
    near = float(energy_distance(torch.from_numpy(same), real))
    assert near < 0.02 < float(energy_distance(torch.from_numpy(control), real))
    targets = adata.uns["sim"]["targets"]
    unheld = next(f"{a}+{b}" for i, a in enumerate(targets) for b in targets[i + 1:]
                  if f"{a}+{b}" not in set(adata.uns["sim"]["pairs"]))
    assert counterfactual_counts(adata, unheld, seed=0).n_obs == 1500


@pytest.mark.parametrize(
    ("perturbation", "cells", "message"),
    [
        ("NOPE", None, "unknown target\\(s\\) \\['NOPE'\\]"),
        ("control", ["cell0", "nosuchcell"], "nosuchcell"),
        ("control", np.ones(3, dtype=bool), "mask has shape"),
        ("control", np.zeros(0, dtype=str), "no source cells"),
    ],
)
def test_counterfactual_bad_inputs(unpaired: ad.AnnData, perturbation: str, cells,
                                   message: str) -> None:
    with pytest.raises(ValueError, match=message):
        counterfactual_counts(unpaired, perturbation, cells=cells)


def test_counterfactual_refuses_later_cells_repeats_and_other_data(unpaired: ad.AnnData) -> None:
    later = unpaired.obs_names[(unpaired.obs["time"] > 0).to_numpy()][:2]
    with pytest.raises(ValueError, match=f"observed at time 0; not: .*{later[0]}"):
        counterfactual_counts(unpaired, "control", cells=later)
    target = unpaired.uns["sim"]["targets"][0]
    with pytest.raises(ValueError, match="repeated target"):
        counterfactual_counts(unpaired, f"{target}+{target}")
    with pytest.raises(ValueError, match="not output of simulate_counts"):
        counterfactual_counts(ad.AnnData(np.zeros((2, 3))), "control")
