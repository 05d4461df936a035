"""Held-out pairs on the unpaired count simulator: CITE-VAE vs the additive baseline.

Energy distance (PCA space of training cells) between each held-out pair's predicted and real
cells, plus the mean-delta metrics, over seeds, for two inputs of the same simulated cells: the
raw counts (CITE-VAE with its negative binomial likelihood) and the counts log1p-normalised with
scanpy (``normalize_total`` to 10,000 + ``log1p``; CITE-VAE with its Gaussian likelihood). Every
method is scored on the log1p-normalised scale either way. The row "true_mechanism" is the
reference no method can beat by more than chance: the same test control cells rolled out under
the simulator's own mechanism of the pair (``citevae.sim.counterfactual_counts``). The last line
reads ``pairs closer than additive: counts=<k>/<n> log1p=<k>/<n>``.

    python benchmarks/count_pairs.py [--seeds 0 1 2] [--epochs 100] [--inputs counts log1p]
        [--citevae JSON] [--train JSON] [--model-seed-offset K] [--models K]

``--citevae`` sets CITE-VAE hyperparameters (``ModuleConfig`` fields) and ``--train`` training
options (``TrainingConfig`` fields), both default. CITE-VAE's predictions are drawn
(``citevae.benchmark.run.predict_units``). Measured (DEVELOPERS.md, session 10): defaults log1p
2.178 (5 of 9 pairs closer), counts 2.307 (4 of 9); restrained edges, ``--citevae '{"alpha": 0,
"lambda_latent": 10, "decoder": "additive", "lambda_sparsity": 1}' --train '{"cells_per_group":
32}' --inputs log1p``, 1.665 (8 of 9; additive 2.166), preferred to the defaults on validation
pairs drawn from the training pairs and level with them on real K562 pairs. ``--model-seed-offset``
trains CITE-VAE with another seed on the same data and scoring: restrained edges with offsets 100
and 200 score 2.057 (6 of 9) and 2.024 (5 of 9) (DEVELOPERS.md, session 11). ``--models K``
trains K models, ``MODEL_SEED_STRIDE`` seeds apart, scores each as "citevae[i]" and their pooled
predicted cells as "citevae"; restrained edges with ``"weight_averaging": 0.995`` and three models
score 1.784 (8 of 9), 2.032 (5 of 9) and 1.905 (6 of 9), pooled 1.820 (6 of 9) (DEVELOPERS.md,
sessions 12 and 13). ``--staged`` fits CITE-VAE by ``CiteVAE.train_staged`` instead of
``train``: ``--staged --citevae '{"linear_transition": true}'`` scores 1.223 on log1p and
1.198 on counts (9 of 9 each; DEVELOPERS.md, session 18).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import anndata
import pandas as pd
import scanpy as sc

from citevae import setup_anndata
from citevae.benchmark import Evaluation, run_split
from citevae.benchmark.run import predict_units
from citevae.data import split_combinations
from citevae.sim import counterfactual_counts, simulate_counts

METRICS = ["energy_distance", "pearson_delta", "pearson_delta_top20_de", "mse_top20_de"]
INPUTS = ("counts", "log1p")
MODEL_SEED_STRIDE = 100
"""Distance between the model seeds of the members of ``--models``."""


def log1p_normalise(adata: anndata.AnnData) -> None:
    """Counts -> log1p-normalised in place, as a scanpy user would (total 10,000 per cell)."""
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    adata.uns.pop("log1p")


def simulated(seed: int, inputs: str):
    """The simulated cells of ``seed`` as counts or log1p-normalised, set up for CITE-VAE."""
    adata = simulate_counts(n_genes=200, n_targets=10, n_pairs=10, n_cells_per_condition=150,
                            seed=seed)
    if inputs == "log1p":
        log1p_normalise(adata)
    setup_anndata(adata, perturbation_key="perturbation", control="control",
                  covariate_keys=["cell_type"], scale="counts" if inputs == "counts" else "log1p")
    return adata


class TrueMechanism:
    """The simulator's mechanism as a predictor with the baselines' interface: each control cell
    rolled out under the perturbation from its true state, drawn as counts, log1p-normalised."""

    def __init__(self, adata: anndata.AnnData, seed: int) -> None:
        self.adata, self.seed = adata, seed

    def predict(self, controls: anndata.AnnData, perturbations: Sequence[str],
                times=None) -> anndata.AnnData:
        """Counterfactual cells (controls x perturbations, G) on the log1p-normalised scale."""
        parts = []
        for perturbation in perturbations:
            cells = counterfactual_counts(self.adata, perturbation, cells=controls.obs_names,
                                          seed=self.seed)
            log1p_normalise(cells)
            cells.obs["step"] = cells.obs["time"]
            parts.append(cells)
        return anndata.concat(parts, index_unique="-")


def pooled_scores(runs: list[tuple[pd.DataFrame, dict]], evaluation: Evaluation, seed: int,
                  split_name: str) -> pd.DataFrame:
    """Scores of several trained models on one split: each member as "citevae[i]", and as
    "citevae" their pooled predicted cells (an equal mixture of the members' distributions)."""
    members = [extras["predictions"]["citevae"] for _, extras in runs]
    rows = [scores.assign(method=scores["method"].replace({"citevae": f"citevae[{i}]"}))
            for i, (scores, _) in enumerate(runs)]
    pooled = anndata.concat(members, index_unique="-", keys=[str(i) for i in range(len(members))])
    rows.append(evaluation.score("citevae", pooled).assign(seed=seed, split=split_name))
    return pd.concat(rows, ignore_index=True)


def closer_than_additive(wide: pd.DataFrame, method: str) -> str:
    """"<k>/<n>": held-out pairs where ``method``'s energy distance is below the additive one's
    (``wide``: one row per pair, one column per method)."""
    return f"{int((wide[method] < wide['additive']).sum())}/{len(wide)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--inputs", nargs="+", default=list(INPUTS), choices=INPUTS)
    parser.add_argument("--citevae", type=json.loads, default={},
                        help='JSON of CITE-VAE ModuleConfig fields, e.g. \'{"lambda_latent": 10}\'')
    parser.add_argument("--train", type=json.loads, default={},
                        help='JSON of TrainingConfig fields, e.g. \'{"cells_per_group": 32}\'')
    parser.add_argument("--staged", action="store_true",
                        help="fit CITE-VAE by CiteVAE.train_staged; --train then holds "
                             "StagedConfig fields and --epochs is unused")
    parser.add_argument("--models", type=int, default=1,
                        help=f"train this many CITE-VAE models (model seeds {MODEL_SEED_STRIDE} "
                             "apart) and score their pooled predicted cells as 'citevae'")
    parser.add_argument("--model-seed-offset", type=int, default=0,
                        help="train CITE-VAE with seed + offset (data, split and scoring unchanged)")
    args = parser.parse_args()
    if args.models < 1:
        parser.error(f"--models must be >= 1, got {args.models}")
    closer = {}
    for inputs in args.inputs:
        frames = []
        for seed in args.seeds:
            adata = simulated(seed, inputs)
            split = split_combinations(adata, seed=seed, fraction=0.3)
            runs = [run_split(adata, split, seed=seed,
                              baselines=["control_mean", "additive"] if i == 0 else [],
                              model_options=args.citevae,
                              train_options=args.train if args.staged
                              else {"max_epochs": args.epochs, **args.train},
                              model_seed=seed + args.model_seed_offset + MODEL_SEED_STRIDE * i,
                              staged=args.staged)
                    for i in range(args.models)]
            scores, extras = runs[0]
            evaluation = extras["evaluation"]
            if args.models > 1:
                scores = pooled_scores(runs, evaluation, seed, split.name)
            truth = predict_units(TrueMechanism(adata, seed), evaluation, adata, split)
            scores = pd.concat([scores, evaluation.score("true_mechanism", truth).assign(
                seed=seed, split=split.name)], ignore_index=True)
            frames.append(scores)
            energy = scores.groupby("method")["energy_distance"].mean().round(3).to_dict()
            print(f"{inputs} seed {seed}: {energy}", flush=True)
        scores = pd.concat(frames, ignore_index=True)
        print(f"input: {inputs}")
        print(scores.groupby("method")[METRICS].mean().round(4).to_markdown())
        wide = scores.pivot_table(index=["seed", "unit"], columns="method", values="energy_distance")
        print("energy distance per held-out pair:")
        print(wide.round(3).to_markdown())
        closer[inputs] = closer_than_additive(wide, "citevae")
        members = [c for c in wide.columns if c.startswith("citevae[")]
        if members:
            print("member pairs closer than additive: " + " ".join(
                f"{c}={closer_than_additive(wide, c)}" for c in members))
    print("pairs closer than additive: " + " ".join(f"{k}={v}" for k, v in closer.items()))


if __name__ == "__main__":
    main()
