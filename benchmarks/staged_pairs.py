"""Held-out pairs on the unpaired count simulator by a staged fit of CITE-VAE's generative model.

A prototype, outside the package (DEVELOPERS.md, session 17): the same model class as CITE-VAE
(programs z with sparse gene loadings, an invariant state c, per-target strictly lower-triangular
edges and noise shifts summed over a condition's targets, a lagged drift, a decoder of [z, c]),
fitted in stages instead of by the joint objective, on the training cells only (log1p):

1. programs: the top principal components (as many as the largest eigenvalue gap says), rotated
   to the sparsest gene loadings (L1 of unit-variance components, best of ``--starts`` starts);
   the components with the sparsest loadings (split at the largest gap of L1/L2) are the programs;
2. invariant state: the other components minus their regression (an MLP) on the programs;
3. mechanisms: each target's edges, noise mean and noise log-scale, with a shared linear drift,
   fitted so that control cells rolled out under every training condition match that condition's
   program mean and covariance; once with full edge matrices, whose outgoing edge mass orders the
   programs, then strictly lower-triangular in that order (solved by triangular solve);
4. decoder: an MLP of [z, c] -> log1p expression (squared error).

A held-out pair is predicted from each test control cell as x + dec(z', c) - dec(z, c), with z'
its programs rolled out under the pair's summed mechanism (drawn noise). Scored like
``count_pairs.py`` (same data, split, test controls and energy distance), beside the additive
baseline and the simulator's true mechanism. The last line reads
``pairs closer than additive: <k>/<n>``.

    python benchmarks/staged_pairs.py [--seeds 0 1 2] [--fit-seeds 0] [--starts 16] [--steps 800]

Measured (DEVELOPERS.md, session 17; ``results/staged_pairs.txt``): 11 components and 5 programs
on every seed; fit seeds 0 / 100 / 200 score 1.251 (9 of 9 pairs closer than additive), 1.290
(8 of 9) and 1.417 (8 of 9), additive 2.166, true mechanism 0.969.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import anndata
import numpy as np
import pandas as pd
import torch
from count_pairs import TrueMechanism, closer_than_additive, simulated

from citevae.baselines import get_baseline
from citevae.benchmark.evaluate import prepare_evaluation
from citevae.benchmark.run import predict_units
from citevae.data import split_combinations
from citevae.module.config import ModuleConfig

N_STEPS = ModuleConfig().n_steps
"""Latent steps from control to perturbed cells (CITE-VAE's default)."""
MAX_COMPONENTS = 50


def largest_gap(values: np.ndarray, low: int, high: int, ratio: bool) -> int:
    """k in [low, high) maximising values[k-1] / values[k] (``ratio``) or values[k] - values[k-1]:
    how many of the sorted ``values`` lie before the largest gap."""
    ks = np.arange(low, high)
    gaps = values[ks - 1] / values[ks] if ratio else values[ks] - values[ks - 1]
    return int(ks[np.argmax(gaps)])


def sparse_rotation(scores: torch.Tensor, loadings: torch.Tensor, starts: int,
                    steps: int = 3000) -> np.ndarray:
    """R (d, d) such that the components scores @ R.T have unit variance and the loadings
    ``loadings @ inv(R)`` (G, d) the least L1 norm; the best of ``starts`` Adam runs (identity,
    then perturbed identities)."""
    d = scores.shape[1]
    best, best_rotation = np.inf, None
    for start in range(starts):
        generator = torch.Generator().manual_seed(start)
        noise = 0.5 * torch.randn(d, d, generator=generator, dtype=scores.dtype)
        rotation = torch.nn.Parameter(torch.eye(d, dtype=scores.dtype) + (start > 0) * noise)
        optimiser = torch.optim.Adam([rotation], lr=0.01)
        for _ in range(steps):
            scaled = rotation / (scores @ rotation.T).std(0)[:, None]
            l1 = (loadings @ torch.linalg.inv(scaled)).abs().sum()
            optimiser.zero_grad()
            l1.backward()
            optimiser.step()
        if l1.item() < best:
            best, best_rotation = l1.item(), scaled.detach().numpy()
    return best_rotation


def fit_mlp(inputs: np.ndarray, targets: np.ndarray, seed: int, hidden: int = 128,
            steps: int = 3000) -> torch.nn.Module:
    """Two-hidden-layer ELU MLP inputs (N, a) -> targets (N, b), full-batch Adam on squared error."""
    torch.manual_seed(seed)
    mlp = torch.nn.Sequential(torch.nn.Linear(inputs.shape[1], hidden), torch.nn.ELU(),
                              torch.nn.Linear(hidden, hidden), torch.nn.ELU(),
                              torch.nn.Linear(hidden, targets.shape[1])).double()
    x, y = torch.tensor(inputs), torch.tensor(targets)
    optimiser = torch.optim.Adam(mlp.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(steps):
        loss = (mlp(x) - y).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return mlp.requires_grad_(False)


def _zeros(*shape: int) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.zeros(*shape, dtype=torch.float64))


class Mechanisms(torch.nn.Module):
    """Per-target edges W (K, n, n), noise mean (K, n) and log-scale (K, n), summed over a
    condition's targets, with a shared linear drift z + z D^T + b and base log-scale; the programs
    are permuted by ``order`` so that ``full=False`` edges are strictly lower-triangular in it."""

    def __init__(self, n_targets: int, n: int, order: Sequence[int], full: bool) -> None:
        super().__init__()
        self.weights, self.noise_mean, self.noise_logscale = (
            _zeros(n_targets, n, n), _zeros(n_targets, n), _zeros(n_targets, n))
        self.base_logscale, self.drift, self.drift_bias = _zeros(n), _zeros(n, n), _zeros(n)
        self.order, self.full = torch.tensor(list(order)), full
        eye = torch.eye(n, dtype=torch.float64)
        self.register_buffer("eye", eye)
        self.register_buffer("mask", 1 - eye if full else torch.tril(torch.ones_like(eye), -1))

    def edge_mass(self) -> np.ndarray:
        """(n,) summed |W| of the edges leaving each program, in the programs' given order."""
        mass = (self.weights.detach().abs() * self.mask).sum((0, 1)).numpy()
        return mass[np.argsort(self.order.numpy())]

    def rollout(self, z: torch.Tensor, targets: Sequence[int], generator=None) -> torch.Tensor:
        """Programs (N, n) after ``N_STEPS`` steps under the summed mechanism of ``targets``."""
        ks = list(targets)
        lam = self.weights[ks].sum(0) * self.mask
        mean = self.noise_mean[ks].sum(0)
        scale = (self.noise_logscale[ks].sum(0) + self.base_logscale).exp()
        z = z[:, self.order]
        for _ in range(N_STEPS):
            noise = torch.randn(z.shape, generator=generator, dtype=z.dtype)
            rhs = (z + z @ self.drift.T + self.drift_bias + mean + scale * noise).T
            if self.full:
                z = torch.linalg.solve(self.eye - lam, rhs).T
            else:
                z = torch.linalg.solve_triangular(self.eye - lam, rhs, upper=False,
                                                  unitriangular=True).T
        return z[:, torch.argsort(self.order)]


def fit_mechanisms(controls: torch.Tensor, conditions: dict[str, tuple[list[int], torch.Tensor]],
                   n_targets: int, order: Sequence[int], full: bool, steps: int) -> Mechanisms:
    """Mechanisms whose rollouts of ``controls`` (4 draws per cell) match every condition's
    program mean and covariance (``conditions``: name -> (target indices, programs of its cells))."""
    mechanisms = Mechanisms(n_targets, controls.shape[1], order, full)
    optimiser = torch.optim.Adam(mechanisms.parameters(), lr=0.02)
    sources = controls.repeat(4, 1)
    for _ in range(steps):
        loss = 0.0
        for targets, observed in conditions.values():
            rolled = mechanisms.rollout(sources, targets)
            loss = (loss + (rolled.mean(0) - observed.mean(0)).pow(2).sum()
                    + (torch.cov(rolled.T) - torch.cov(observed.T)).pow(2).sum())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return mechanisms.requires_grad_(False)


def sparse_components(x: np.ndarray, train: np.ndarray, starts: int) -> tuple[np.ndarray, int]:
    """Stage 1: the top principal components of the training cells (as many as the largest ratio
    of consecutive eigenvalues says), rotated to the sparsest loadings and ordered from sparsest
    to densest: components (N, d), unit variance on the training cells, and the number of
    programs n (the components before the largest gap of their loadings' L1/L2)."""
    mean = x[train].mean(0)
    _, singular, vt = np.linalg.svd(x[train] - mean, full_matrices=False)
    d = largest_gap(singular[:MAX_COMPONENTS] ** 2, 2, MAX_COMPONENTS, ratio=True)
    scores = (x - mean) @ vt[:d].T
    scores /= scores[train].std(0)
    loadings = np.linalg.lstsq(scores[train], x[train] - mean, rcond=None)[0].T
    rotation = sparse_rotation(torch.tensor(scores[train]), torch.tensor(loadings), starts)
    loadings = loadings @ np.linalg.inv(rotation)
    sparsity = np.abs(loadings).sum(0) / np.sqrt((loadings ** 2).sum(0))
    ranked = np.argsort(sparsity)
    return (scores @ rotation.T)[:, ranked], largest_gap(sparsity[ranked], 1, d, ratio=False)


class StagedFit:
    """Stages 2-4 on the training cells of ``adata`` (log1p ``x``), given stage 1's ``components``
    whose first ``n`` are the programs; ``predict`` with the baselines' interface."""

    def __init__(self, adata: anndata.AnnData, x: np.ndarray, components: np.ndarray, n: int,
                 train: np.ndarray, steps: int, seed: int) -> None:
        self.adata, self.x, self.seed = adata, x, seed
        perturbation = adata.obs["perturbation"].astype(str).to_numpy()
        z, others = components[:, :n], components[:, n:]
        leak = fit_mlp(z[train], others[train], seed, hidden=64)
        self.z, self.c = z, others - leak(torch.tensor(z)).numpy()
        self.decoder = fit_mlp(np.hstack([z, self.c])[train], x[train], seed)
        names = sorted({p for p in perturbation[train] if p != "control"})
        self.targets = sorted({t for p in names for t in p.split("+")})
        conditions = {p: ([self.targets.index(t) for t in p.split("+")],
                          torch.tensor(z[train & (perturbation == p)])) for p in names}
        controls = torch.tensor(z[train & (perturbation == "control")])
        torch.manual_seed(1000 + seed)
        full = fit_mechanisms(controls, conditions, len(self.targets), range(n), True, steps)
        self.order = np.argsort(-full.edge_mass())
        self.mechanisms = fit_mechanisms(controls, conditions, len(self.targets), self.order,
                                         False, steps)

    def predict(self, controls: anndata.AnnData, perturbations: Sequence[str],
                times=None) -> anndata.AnnData:
        """Each control cell rolled out under each perturbation: (cells x perturbations, G) log1p."""
        rows = self.adata.obs_names.get_indexer(controls.obs_names)
        if (rows < 0).any():
            raise ValueError("controls must be cells of the data the stages were fitted on")
        generator = torch.Generator().manual_seed(self.seed)
        z, c = torch.tensor(self.z[rows]), torch.tensor(self.c[rows])
        decoded = self.decoder(torch.hstack([z, c]))
        parts = []
        for perturbation in perturbations:
            targets = [self.targets.index(t) for t in perturbation.split("+")]
            rolled = self.mechanisms.rollout(z, targets, generator)
            change = self.decoder(torch.hstack([rolled, c])) - decoded
            obs = pd.DataFrame({"perturbation": perturbation, "step": N_STEPS,
                                "cell_type": controls.obs["cell_type"].to_numpy()},
                               index=[f"{perturbation}-{i}" for i in range(len(rows))])
            parts.append(anndata.AnnData((self.x[rows] + change.numpy()).astype(np.float32),
                                         obs=obs))
        return anndata.concat(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fit-seeds", type=int, nargs="+", default=[0],
                        help="seeds of the mechanism fit, MLPs and draws (data and scoring fixed)")
    parser.add_argument("--starts", type=int, default=16, help="starts of the sparse rotation")
    parser.add_argument("--steps", type=int, default=800, help="Adam steps per mechanism fit")
    args = parser.parse_args()
    torch.set_num_threads(1)
    frames = []
    for seed in args.seeds:
        adata = simulated(seed, "log1p")
        split = split_combinations(adata, seed=seed, fraction=0.3)
        evaluation = prepare_evaluation(adata, split, seed=seed)
        train = split.mask("train")
        x = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X, np.float64)
        components, n = sparse_components(x, train, args.starts)
        print(f"seed {seed}: {components.shape[1]} components, {n} programs", flush=True)
        methods = {"additive": get_baseline("additive").fit(adata, train),
                   "true_mechanism": TrueMechanism(adata, seed)}
        for fit_seed in args.fit_seeds:
            staged = StagedFit(adata, x, components, n, train, args.steps, fit_seed)
            print(f"seed {seed} fit {fit_seed}: order {staged.order.tolist()}", flush=True)
            methods[f"staged[{fit_seed}]"] = staged
        predictions = {name: predict_units(method, evaluation, adata, split)
                       for name, method in methods.items()}
        staged_names = [f"staged[{s}]" for s in args.fit_seeds]
        if len(staged_names) > 1:
            predictions["staged pooled"] = anndata.concat(
                [predictions[name] for name in staged_names], index_unique="-", keys=staged_names)
        frames += [evaluation.score(name, cells).assign(seed=seed)
                   for name, cells in predictions.items()]
    scores = pd.concat(frames, ignore_index=True)
    wide = scores.pivot_table(index=["seed", "unit"], columns="method", values="energy_distance")
    print("energy distance per held-out pair:")
    print(wide.round(3).to_markdown())
    print("mean:", wide.mean().round(3).to_dict())
    staged_names = [name for name in wide.columns if name.startswith("staged")]
    print("pairs closer than additive:", " ".join(
        f"{name}={closer_than_additive(wide, name)}" for name in staged_names))


if __name__ == "__main__":
    main()
