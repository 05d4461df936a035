"""Where the time of a training step goes: CITE-VAE vs a plain VAE of the same width (torch.profiler).

Builds batches of simulated counts (``--genes`` genes, default batch layout: 4 groups x 100 cells plus
as many controls), runs a few optimiser steps of each model and prints, per model, seconds per step
and the share of forward time in each part of the CITE-VAE loss (the module's methods, wrapped in
``record_function``), then the top operators by self CPU time.

    python benchmarks/profile_step.py
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile, record_function

from citevae import setup_anndata
from citevae.data.batching import CiteDataModule
from citevae.model.citevae import CiteVAE
from citevae.model.vae import PlainVAE
from citevae.module.config import ModuleConfig
from citevae.sim import simulate_counts

PARTS = ("inference", "decode_logits", "likelihood", "_log_normaliser", "_log_kernel",
         "_transition_term", "_matching_terms", "_population_nll")
"""CiteVAEModule methods timed as regions where the module has them (a region includes the
regions it calls; ``likelihood`` builds the distribution only, its log_prob runs outside)."""


def _label(module: torch.nn.Module) -> None:
    """Wrap the methods in ``PARTS`` of ``module`` (this instance only) in profiler regions."""
    for name in (n for n in PARTS if hasattr(module, n)):
        method = getattr(module, name)

        @functools.wraps(method)
        def wrapped(*args, _method=method, _name=name, **kwargs):
            with record_function(f"citevae.{_name}"):
                return _method(*args, **kwargs)

        setattr(module, name, wrapped)


def _step(module: torch.nn.Module, optimiser: torch.optim.Optimizer, batch: dict) -> None:
    loss = module.loss(batch, kl_weight=1.0, match_weight=1.0).loss
    optimiser.zero_grad()
    with record_function("backward"):
        loss.backward()
    with record_function("optimiser"):
        optimiser.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rows", type=int, default=15, help="operators listed per model")
    args = parser.parse_args()
    torch.set_num_threads(1)
    adata = simulate_counts(n_genes=args.genes, n_targets=20, n_pairs=20, n_cells_per_condition=100,
                            seed=0)
    registry = setup_anndata(adata, perturbation_key="perturbation", control="control",
                             covariate_keys=["cell_type"])
    data = CiteDataModule(adata, registry, np.ones(adata.n_obs, bool), None, cells_per_group=100)
    batches = [b for _, b in zip(range(args.steps), data.train_dataloader(), strict=False)]
    cfg = ModuleConfig()
    models = {
        "citevae": CiteVAE(adata, seed=0).module,
        "plainvae": PlainVAE(adata, n_latent=cfg.n_programs + cfg.n_invariant, n_hidden=cfg.n_hidden,
                             n_layers=cfg.n_layers).module,
    }
    _label(models["citevae"])
    print(f"{args.steps} steps of {batches[0]['x'].shape[0]} rows x {args.genes} genes, 1 thread")
    for name, module in models.items():
        optimiser = torch.optim.AdamW(module.parameters())
        _step(module, optimiser, batches[0])  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            for batch in batches:
                _step(module, optimiser, batch)
            seconds = (time.perf_counter() - start) / len(batches)
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        regions = {e.key: e.cpu_time_total for e in events
                   if e.key.startswith("citevae.") or e.key in ("backward", "optimiser")}
        print(f"\n{name}: {seconds:.3f} s/step")
        for key, value in sorted(regions.items(), key=lambda kv: -kv[1]):
            print(f"  {key:28s} {100 * value / total:5.1f}% of step time")
        ops = sorted((e for e in events if e.key.startswith("aten::")),
                     key=lambda e: -e.self_cpu_time_total)[: args.rows]
        print("  top operators (self CPU):")
        for e in ops:
            print(f"    {e.key:32s} {100 * e.self_cpu_time_total / total:5.1f}%  calls {e.count}")


if __name__ == "__main__":
    main()
