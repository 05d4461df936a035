"""Perturbation vocabulary: condition labels <-> sets of target genes, saved as plain JSON."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse

from citevae.errors import DataValidationError, VocabularyError, format_names


def parse_condition(label: str, control: str, separator: str = "+") -> frozenset[str]:
    """Parse one condition label into its set of target genes (the control label gives the empty set).

    ``"A+B"`` and ``"B+A"`` give the same set. Empty labels and empty components (``"A+"``) are refused.
    """
    if not isinstance(label, str):
        raise DataValidationError(
            f"perturbation label {label!r} is not a string; perturbation labels must be strings "
            f"such as {control!r}, 'GENE' or 'GENE1{separator}GENE2'"
        )
    text = label.strip()
    if text == control:
        return frozenset()
    if not text:
        raise DataValidationError(
            "empty perturbation label found; label every cell with a target gene, a combination "
            f"('A{separator}B') or the control label {control!r}"
        )
    parts = [part.strip() for part in text.split(separator)]
    if any(not part for part in parts):
        raise DataValidationError(
            f"perturbation label {label!r} has an empty component around separator {separator!r}"
        )
    if control in parts:
        raise DataValidationError(
            f"perturbation label {label!r} combines the control label {control!r} with targets; "
            "write combinations of target genes only"
        )
    return frozenset(parts)


def canonical_label(targets: Iterable[str], control: str, separator: str = "+") -> str:
    """Canonical label of a set of targets: sorted names joined by ``separator``; control if empty."""
    names = sorted(targets)
    return separator.join(names) if names else control


@dataclass(frozen=True)
class PerturbationVocabulary:
    """Target genes seen in a dataset and the conditions (target sets) built from them.

    Attributes:
        control: label of unperturbed cells.
        separator: separator of combination labels.
        targets: sorted target gene names; index k is the column of target k in multi-hot codes.
        conditions: sorted canonical condition labels observed (control included).
    """

    control: str
    separator: str
    targets: tuple[str, ...]
    conditions: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {name: k for k, name in enumerate(self.targets)})

    @classmethod
    def from_labels(
        cls, labels: Iterable[str], control: str, separator: str = "+"
    ) -> PerturbationVocabulary:
        """Build the vocabulary of the distinct condition labels in ``labels``."""
        sets = {parse_condition(label, control, separator) for label in set(labels)}
        targets = sorted(set().union(*sets)) if sets else []
        conditions = sorted({canonical_label(s, control, separator) for s in sets})
        return cls(control, separator, tuple(targets), tuple(conditions))

    @property
    def n_targets(self) -> int:
        """Number of distinct target genes."""
        return len(self.targets)

    def parse(self, label: str) -> frozenset[str]:
        """Target set of ``label`` (no check against the vocabulary)."""
        return parse_condition(label, self.control, self.separator)

    def canonical(self, label: str) -> str:
        """Canonical form of ``label`` (sorted targets)."""
        return canonical_label(self.parse(label), self.control, self.separator)

    def unknown_targets(self, labels: Iterable[str]) -> list[str]:
        """Sorted target genes named in ``labels`` that the vocabulary does not know."""
        named = set().union(*(self.parse(label) for label in set(labels)), set())
        return sorted(named - set(self.targets))

    def check_known(self, labels: Iterable[str], what: str = "data") -> None:
        """Raise ``VocabularyError`` naming every target in ``labels`` that is not in the vocabulary."""
        unknown = self.unknown_targets(labels)
        if unknown:
            raise VocabularyError(
                f"{what} names {len(unknown)} perturbation target(s) absent from the vocabulary: "
                f"{format_names(unknown)}; known targets: {format_names(list(self.targets))}"
            )

    def multi_hot(self, labels: Sequence[str]) -> sparse.csr_matrix:
        """Encode labels as a CSR matrix (len(labels), n_targets) of 0/1; refuses unknown targets."""
        labels = list(labels)
        self.check_known(labels)
        codes, uniques = pd.factorize(pd.Index(labels, dtype=object))
        rows, cols = [], []
        for code, label in enumerate(uniques):
            members = np.flatnonzero(codes == code)
            for target in self.parse(label):
                rows.append(members)
                cols.append(np.full(members.size, self._index[target]))
        row = np.concatenate(rows) if rows else np.zeros(0, dtype=int)
        col = np.concatenate(cols) if cols else np.zeros(0, dtype=int)
        data = np.ones(row.size, dtype=np.float32)
        return sparse.csr_matrix((data, (row, col)), shape=(len(labels), self.n_targets))

    def extended(self, labels: Iterable[str]) -> PerturbationVocabulary:
        """A vocabulary with the targets and conditions of ``labels`` appended (new targets last)."""
        labels = list(labels)
        new_targets = self.unknown_targets(labels)
        conditions = sorted(set(self.conditions) | {self.canonical(label) for label in labels})
        return PerturbationVocabulary(
            self.control, self.separator, self.targets + tuple(new_targets), tuple(conditions)
        )

    def to_dict(self) -> dict:
        """Plain JSON-ready dictionary."""
        return {
            "control": self.control,
            "separator": self.separator,
            "targets": list(self.targets),
            "conditions": list(self.conditions),
        }

    @classmethod
    def from_dict(cls, data: dict) -> PerturbationVocabulary:
        """Inverse of ``to_dict``."""
        return cls(
            data["control"], data["separator"], tuple(data["targets"]), tuple(data["conditions"])
        )
