"""The user-facing CiteVAE model: setup, train, predict, latents, causal graph, save/load."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from citevae._settings import set_num_threads
from citevae.data.batching import CiteDataModule
from citevae.data.descriptors import GeneDescriptors, build_descriptors, log1p_normalised
from citevae.data.registry import DataRegistry, EncodedCells, get_registry, setup_anndata
from citevae.data.splits import Split
from citevae.data.validate import check_anndata
from citevae.errors import CiteVAEError, VocabularyError, format_names
from citevae.model import io
from citevae.model.alignment import Alignment, align_latents
from citevae.model.prediction import build_prediction_rows, predictions_to_anndata
from citevae.model.tensors import cell_tensors, iter_cell_tensors
from citevae.module.citevae import CiteVAEModule
from citevae.module.config import ModuleConfig
from citevae.train.plan import TrainingConfig
from citevae.train.staged import StagedCells, StagedConfig, StagedResult, fit_staged
from citevae.train.trainer import TrainingResult, fit

PREDICT_BATCH = 2048
"""Cells per forward pass when predicting or encoding."""


class CiteVAE:
    """CITE-VAE on a registered AnnData.

    Args:
        adata: data set up with ``CiteVAE.setup_anndata``.
        gene_features: optional table (genes x features) describing target genes, e.g. Gene
            Ontology features; needed to predict target genes that are not measured.
        n_descriptor_components: principal components of control co-expression per gene.
        seed: seed of the weight initialisation (training has its own seed).
        **hparams: fields of ``ModuleConfig`` (architecture, objective weights).
    """

    def __init__(self, adata: AnnData, gene_features: pd.DataFrame | None = None,
                 n_descriptor_components: int = 16, seed: int = 0, **hparams) -> None:
        check_anndata(adata)
        self.registry: DataRegistry = get_registry(adata)
        self.registry.check_genes(adata)
        unknown = sorted(set(hparams) - {f.name for f in fields(ModuleConfig)})
        if unknown:
            raise CiteVAEError(f"unknown hyperparameter(s): {', '.join(unknown)}")
        self.adata = adata
        encoded = self.registry.encode(adata, n_steps=hparams.get("n_steps", 4))
        self._encoded: EncodedCells | None = encoded  # reused by train(): encoding reads the matrix
        self.descriptors: GeneDescriptors = build_descriptors(
            adata, self.registry, np.flatnonzero(encoded.is_control & (encoded.steps == 0)),
            gene_features, n_descriptor_components)
        targets = self.registry.vocabulary.targets
        values, has = self.descriptors.lookup(targets)
        config = ModuleConfig(
            n_genes=self.registry.n_genes,
            n_targets=len(targets),
            descriptor_dim=self.descriptors.n_features,
            covariate_sizes=tuple(len(self.registry.covariate_categories[k])
                                  for k in self.registry.covariate_keys),
            likelihood="nb" if self.registry.scale == "counts" else "gaussian",
            **{"stationary_control": self.registry.time_key is None, **hparams},
        )
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.module = CiteVAEModule(config, torch.from_numpy(values), torch.from_numpy(has))
        self.training_result: TrainingResult | None = None
        self.training_config = TrainingConfig()
        self.staged_config: StagedConfig | None = None
        """Settings of ``train_staged`` when the model was fitted by it."""
        self.is_trained = False

    setup_anndata = staticmethod(setup_anndata)

    @property
    def config(self) -> ModuleConfig:
        """The module's hyperparameters."""
        return self.module.config

    def __repr__(self) -> str:
        cfg = self.config
        return (f"CiteVAE({self.registry.n_genes} genes, {cfg.n_targets} targets, "
                f"{cfg.n_programs} programs, likelihood={cfg.likelihood}, "
                f"trained={self.is_trained})")

    # training ------------------------------------------------------------------------------
    def train(self, max_epochs: int | None = None, split: Split | None = None,
              train_mask: np.ndarray | None = None, val_mask: np.ndarray | None = None,
              accelerator: str = "cpu", devices: int | str = 1, strategy: str = "auto",
              num_nodes: int = 1, checkpoint_dir: str | Path | None = None,
              progress_bar: bool = True, num_threads: int | None = None,
              resume: bool = False, **training: object) -> TrainingResult:
        """Fit the model (Lightning) on the training cells.

        Cells come from ``split`` ("train"/"val" sets) or the masks; by default a seeded 10% of
        the cells of each condition is held out for validation. ``training`` holds fields of
        ``TrainingConfig`` (learning_rate, seed, kl_warmup_epochs, ...). With ``checkpoint_dir``
        a checkpoint is written there after every epoch; ``resume=True`` continues an interrupted
        run from it (same data, split and settings) and ends with the weights of an
        uninterrupted run.
        """
        set_num_threads(num_threads)
        config = TrainingConfig(**{**training, **({"max_epochs": max_epochs} if max_epochs else {})})
        if split is not None:
            train_mask, val_mask = split.mask("train"), split.mask("val")
        if train_mask is None:
            rng = np.random.default_rng(config.seed)
            val_mask = rng.random(self.adata.n_obs) < 0.1
            train_mask = ~val_mask
        datamodule = CiteDataModule(self.adata, self.registry, np.asarray(train_mask, bool),
                                    None if val_mask is None else np.asarray(val_mask, bool),
                                    n_steps=self.config.n_steps,
                                    cells_per_group=config.cells_per_group,
                                    groups_per_batch=config.groups_per_batch, seed=config.seed,
                                    encoded=self._encoded)
        self.module.train()
        self.training_result = fit(self.module, datamodule, config, accelerator, devices,
                                   strategy, num_nodes, checkpoint_dir, progress_bar, resume)
        self.module.eval()
        self.module.cpu()
        self.training_config = config
        self.staged_config = None
        self.is_trained = True
        return self.training_result

    def train_staged(self, split: Split | None = None, train_mask: np.ndarray | None = None,
                     num_threads: int | None = None, **options: object) -> StagedResult:
        """Fit the model stage by stage instead of by the joint objective (``citevae.train.staged``).

        Programs come from sparse principal components of the training cells, the invariant
        state from the rest, the order of the programs from one fit without the acyclic
        constraint, the encoders and decoder by likelihood, and the mechanisms by matching each
        training condition's program mean and covariance. The numbers of programs and invariant
        dimensions are chosen from the data (``n_components``, ``n_programs`` fix them), so the
        module is rebuilt; it gets one drift for all conditions (``perturbed_drift`` False) and,
        for endpoint data, controls at step 0 (``stationary_control`` False). The training cells
        are held in memory. ``options`` are fields of ``StagedConfig``; cells come from the
        split's "train" set or ``train_mask`` (default: all cells). Measured on the count
        simulator's held-out pairs with ``CiteVAE(adata, linear_transition=True)`` on log1p data
        (README); predictions then start from each control cell's posterior mean
        (``predict(posterior_draws=...)``).
        """
        set_num_threads(num_threads)
        config = StagedConfig.from_dict(options)
        if split is not None:
            train_mask = split.mask("train")
        rows = np.arange(self.adata.n_obs) if train_mask is None else np.flatnonzero(
            np.asarray(train_mask, bool))
        encoded = self._encoded or self.registry.encode(self.adata, n_steps=self.config.n_steps)
        x, library, covariates = cell_tensors(self.registry, self.adata[rows])
        cells = StagedCells(
            x=x, log1p=self.module.normalise(x, library), library=library, covariates=covariates,
            targets=torch.from_numpy(encoded.targets[rows].toarray()).float(),
            steps=torch.from_numpy(encoded.steps[rows]), conditions=encoded.conditions[rows],
            is_control=encoded.is_control[rows])
        embedding = self.module.embedding

        def build_module(n_programs: int, n_invariant: int) -> CiteVAEModule:
            module_config = replace(self.config, n_programs=n_programs, n_invariant=n_invariant,
                                    perturbed_drift=False, stationary_control=False)
            return CiteVAEModule(module_config, embedding.descriptors, embedding.has_descriptor)

        self.module, result = fit_staged(cells, build_module, config)
        self.training_result = None
        self.staged_config = config
        self.is_trained = True
        return result

    # prediction ----------------------------------------------------------------------------
    def predict(self, controls: AnnData, perturbations: Sequence[str],
                times: Sequence | None = None, sample: bool = False,
                seed: int | None = None, relative: bool = False,
                posterior_draws: bool | None = None) -> AnnData:
        """Predict every control cell under every perturbation at every time.

        Args:
            controls: control cells (registered genes; covariate columns if registered).
            perturbations: condition labels, e.g. ["KLF1", "KLF1+MAP2K6"]; targets never seen in
                training need a descriptor (measured gene or a row of ``gene_features``).
            times: time labels (registered time key), default the latest observed label; without
                a time key, perturbed cells are predicted at step T.
            sample: False gives means (deterministic); True draws latent noise and counts.
            seed: seed of the draws when ``sample`` is True (recorded in ``uns``), and of the
                likelihood draws that estimate the "log1p" layer of count models otherwise
                (default 0, so means are deterministic).
            relative: add the model's predicted change of each cell to the cell's observed
                log1p-normalised profile, so the model's reconstruction error of the control cell
                cancels; the output is then on the log1p scale. The change is the prediction
                under the perturbation minus the prediction under control (same draws): at the
                same step for endpoint data (stationary controls, MODEL.md R1), at the cell's own
                step 0 for observed times (the change then includes the time course). With
                ``sample`` the latent draws vary per cell but the likelihood stays at its mean:
                the observed cell carries its own measurement noise.
            posterior_draws: with ``sample``, draw each control cell's (c, z_0) from the
                encoder's posterior (True) or take its mean (False). Default True, except for
                models fitted by ``train_staged``: their encoders are regressions onto the
                stage-1 components, whose spread is fitting error, not uncertainty about the cell.

        Returns:
            AnnData (n_controls * n_perturbations * n_times, G), genes in training order, ``obs``
            with perturbation, time, source control cell and covariates, the scale in
            ``uns["citevae"]["scale"]``; for count models a "log1p" layer of the expected
            log1p-normalised expression (comparable with log1p-normalised data) as well.
        """
        self._check_trained()
        rows = build_prediction_rows(self.registry, controls, perturbations, times,
                                     self.config.n_steps)
        targets, descriptors, has = self._target_codes(rows.perturbations)
        if seed is None:
            seed = int(torch.randint(2**62, ()).item()) if sample else 0
        if posterior_draws is None:
            posterior_draws = self.staged_config is None
        generator = torch.Generator().manual_seed(seed)
        x, library, covariates = cell_tensors(self.registry, controls)
        out, log1p = [], []
        self.module.eval()
        for start in range(0, len(rows.source), PREDICT_BATCH):
            block = slice(start, start + PREDICT_BATCH)
            source = torch.as_tensor(rows.source[block])
            codes = targets[torch.as_tensor(rows.perturbation_index[block])]
            steps = torch.as_tensor(rows.steps[block])
            runs = [(codes, steps)]
            if relative:
                reference_steps = steps if self.config.stationary_control else torch.zeros_like(steps)
                runs.append((torch.zeros_like(codes), reference_steps))
            state = generator.get_state()
            results = []
            for run_codes, run_steps in runs:
                generator.set_state(state)
                results.append(self.module.predict(
                    x[source], library[source], covariates[source], run_codes, run_steps,
                    sample=sample, generator=generator, descriptors=descriptors, has_descriptor=has,
                    observation_noise=not relative, posterior_draws=posterior_draws))
            if relative:
                observed = log1p_normalised(x[source].numpy(), self.registry.scale,
                                            self.config.library_scale)
                change = results[0]["log1p"].numpy() - results[1]["log1p"].numpy()
                shifted = observed + change
                if self.registry.scale != "continuous":
                    shifted = np.clip(shifted, 0.0, None)
                out.append(shifted)
                log1p.append(shifted)
            else:
                out.append(results[0]["expression"].numpy())
                log1p.append(results[0]["log1p"].numpy())
        registry = replace(self.registry, scale="log1p") if relative and \
            self.registry.scale == "counts" else self.registry
        prediction = predictions_to_anndata(np.concatenate(out), rows, controls, registry, sample,
                                            seed, log1p=np.concatenate(log1p))
        if relative:
            prediction.uns["citevae"]["description"] = (
                "observed control cell (log1p-normalised) + the model's predicted change"
                + ("; sampled" if sample else "; means (deterministic)"))
        return prediction

    def _target_codes(self, perturbations: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor,
                                                                  torch.Tensor]:
        """Multi-hot codes over known + new targets, and descriptors of all of them."""
        vocabulary = self.registry.vocabulary.extended(perturbations)
        new = list(vocabulary.targets[self.registry.vocabulary.n_targets:])
        values, has = self.descriptors.lookup(vocabulary.targets)
        lacking = [t for t, h in zip(new, has[len(has) - len(new):], strict=True) if not h]
        if lacking:
            raise VocabularyError(
                f"target gene(s) {format_names(lacking)} were never perturbed in training and "
                "have no descriptor (not a measured gene and not in gene_features); they cannot "
                "be predicted"
            )
        train_values, train_has = self.module.embedding.descriptors, self.module.embedding.has_descriptor
        values = np.concatenate([train_values.numpy(), values[len(train_values):]])
        has = np.concatenate([train_has.numpy(), has[len(train_has):]])
        codes = torch.from_numpy(vocabulary.multi_hot(perturbations).toarray())
        return codes, torch.from_numpy(values), torch.from_numpy(has)

    # latents and graph ---------------------------------------------------------------------
    def get_latent(self, adata: AnnData | None = None, inplace: bool = True
                   ) -> dict[str, np.ndarray] | None:
        """Posterior means of c (n_invariant) and z (n_programs) of every cell.

        With ``inplace`` they go to ``adata.obsm["citevae_c"]`` and ``["citevae_z"]``;
        otherwise a dict {"c": (N, m), "z": (N, n)} is returned.
        """
        self._check_trained()
        adata = self.adata if adata is None else adata
        c_parts, z_parts = [], []
        self.module.eval()
        with torch.no_grad():
            for x, library, covariates in iter_cell_tensors(self.registry, adata, PREDICT_BATCH):
                inf = self.module.inference(x, library, covariates, sample=False)
                c_parts.append(inf.c_mean.numpy())
                z_parts.append(inf.z_mean.numpy())
        latent = {"c": np.concatenate(c_parts), "z": np.concatenate(z_parts)}
        if not inplace:
            return latent
        adata.obsm["citevae_c"], adata.obsm["citevae_z"] = latent["c"], latent["z"]
        return None

    def trajectories(self, controls: AnnData, perturbation: str, n_steps: int | None = None
                     ) -> np.ndarray:
        """Mean latent path of each control cell under ``perturbation``: (cells, n_steps + 1, n).

        Step 0 is the encoded z_0; later steps follow the rollout with noise at its mean
        (``n_steps`` defaults to T, or to the latest observed step when time is registered).
        """
        self._check_trained()
        if n_steps is None:
            mapping = self.registry.time_mapping
            n_steps = mapping.max_step if mapping is not None else self.config.n_steps
        codes, descriptors, has = self._target_codes([perturbation])
        x, library, covariates = cell_tensors(self.registry, controls)
        with torch.no_grad():
            inf = self.module.inference(x, library, covariates, sample=False)
            u = self.module.embed(codes.expand(len(x), -1), descriptors, has)
            steps = torch.full((len(x),), n_steps, dtype=torch.long)
            path = self.module.dynamics.rollout(inf.z, u, steps, sample=False, return_path=True)
        return path.numpy()

    def aligned_programs(self, adata: AnnData | None = None, **options) -> Alignment:
        """The programs of every cell, aligned under the model's transition density.

        ``align_latents`` on the posterior means of z (``get_latent``), with the conditions, latent
        steps and lineages of ``adata`` and the model's ``lagged`` / ``instantaneous`` options: the
        full-batch stage that pins the orientation minibatch training leaves loose (an analysis
        of the latents; predictions do not use it). Needs lineages (a registered ``lineage_key``)
        with repeated observations, including control ones. ``options`` go to ``align_latents``
        (``warp_width``, ``n_starts``, ``n_iterations``, ``seed``).

        Returns:
            ``Alignment``: programs (cells, n_programs), the linear stage's map and the likelihood.
        """
        self._check_trained()
        adata = self.adata if adata is None else adata
        if self.registry.lineage_key is None:
            raise CiteVAEError("aligned_programs needs lineages (cells observed repeatedly): "
                               "register a lineage_key with setup_anndata")
        cells = self.registry.encode(adata, self.config.n_steps)
        z = self.get_latent(adata, inplace=False)["z"]
        return align_latents(z, cells.conditions, cells.previous, self.registry.control,
                             lagged=self.config.lagged, instantaneous=self.config.instantaneous,
                             **options)

    def causal_graph(self, perturbation: str) -> pd.DataFrame:
        """Lambda(u) of ``perturbation`` as an (n, n) DataFrame: entry [i, j] = weight of j -> i."""
        codes, descriptors, has = self._target_codes([perturbation])
        with torch.no_grad():
            u = self.module.embed(codes, descriptors, has)
            lam = self.module.dynamics.causal_matrix(u)[0].numpy()
        names = [f"z{i}" for i in range(self.config.n_programs)]
        return pd.DataFrame(lam, index=names, columns=names)

    def _check_trained(self) -> None:
        if not self.is_trained:
            raise CiteVAEError("the model is not trained yet; call model.train() first")

    # persistence ---------------------------------------------------------------------------
    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write weights (safetensors) and metadata (JSON) to the directory ``path``."""
        return io.save_model(self, path, overwrite)

    @classmethod
    def load(cls, path: str | Path, adata: AnnData | None = None) -> CiteVAE:
        """Load a model saved by ``save``; ``adata`` (optional) is checked against its registry."""
        return io.load_model(cls, path, adata)
