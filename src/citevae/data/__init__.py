"""Data layer: register AnnData keys, encode perturbations and time, split, batch."""

from citevae.data.batching import CiteDataModule, ConditionBatchSampler, condition_groups
from citevae.data.registry import DataRegistry, EncodedCells, get_registry, setup_anndata
from citevae.data.splits import (
    Split,
    split_combinations,
    split_context,
    split_from_column,
    split_simulation,
    split_time,
)
from citevae.data.time import TimeMapping
from citevae.data.vocabulary import PerturbationVocabulary, canonical_label, parse_condition

__all__ = [
    "CiteDataModule",
    "ConditionBatchSampler",
    "DataRegistry",
    "EncodedCells",
    "PerturbationVocabulary",
    "Split",
    "TimeMapping",
    "canonical_label",
    "condition_groups",
    "get_registry",
    "parse_condition",
    "setup_anndata",
    "split_combinations",
    "split_context",
    "split_from_column",
    "split_simulation",
    "split_time",
]
