"""The data registry: which AnnData keys hold what, validated, encoded and saved as JSON."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from citevae.data.time import TimeMapping, TimeMode
from citevae.data.validate import (
    ROW_CHUNK,
    Scale,
    check_anndata,
    check_expression,
    check_obs_key,
    expression_matrix,
)
from citevae.data.vocabulary import PerturbationVocabulary
from citevae.errors import DataValidationError, VocabularyError, format_names

logger = logging.getLogger(__name__)

UNS_KEY = "_citevae"
"""Where ``setup_anndata`` stores the registry (a JSON string) in ``adata.uns``."""

REGISTRY_VERSION = 1
NO_CONTEXT = "all"


@dataclass(frozen=True)
class DataRegistry:
    """Registered keys of an AnnData and the encodings learned from it.

    Attributes:
        perturbation_key: obs column of condition labels ("control", "A", "A+B").
        control: label of unperturbed cells.
        separator: separator of combination labels.
        time_key: obs column of time labels, or None (endpoints only, MODEL.md R1).
        covariate_keys: obs columns of categorical covariates; their joint value is the context
            within which perturbed cells are matched to control cells.
        layer: layer holding expression, or None for ``X``.
        scale: "counts" (negative binomial likelihood) or "log1p" (Gaussian likelihood).
        library_size_key: obs column of library sizes, or None (row sums of the counts).
        var_names: genes in training order.
        vocabulary: perturbation targets and conditions.
        time_mapping: time labels -> latent steps, or None.
        covariate_categories: categories of each covariate, in code order.
        lineage_key: obs column naming the individual a cell belongs to when the same individual
            is observed at several times (simulations, lineage tracing, imaging), or None
            (cells unpaired, as in sequencing).
    """

    perturbation_key: str
    control: str
    separator: str
    time_key: str | None
    covariate_keys: tuple[str, ...]
    layer: str | None
    scale: Scale
    library_size_key: str | None
    var_names: tuple[str, ...]
    vocabulary: PerturbationVocabulary
    time_mapping: TimeMapping | None
    covariate_categories: dict[str, tuple[str, ...]] = field(default_factory=dict)
    lineage_key: str | None = None

    @property
    def n_genes(self) -> int:
        """Number of genes."""
        return len(self.var_names)

    def to_dict(self) -> dict:
        """Plain JSON-ready dictionary."""
        return {
            "version": REGISTRY_VERSION,
            "perturbation_key": self.perturbation_key,
            "control": self.control,
            "separator": self.separator,
            "time_key": self.time_key,
            "covariate_keys": list(self.covariate_keys),
            "layer": self.layer,
            "scale": self.scale,
            "library_size_key": self.library_size_key,
            "var_names": list(self.var_names),
            "vocabulary": self.vocabulary.to_dict(),
            "time_mapping": self.time_mapping.to_dict() if self.time_mapping else None,
            "covariate_categories": {k: list(v) for k, v in self.covariate_categories.items()},
            "lineage_key": self.lineage_key,
        }

    @classmethod
    def from_dict(cls, data: dict) -> DataRegistry:
        """Inverse of ``to_dict``; refuses registries from a newer format version."""
        version = data.get("version")
        if version != REGISTRY_VERSION:
            raise DataValidationError(
                f"registry format version {version!r} is not supported (this citevae reads "
                f"version {REGISTRY_VERSION}); upgrade citevae or set the data up again"
            )
        return cls(
            perturbation_key=data["perturbation_key"],
            control=data["control"],
            separator=data["separator"],
            time_key=data["time_key"],
            covariate_keys=tuple(data["covariate_keys"]),
            layer=data["layer"],
            scale=data["scale"],
            library_size_key=data["library_size_key"],
            var_names=tuple(data["var_names"]),
            vocabulary=PerturbationVocabulary.from_dict(data["vocabulary"]),
            time_mapping=TimeMapping.from_dict(data["time_mapping"]) if data["time_mapping"] else None,
            covariate_categories={k: tuple(v) for k, v in data["covariate_categories"].items()},
            lineage_key=data.get("lineage_key"),
        )

    def to_json(self) -> str:
        """JSON text of ``to_dict``."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> DataRegistry:
        """Inverse of ``to_json``."""
        return cls.from_dict(json.loads(text))

    def check_genes(self, adata: AnnData) -> None:
        """Refuse an AnnData whose genes differ from the registered ones, naming the differences."""
        names = tuple(adata.var_names)
        if names == self.var_names:
            return
        missing = [g for g in self.var_names if g not in set(names)]
        extra = [g for g in names if g not in set(self.var_names)]
        if missing or extra:
            raise VocabularyError(
                f"the data's genes differ from the registered genes: {len(missing)} missing "
                f"({format_names(missing)}) and {len(extra)} unknown ({format_names(extra)}); "
                "subset the data to the registered genes (adata[:, registry.var_names])"
            )
        raise VocabularyError(
            "the data has the registered genes in another order; reorder it with "
            "adata[:, list(registry.var_names)]"
        )

    def encode(self, adata: AnnData, n_steps: int, allow_new_targets: bool = False) -> EncodedCells:
        """Encode every cell of ``adata`` with this registry (same genes and keys required).

        Args:
            adata: data with the registered genes and obs keys.
            n_steps: latent step of perturbed cells when there is no time key (MODEL.md R1).
            allow_new_targets: accept targets outside the vocabulary (prediction of unseen genes);
                they get multi-hot columns after the known targets.
        """
        check_anndata(adata)
        self.check_genes(adata)
        labels = check_obs_key(adata, self.perturbation_key, "perturbation").astype(str).to_numpy()
        vocabulary = self.vocabulary.extended(labels) if allow_new_targets else self.vocabulary
        vocabulary.check_known(labels, what=f"adata.obs[{self.perturbation_key!r}]")
        conditions = _canonical_conditions(labels, vocabulary)
        is_control = conditions == self.control
        if self.time_key is None:
            steps = np.where(is_control, 0, n_steps).astype(np.int64)
        else:
            column = check_obs_key(adata, self.time_key, "time")
            steps = self.time_mapping.step_of(column)
        codes = np.zeros((adata.n_obs, len(self.covariate_keys)), dtype=np.int64)
        for j, key in enumerate(self.covariate_keys):
            values = check_obs_key(adata, key, "covariate").astype(str)
            categories = self.covariate_categories[key]
            unknown = sorted(set(values) - set(categories))
            if unknown:
                raise VocabularyError(
                    f"covariate {key!r} has value(s) {format_names(unknown)} not seen at setup "
                    f"(known: {format_names(categories)})"
                )
            codes[:, j] = pd.Categorical(values, categories=categories).codes
        return EncodedCells(
            conditions=conditions,
            targets=vocabulary.multi_hot(labels),
            steps=steps,
            covariates=codes,
            contexts=self.contexts(adata),
            is_control=is_control,
            library=self.library_sizes(adata),
            target_names=vocabulary.targets,
            previous=self.previous_observations(adata, steps),
        )

    def contexts(self, adata: AnnData) -> np.ndarray:
        """Context label of every cell: joint covariate values joined by '|' ("all" if none)."""
        if not self.covariate_keys:
            return np.full(adata.n_obs, NO_CONTEXT, dtype=object)
        parts = [adata.obs[key].astype(str).to_numpy() for key in self.covariate_keys]
        return np.array(["|".join(values) for values in zip(*parts, strict=True)], dtype=object)

    def previous_observations(self, adata: AnnData, steps: np.ndarray) -> np.ndarray:
        """Index of each cell's previous observation of the same lineage (-1 if none), (n,)."""
        previous = np.full(adata.n_obs, -1, dtype=np.int64)
        if self.lineage_key is None:
            return previous
        lineages = check_obs_key(adata, self.lineage_key, "lineage").astype(str).to_numpy()
        order = np.lexsort((steps, lineages))
        same = lineages[order][1:] == lineages[order][:-1]
        repeated = same & (steps[order][1:] == steps[order][:-1])
        if repeated.any():
            cell = adata.obs_names[order[1:][repeated][0]]
            raise DataValidationError(
                f"lineage column {self.lineage_key!r} has two cells of one lineage at one time "
                f"(e.g. cell {cell!r}); each individual can be observed once per time"
            )
        previous[order[1:][same]] = order[:-1][same]
        return previous

    def library_sizes(self, adata: AnnData) -> np.ndarray | None:
        """Library size per cell (float32) for count data; None for log1p data."""
        if self.scale != "counts":
            return None
        if self.library_size_key is not None:
            sizes = check_obs_key(adata, self.library_size_key, "library size").to_numpy(float)
        else:
            matrix = expression_matrix(adata, self.layer)
            # row chunks: a backed matrix (anndata ``backed="r"``) has no ``sum`` and must not
            # be read whole
            sizes = np.concatenate([
                np.asarray(matrix[start : start + ROW_CHUNK].sum(axis=1)).ravel()
                for start in range(0, matrix.shape[0], ROW_CHUNK)])
        bad = np.flatnonzero(~np.isfinite(sizes) | (sizes <= 0))
        if bad.size:
            source = (f"adata.obs[{self.library_size_key!r}]" if self.library_size_key is not None
                      else "total counts")
            raise DataValidationError(
                f"{bad.size} cell(s) have a library size ({source}) that is zero, negative, NaN "
                f"or infinite, e.g. {format_names(adata.obs_names[bad].tolist(), 5)}; library "
                "sizes must be positive and finite (filter empty cells with "
                "sc.pp.filter_cells(adata, min_counts=1))"
            )
        return sizes.astype(np.float32)


@dataclass(frozen=True)
class EncodedCells:
    """Per-cell codes the data module and model consume (n = number of cells).

    Attributes:
        conditions: canonical condition label per cell, (n,) object.
        targets: multi-hot perturbation targets, CSR (n, n_targets).
        steps: latent step per cell, (n,) int64.
        covariates: covariate codes, (n, n_covariates) int64.
        contexts: joint covariate label per cell, (n,) object.
        is_control: (n,) bool.
        library: library sizes (n,) float32 for counts, else None.
        target_names: names of the multi-hot columns.
        previous: index of the previous observation of the same lineage, (n,) int64, -1 if none.
    """

    conditions: np.ndarray
    targets: sparse.csr_matrix
    steps: np.ndarray
    covariates: np.ndarray
    contexts: np.ndarray
    is_control: np.ndarray
    library: np.ndarray | None
    target_names: tuple[str, ...]
    previous: np.ndarray


def setup_anndata(
    adata: AnnData,
    perturbation_key: str,
    control: str,
    separator: str = "+",
    time_key: str | None = None,
    covariate_keys: Sequence[str] = (),
    layer: str | None = None,
    scale: Scale | str = "auto",
    library_size_key: str | None = None,
    time_mode: TimeMode | None = None,
    time_unit: float | None = None,
    lineage_key: str | None = None,
) -> DataRegistry:
    """Validate the keys and values of ``adata`` and register them.

    On success the registry is stored as JSON in ``adata.uns["_citevae"]`` (nothing else changes);
    on failure a ``DataValidationError`` names the problem and ``adata`` is left untouched.
    The expression scale is detected ("counts" if all values are integers, else "log1p") unless
    declared, and logged. ``lineage_key`` (needs ``time_key``) names the individual of each cell
    when individuals are observed at several times; training then uses each cell's own previous
    observation in the transition term.
    """
    check_anndata(adata)
    if not isinstance(separator, str) or not separator:
        raise DataValidationError(f"separator must be a non-empty string, got {separator!r}")
    if isinstance(covariate_keys, str):
        covariate_keys = (covariate_keys,)
    labels = check_obs_key(adata, perturbation_key, "perturbation")
    _check_label_types(labels, perturbation_key)
    labels = labels.astype(str)
    vocabulary = PerturbationVocabulary.from_labels(labels, control, separator)
    if control not in vocabulary.conditions:
        raise DataValidationError(
            f"no cell of adata.obs[{perturbation_key!r}] has the control label {control!r}; "
            f"labels include {format_names(vocabulary.conditions)}"
        )
    time_mapping = None
    if time_key is not None:
        time_mapping = TimeMapping.from_values(
            check_obs_key(adata, time_key, "time"), mode=time_mode, unit=time_unit, name=time_key
        )
    categories = {}
    for key in covariate_keys:
        values = check_obs_key(adata, key, "covariate").astype(str)
        categories[key] = tuple(sorted(values.unique()))
    if library_size_key is not None:
        check_obs_key(adata, library_size_key, "library size")
    if lineage_key is not None and time_key is None:
        raise DataValidationError("lineage_key needs a time_key: lineages are followed over time")
    detected, _ = check_expression(adata, layer, scale)
    registry = DataRegistry(
        perturbation_key=perturbation_key,
        control=control,
        separator=separator,
        time_key=time_key,
        covariate_keys=tuple(covariate_keys),
        layer=layer,
        scale=detected,
        library_size_key=library_size_key,
        var_names=tuple(adata.var_names),
        vocabulary=vocabulary,
        time_mapping=time_mapping,
        covariate_categories=categories,
        lineage_key=lineage_key,
    )
    _check_controls_per_context(adata, registry)
    if lineage_key is not None:
        registry.previous_observations(adata, time_mapping.step_of(adata.obs[time_key]))
    if library_size_key is not None:  # row sums were checked by check_expression already
        registry.library_sizes(adata)
    logger.info(
        "registered %d cells x %d genes; expression scale: %s (%s); %d targets, %d conditions",
        adata.n_obs, adata.n_vars, detected, "declared" if scale != "auto" else "detected",
        vocabulary.n_targets, len(vocabulary.conditions),
    )
    adata.uns[UNS_KEY] = registry.to_json()
    return registry


def get_registry(adata: AnnData) -> DataRegistry:
    """The registry that ``setup_anndata`` stored in ``adata``."""
    if UNS_KEY not in adata.uns:
        raise DataValidationError(
            "this AnnData has not been set up; call setup_anndata(adata, perturbation_key=..., "
            "control=...) first"
        )
    return DataRegistry.from_json(str(adata.uns[UNS_KEY]))


def _check_label_types(labels: pd.Series, key: str) -> None:
    values = labels.cat.categories if isinstance(labels.dtype, pd.CategoricalDtype) else labels
    not_text = [v for v in pd.unique(np.asarray(values, dtype=object)) if not isinstance(v, str)]
    if not_text:
        raise DataValidationError(
            f"perturbation column {key!r} holds non-text label(s) {format_names(not_text)}; "
            "labels must be strings such as 'control', 'GENE' or 'GENE1+GENE2'"
        )


def _canonical_conditions(labels: np.ndarray, vocabulary: PerturbationVocabulary) -> np.ndarray:
    uniques, inverse = np.unique(labels, return_inverse=True)
    canonical = np.array([vocabulary.canonical(label) for label in uniques], dtype=object)
    return canonical[inverse]


def _check_controls_per_context(adata: AnnData, registry: DataRegistry) -> None:
    labels = adata.obs[registry.perturbation_key].astype(str).to_numpy()
    contexts = registry.contexts(adata)
    control = _canonical_conditions(labels, registry.vocabulary) == registry.control
    lacking = sorted(set(contexts[~control]) - set(contexts[control]))
    if lacking:
        raise DataValidationError(
            f"no control cells in context(s) {format_names(lacking)} of covariates "
            f"{list(registry.covariate_keys)}; every context with perturbed cells needs control "
            "cells of its own to be matched against"
        )
