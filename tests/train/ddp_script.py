"""Train CITE-VAE on tiny simulated counts with Lightning, 1 or more processes; write the results.

Run by ``tests/train/test_ddp.py`` in a subprocess: Lightning's "ddp" strategy re-launches the
running script once per extra rank (same argv, ``LOCAL_RANK`` set), so this must be a script.

    python tests/train/ddp_script.py OUT --devices 2 --strategy ddp
    python tests/train/ddp_script.py OUT --devices 1 --accumulate 2

The training plan re-seeds torch at every training batch from the batch's number in the epoch
over all ranks (rank r's i-th batch is batch i * world_size + r), so a batch's reparameterisation
noise does not depend on which process draws it.

Every rank writes ``OUT/rank<r>.json`` (its rank, world size, number of training batches and the
rows of its epoch-0 batches) when its training loader is built; rank 0 alone writes
``OUT/result.json`` (loss history), ``OUT/prediction.npy`` and the saved model ``OUT/model``;
Lightning writes the checkpoints to ``OUT/checkpoints`` (rank 0 only).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from citevae import setup_anndata
from citevae.data import batching
from citevae.model.citevae import CiteVAE
from citevae.sim import simulate_counts

SEED = 0
RANK = {"rank": 0}


def _recording_loader(out: Path) -> None:
    """Wrap ``CiteDataModule._loader`` so each rank records the training batches it is given."""
    original = batching.CiteDataModule._loader

    def loader(self, groups, shuffle, dataset):
        result = original(self, groups, shuffle, dataset)
        if shuffle:  # the training loader
            sampler = result.sampler
            RANK["rank"] = sampler.rank
            (out / f"rank{sampler.rank}.json").write_text(json.dumps({
                "rank": sampler.rank, "world_size": sampler.world_size, "n_batches": len(sampler),
                "epoch0_rows": [batch["index"].tolist() for batch in sampler]}))
        return result

    batching.CiteDataModule._loader = loader


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    _recording_loader(args.out)

    adata = simulate_counts(n_programs=3, n_genes=30, n_targets=3, n_pairs=1,
                            n_cells_per_condition=64, seed=SEED)
    setup_anndata(adata, perturbation_key="perturbation", control="control",
                  covariate_keys=["cell_type"])
    model = CiteVAE(adata, n_programs=3, n_hidden=32, seed=SEED)
    result = model.train(max_epochs=args.epochs, train_mask=np.ones(adata.n_obs, bool),
                         accelerator="cpu", devices=args.devices, strategy=args.strategy,
                         checkpoint_dir=args.out / "checkpoints", progress_bar=False,
                         num_threads=1, seed=SEED, kl_warmup_epochs=1, match_start_epoch=0,
                         early_stopping_patience=0, learning_rate=3e-3, cells_per_group=16,
                         groups_per_batch=2, accumulate_grad_batches=args.accumulate)
    if RANK["rank"] != 0:
        return  # ranks > 0 stop here; rank 0 writes everything below once
    controls = adata[np.flatnonzero(adata.obs["perturbation"].astype(str) == "control")[:32]]
    targets = list(model.registry.vocabulary.targets[:2])
    prediction = model.predict(controls, targets, seed=SEED)
    np.save(args.out / "prediction.npy", np.asarray(prediction.layers["log1p"]))
    model.save(args.out / "model")
    (args.out / "result.json").write_text(json.dumps({
        "devices": args.devices, "history": result.history, "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "train_loss": [row["train_loss"] for row in result.history]}))


if __name__ == "__main__":
    main()
