"""Counts simulator: latent program dynamics under single and paired gene perturbations, NB counts.

Latent process as in ``citevae.sim._mechanisms`` with n programs z and invariant state c (m = n).
Each single target k (a measured gene) has its own mechanism: edge weights W_k on the shared DAG
(magnitudes U(0.2, 0.6)), noise-mean shift m_k and noise log-scale shift s_k (U(-0.4, 0.4)). A
condition's parameters are the SUM of its targets' (control: all zero, i.e. W = 0, mean 0, scale 1),
so pairs are additive in mechanism space and non-additive in expression through W and the decoder.

Target effects are tied to the target gene (knockdown-like): m_k = -effect_size * (l_k / |l_k| +
EFFECT_NOISE * xi / sqrt(n)), xi ~ N(0, I), where l_k is gene k's row of the decoder's program
loadings ("gene_loadings"), so perturbing a gene pushes down the programs it belongs to and its own
expression. Since l_k also shapes gene k's co-expression across control cells, a descriptor built
from control co-expression is informative about an unseen target's effect.

Decoder: logits_g = b_g + l_g . z + e_g . c + v_g . tanh(U [z, c] + u0); mean = library *
softmax(logits); counts ~ NB(mean, theta) drawn as Poisson(Gamma(theta, mean / theta)). Each gene
loads on one primary program (magnitude U(0.4, 0.8)) and, with probability 0.3, a second one.
Library sizes: lognormal around mean_library_size (log-sd LIBRARY_SIGMA).
Contexts ("cell_type"): context i shifts the mean of c and of z_0 (context 0 unshifted).

``counterfactual_counts`` rolls chosen cells of a simulated data set forward under the true
mechanism of any target combination: the ground truth a perfect model would predict.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from citevae.errors import CiteVAEError, format_names
from citevae.sim._mechanisms import (
    Basal,
    Transition,
    check_float,
    check_int,
    random_dag,
    rollout,
    signed_uniform,
    weights_on_graph,
)

EFFECT_SIZE = 0.5
"""Default per-step noise-mean shift magnitude of a single target (argument ``effect_size``)."""
EFFECT_NOISE = 0.3
"""Relative size of the target-specific random part of m_k."""
TARGET_WEIGHT_RANGE = (0.2, 0.6)
TARGET_LOGSCALE = 0.4
LIBRARY_SIGMA = 0.3
DECODER_HIDDEN = 32
CONTEXT_SHIFT = 0.75
"""Standard deviation of each context's shift of the means of c and z_0."""


def _draw_decoder(n: int, m: int, G: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Decoder parameters: baseline (G,), gene_loadings (G, n), c_loadings (G, m), MLP part."""
    program = rng.integers(n, size=G)
    loadings = np.zeros((G, n))
    loadings[np.arange(G), program] = signed_uniform(rng, 0.4, 0.8, G)
    if n > 1:
        second = np.flatnonzero(rng.random(G) < 0.3)
        other = (program[second] + 1 + rng.integers(n - 1, size=second.size)) % n
        loadings[second, other] = signed_uniform(rng, 0.2, 0.5, second.size)
    return {
        "decoder_baseline": rng.standard_normal(G),
        "gene_loadings": loadings,
        "decoder_c_loadings": 0.3 * rng.standard_normal((G, m)),
        "decoder_U": rng.standard_normal((DECODER_HIDDEN, n + m)) * 1.5 / np.sqrt(n + m),
        "decoder_u0": 0.5 * rng.standard_normal(DECODER_HIDDEN),
        "decoder_V": rng.standard_normal((G, DECODER_HIDDEN)) * 0.5 / np.sqrt(DECODER_HIDDEN),
    }


def gene_logits(z: np.ndarray, c: np.ndarray, sim: dict[str, Any]) -> np.ndarray:
    """Decoder logits from ``uns["sim"]``: z (N, n), c (N, m) -> (N, G); mean = l * softmax."""
    hidden = np.tanh(np.hstack([z, c]) @ np.asarray(sim["decoder_U"]).T + sim["decoder_u0"])
    return (
        np.asarray(sim["decoder_baseline"])
        + z @ np.asarray(sim["gene_loadings"]).T
        + c @ np.asarray(sim["decoder_c_loadings"]).T
        + hidden @ np.asarray(sim["decoder_V"]).T
    )


def _draw_counts(
    z: np.ndarray, c: np.ndarray, sim: dict[str, Any], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """NB counts (N, G) float32 of cells with programs z (N, n) and state c (N, m), and the drawn
    size factors (N,): library sizes lognormal around ``mean_library_size``, mean = size * softmax
    of the decoder logits, counts ~ Poisson(Gamma(theta, mean / theta))."""
    logits = gene_logits(z, c, sim)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    size = float(sim["mean_library_size"]) * np.exp(
        LIBRARY_SIGMA * rng.standard_normal(len(probs)) - LIBRARY_SIGMA**2 / 2
    )
    mean = size[:, None] * probs
    theta = float(sim["dispersion"])
    rate = mean if np.isinf(theta) else rng.gamma(theta, mean / theta)
    return rng.poisson(rate).astype(np.float32), size


def counterfactual_counts(
    adata: ad.AnnData, perturbation: str, cells: Sequence[str] | np.ndarray | None = None,
    seed: int = 0,
) -> ad.AnnData:
    """Ground-truth counterfactual: cells of ``simulate_counts`` data rolled out under a perturbation.

    Each source cell (observed at t = 0) keeps its true invariant state and basal programs
    (``obsm["c_true"]``, ``obsm["z_true"]``) and is rolled ``n_steps`` latent steps forward under the
    true mechanism of ``perturbation``, then drawn as NB counts, exactly as the simulator draws its
    perturbed cells. Since a condition's mechanism is the sum of its targets', any combination of
    simulated targets can be asked for, including pairs the data never held.

    Args:
        adata: output of ``simulate_counts`` (its ``uns["sim"]``, ``obsm`` and ``obs`` are read;
            X may have been normalised since).
        perturbation: "control", a target ("G0012") or targets joined by "+" ("G0012+G0040").
        cells: obs names or a boolean mask of source cells, all at time 0 (default: every control
            cell at time 0).
        seed: seed of the latent noise and count draws.

    Returns:
        AnnData (cells, G), X CSR float32 counts, obs "perturbation", "time" (n_steps),
        "source_cell", "cell_type" and "library_size"; obsm "z_true" (at n_steps) and "c_true".
    """
    sim = adata.uns.get("sim", {})
    if sim.get("kind") != "counts":
        raise CiteVAEError("adata is not output of simulate_counts (uns['sim']['kind'] != 'counts')")
    targets = [str(t) for t in np.asarray(sim["targets"])]
    members = [] if perturbation == "control" else str(perturbation).split("+")
    unknown = [t for t in members if t not in targets]
    if unknown:
        raise CiteVAEError(f"perturbation {perturbation!r}: unknown target(s) {unknown}; simulated "
                           f"targets: {format_names(targets)}")
    if len(set(members)) < len(members):
        raise CiteVAEError(f"perturbation {perturbation!r}: repeated target")
    source = _source_cells(adata, cells)
    ks = [targets.index(t) for t in members]
    weights, noise_mean, noise_logscale = (np.asarray(sim[f"target_{key}"])[ks].sum(0)
                                           for key in ("weights", "noise_mean", "noise_logscale"))
    rng = np.random.default_rng(seed)
    n_steps = int(sim["n_steps"])
    z, _ = rollout(adata.obsm["z_true"][source], weights, noise_mean, np.exp(noise_logscale),
                   Transition.from_uns(sim), n_steps, rng)
    c = adata.obsm["c_true"][source]
    counts, _ = _draw_counts(z[-1], c, sim, rng)
    obs = pd.DataFrame(
        {
            "perturbation": pd.Categorical([perturbation] * len(source)),
            "time": np.full(len(source), n_steps),
            "source_cell": adata.obs_names[source].to_numpy(),
            "cell_type": adata.obs["cell_type"].to_numpy()[source],
            "library_size": counts.sum(1).astype(np.float64),
        },
        index=[f"counterfactual{i}" for i in range(len(source))],
    )
    out = ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=adata.var_names))
    out.obsm["z_true"] = z[-1]
    out.obsm["c_true"] = c
    return out


def _source_cells(adata: ad.AnnData, cells: Sequence[str] | np.ndarray | None) -> np.ndarray:
    """Row indices of the source cells (default: control cells at time 0); refuses cells not at
    time 0 or not in ``adata``, naming them."""
    time = adata.obs["time"].to_numpy()
    if cells is None:
        mask = (adata.obs["perturbation"].astype(str).to_numpy() == "control") & (time == 0)
        return np.flatnonzero(mask)
    cells = np.asarray(cells)
    if cells.dtype == bool:
        if cells.shape != (adata.n_obs,):
            raise CiteVAEError(f"cells mask has shape {cells.shape}, expected ({adata.n_obs},)")
        index = np.flatnonzero(cells)
    else:
        index = adata.obs_names.get_indexer(cells.astype(str))
        missing = cells[index < 0]
        if len(missing):
            raise CiteVAEError(f"cells not in adata: {format_names(list(missing))}")
    if not len(index):
        raise CiteVAEError("no source cells selected")
    later = adata.obs_names[index[time[index] != 0]]
    if len(later):
        raise CiteVAEError(f"source cells must be observed at time 0; not: {format_names(list(later))}")
    return index


def _check_args(
    n_programs: int,
    n_genes: int,
    n_targets: int,
    n_pairs: int,
    n_cells_per_condition: int,
    n_control_cells: int | None,
    n_steps: int,
    n_contexts: int,
    mean_library_size: float,
    dispersion: float,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "n_programs": check_int("n_programs", n_programs, 1),
        "n_genes": check_int("n_genes", n_genes, 1),
        "n_targets": check_int("n_targets", n_targets, 1),
        "n_pairs": check_int("n_pairs", n_pairs, 0),
        "n_cells_per_condition": check_int("n_cells_per_condition", n_cells_per_condition, 1),
        "n_steps": check_int("n_steps", n_steps, 1),
        "n_contexts": check_int("n_contexts", n_contexts, 1),
        "mean_library_size": check_float("mean_library_size", mean_library_size, strict=True),
        "dispersion": check_float("dispersion", dispersion, strict=True, allow_inf=True),
    }
    out["n_control_cells"] = (
        out["n_cells_per_condition"]
        if n_control_cells is None
        else check_int("n_control_cells", n_control_cells, 1)
    )
    if out["n_targets"] > out["n_genes"]:
        raise CiteVAEError(f"n_targets ({n_targets}) must be <= n_genes ({n_genes})")
    max_pairs = out["n_targets"] * (out["n_targets"] - 1) // 2
    if out["n_pairs"] > max_pairs:
        raise CiteVAEError(
            f"n_pairs ({n_pairs}) exceeds the {max_pairs} distinct pairs of {n_targets} targets"
        )
    return out


def simulate_counts(
    n_programs: int = 5,
    n_genes: int = 200,
    n_targets: int = 10,
    n_pairs: int = 10,
    n_cells_per_condition: int = 200,
    n_control_cells: int | None = None,
    n_steps: int = 4,
    paired: bool = False,
    n_contexts: int = 1,
    mean_library_size: float = 2000.0,
    dispersion: float = 5.0,
    seed: int = 0,
    effect_size: float = EFFECT_SIZE,
) -> ad.AnnData:
    """Simulate Perturb-seq-like NB counts of single and paired perturbations (module docstring).

    Args:
        n_programs: n latent programs. n_genes: G. n_targets: perturbed genes (a subset of genes).
        n_pairs: random distinct target pairs "A+B" (<= n_targets choose 2).
        n_cells_per_condition: individuals per perturbed condition and context.
        n_control_cells: control individuals per context (default n_cells_per_condition).
        n_steps: T >= 1. paired: if True every individual is observed at every step 0..T; if False
            control individuals are observed at t = 0 only and perturbed ones at t = T only.
        n_contexts: number of "cell_type" contexts. mean_library_size: mean total counts.
        dispersion: NB inverse dispersion theta > 0 (np.inf gives Poisson). seed: rng seed.
        effect_size: per-step noise-mean shift of a single target along its gene's loadings (>= 0).

    Returns:
        AnnData, X CSR float32 integer counts (cells, G), var_names "G0000".. with var["is_target"],
        var["program"] (primary program). Rows: context-major, then condition, individual, time.
        obs: "perturbation" (categorical: "control", targets, pairs), "time" (int), "individual"
        (categorical str), "cell_type" (categorical "ctx0"..), "library_size" (realised total
        counts), "library_size_true" (drawn size factor l). obsm (float64): "z_true" (cells, n) at
        the observed step, "c_true" (cells, n), "noise_true" (n_t for t >= 1, z_0 deviation at 0).
        uns["sim"]: "kind" = "counts", "graph", "targets", "pairs", "conditions",
        "target_weights" (n_targets, n, n), "target_noise_mean", "target_noise_logscale"
        (n_targets, n), per-condition sums "condition_weights", "condition_noise_mean",
        "condition_noise_logscale", "gene_loadings" (G, n), decoder/lag/basal/context parameters,
        and the arguments.
    """
    a = _check_args(
        n_programs, n_genes, n_targets, n_pairs, n_cells_per_condition, n_control_cells,
        n_steps, n_contexts, mean_library_size, dispersion,
    )  # fmt: skip
    effect = check_float("effect_size", effect_size)
    n, G, T, n_ctx = a["n_programs"], a["n_genes"], a["n_steps"], a["n_contexts"]
    m = n
    rng = np.random.default_rng(seed)

    genes = [f"G{g:0{max(4, len(str(G - 1)))}d}" for g in range(G)]
    graph = random_dag(n, rng)
    h = Transition.draw(n, 1.0, rng)
    basal = Basal.draw(n, m, rng)
    decoder = _draw_decoder(n, m, G, rng)
    ctx_c = CONTEXT_SHIFT * rng.standard_normal((n_ctx, m))
    ctx_z = CONTEXT_SHIFT * rng.standard_normal((n_ctx, n))
    ctx_c[0], ctx_z[0] = 0.0, 0.0

    target_idx = np.sort(rng.choice(G, a["n_targets"], replace=False))
    targets = [genes[g] for g in target_idx]
    nt = len(targets)
    t_weights = np.stack([weights_on_graph(graph, rng, *TARGET_WEIGHT_RANGE) for _ in range(nt)])
    load = decoder["gene_loadings"][target_idx]
    unit = load / np.linalg.norm(load, axis=1, keepdims=True)
    t_mean = -effect * (unit + EFFECT_NOISE * rng.standard_normal((nt, n)) / np.sqrt(n))
    t_logscale = rng.uniform(-TARGET_LOGSCALE, TARGET_LOGSCALE, (nt, n))

    all_pairs = list(combinations(range(nt), 2))
    chosen = np.sort(rng.choice(len(all_pairs), a["n_pairs"], replace=False))
    members = [[], *[[k] for k in range(nt)], *[list(all_pairs[i]) for i in chosen]]
    conditions = ["control", *targets, *["+".join(targets[k] for k in all_pairs[i]) for i in chosen]]
    c_weights = np.stack([t_weights[ks].sum(0) for ks in members])
    c_mean = np.stack([t_mean[ks].sum(0) for ks in members])
    c_logscale = np.stack([t_logscale[ks].sum(0) for ks in members])

    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("cond", "time", "ind", "ctx", "z", "c", "e")}
    n_ind = 0
    for ci in range(n_ctx):
        for k in range(len(conditions)):
            N = a["n_control_cells"] if k == 0 else a["n_cells_per_condition"]
            c = ctx_c[ci] + rng.standard_normal((N, m))
            z0, dev = basal.sample(c, ctx_z[ci], rng)
            z, noise = rollout(z0, c_weights[k], c_mean[k], np.exp(c_logscale[k]), h, T, rng)
            noise[0] = dev
            steps = np.arange(T + 1) if paired else np.array([0 if k == 0 else T])
            # rows individual-major: (steps, N, n) -> (N, steps, n)
            cols["z"].append(z[steps].transpose(1, 0, 2).reshape(-1, n))
            cols["e"].append(noise[steps].transpose(1, 0, 2).reshape(-1, n))
            cols["c"].append(np.repeat(c, len(steps), axis=0))
            cols["time"].append(np.tile(steps, N))
            cols["ind"].append(np.repeat(np.arange(n_ind, n_ind + N), len(steps)))
            cols["cond"].append(np.full(N * len(steps), k))
            cols["ctx"].append(np.full(N * len(steps), ci))
            n_ind += N
    v = {k: np.concatenate(x) for k, x in cols.items()}

    sim: dict[str, Any] = {
        "kind": "counts",
        "graph": graph,
        "targets": np.array(targets),
        "pairs": np.array(conditions[1 + nt :], dtype=str),
        "conditions": np.array(conditions),
        "target_weights": t_weights,
        "target_noise_mean": t_mean,
        "target_noise_logscale": t_logscale,
        "condition_weights": c_weights,
        "condition_noise_mean": c_mean,
        "condition_noise_logscale": c_logscale,
        **decoder,
        **h.to_uns(),
        **basal.to_uns(),
        "context_c_shift": ctx_c,
        "context_z0_shift": ctx_z,
        **a,
        "paired": bool(paired),
        "seed": int(seed),
        "effect_size": effect,
        "effect_noise": EFFECT_NOISE,
        "library_sigma": LIBRARY_SIGMA,
        "noise_true_t0": "basal deviation z_0 - mu_0(c) - context shift",
    }
    counts, size = _draw_counts(v["z"], v["c"], sim, rng)

    width = len(str(max(n_ind - 1, 0)))
    obs = pd.DataFrame(
        {
            "perturbation": pd.Categorical.from_codes(v["cond"], categories=conditions),
            "time": v["time"],
            "individual": pd.Categorical([f"ind{i:0{width}d}" for i in v["ind"]]),
            "cell_type": pd.Categorical.from_codes(
                v["ctx"], categories=[f"ctx{i}" for i in range(n_ctx)]
            ),
            "library_size": counts.sum(1).astype(np.float64),
            "library_size_true": size,
        },
        index=[f"cell{i}" for i in range(len(counts))],
    )
    var = pd.DataFrame(
        {
            "is_target": np.isin(np.arange(G), target_idx),
            "program": np.abs(decoder["gene_loadings"]).argmax(1),
        },
        index=genes,
    )
    adata = ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=var)
    adata.obsm["z_true"] = v["z"]
    adata.obsm["c_true"] = v["c"]
    adata.obsm["noise_true"] = v["e"]
    adata.uns["sim"] = sim
    return adata
