"""Condition-grouped minibatches with matched control cells, as a Lightning data module.

A training step sees ``groups_per_batch`` condition groups. A group is up to ``cells_per_group``
real cells of one condition (perturbation x context x time step) plus as many control cells of
the same context drawn at random: the controls are the cells the model rolls forward under the
group's perturbation, and the distribution term compares those rollouts with the real cells.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scipy import sparse
from torch.utils.data import DataLoader, Dataset, Sampler

from citevae.data.registry import DataRegistry, EncodedCells
from citevae.data.validate import expression_matrix
from citevae.errors import DataValidationError

ROLE_SOURCE = 0
"""Row role: a control cell rolled forward under the group's perturbation."""
ROLE_TARGET = 1
"""Row role: a real cell of the group's condition."""
ROLE_PREVIOUS = 2
"""Row role: the previous observation of a target cell's lineage (paired data only), present so
the transition term can start from it; it enters no other term."""


@dataclass(frozen=True)
class ConditionGroup:
    """Cells of one condition (indices into the data) and the control pool of its context."""

    key: str
    cells: np.ndarray
    controls: np.ndarray


def condition_groups(encoded: EncodedCells, cells: np.ndarray, controls: np.ndarray) -> list[
    ConditionGroup
]:
    """Group ``cells`` (indices) by condition, context and step; match each group to ``controls``.

    Control pools hold the step-0 control cells of each context among ``controls``.
    """
    pools = {}
    at_start = controls[(encoded.steps[controls] == 0)]
    for context in np.unique(encoded.contexts[at_start]):
        pools[context] = at_start[encoded.contexts[at_start] == context]
    keys = np.array(
        [f"{c}@{x}@t{s}" for c, x, s in zip(encoded.conditions[cells], encoded.contexts[cells],
                                            encoded.steps[cells], strict=True)], dtype=object)
    groups = []
    for key, positions in sorted(pd.Series(keys).groupby(keys).indices.items()):
        members = cells[positions]
        context = encoded.contexts[members[0]]
        if context not in pools:
            raise DataValidationError(
                f"condition group {key!r} has no step-0 control cells of context {context!r} "
                "to be matched against"
            )
        groups.append(ConditionGroup(str(key), members, pools[context]))
    return groups


class ConditionBatchSampler(Sampler):
    """Yields batches as dicts of ``index``, ``group`` and ``role`` arrays (one row per cell).

    Each epoch shuffles the cells of every group, cuts them into chunks of ``cells_per_group``,
    pairs each chunk with as many random controls of its context, shuffles the chunks and packs
    ``groups_per_batch`` per batch. With ``world_size`` > 1 each rank takes every
    ``world_size``-th batch of the same permutation, truncated to equal counts, so ranks step
    together (DDP). A batch's controls are drawn with the seed of its index in the permutation,
    so every batch is the same whichever rank builds it and however many ranks there are.
    """

    def __init__(
        self,
        groups: list[ConditionGroup],
        cells_per_group: int = 128,
        groups_per_batch: int = 4,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not groups:
            raise DataValidationError("no condition groups to batch (is the training set empty?)")
        if cells_per_group < 1 or groups_per_batch < 1:
            raise DataValidationError("cells_per_group and groups_per_batch must be >= 1")
        self.groups = groups
        self.cells_per_group = cells_per_group
        self.groups_per_batch = groups_per_batch
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation of ``epoch`` (called by the training loop)."""
        self.epoch = epoch

    def _chunks(self, rng: np.random.Generator) -> list[tuple[int, np.ndarray]]:
        chunks = []
        for g, group in enumerate(self.groups):
            cells = rng.permutation(group.cells) if self.shuffle else group.cells
            for start in range(0, len(cells), self.cells_per_group):
                chunks.append((g, cells[start : start + self.cells_per_group]))
        if self.shuffle:
            chunks = [chunks[i] for i in rng.permutation(len(chunks))]
        return chunks

    def _batches(self) -> list[tuple[int, list[tuple[int, np.ndarray]]]]:
        """This rank's batches with their index in the epoch's permutation of batches."""
        rng = np.random.default_rng([self.seed, self.epoch])
        chunks = self._chunks(rng)
        batches = list(enumerate(chunks[i : i + self.groups_per_batch]
                                 for i in range(0, len(chunks), self.groups_per_batch)))
        per_rank = len(batches) // self.world_size if self.world_size > 1 else len(batches)
        return batches[self.rank :: self.world_size][:per_rank]

    def __len__(self) -> int:
        n_chunks = sum(-(-len(g.cells) // self.cells_per_group) for g in self.groups)
        n_batches = -(-n_chunks // self.groups_per_batch)
        return n_batches // self.world_size if self.world_size > 1 else n_batches

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for number, batch in self._batches():
            rng = np.random.default_rng([self.seed, self.epoch, number, 1])
            index, group, role = [], [], []
            for slot, (g, cells) in enumerate(batch):
                pool = self.groups[g].controls
                sources = rng.choice(pool, size=len(cells), replace=len(pool) < len(cells))
                index += [cells, sources]
                group += [np.full(2 * len(cells), slot)]
                role += [np.full(len(cells), ROLE_TARGET), np.full(len(cells), ROLE_SOURCE)]
            yield {"index": np.concatenate(index), "group": np.concatenate(group),
                   "role": np.concatenate(role)}


class CellDataset(Dataset):
    """Rows of the expression matrix with their codes, fetched a batch at a time.

    ``matrix`` may be dense, scipy sparse (CSC and COO are converted to CSR once) or an
    ``anndata`` backed dataset; only the requested rows are read. With lineages, each target
    cell's previous observation is appended (role ``ROLE_PREVIOUS``) if ``usable`` allows it, and
    ``previous`` gives its row in the batch (-1 otherwise).
    """

    def __init__(self, matrix, encoded: EncodedCells, usable: np.ndarray | None = None) -> None:
        if sparse.issparse(matrix) and not sparse.isspmatrix_csr(matrix):
            matrix = sparse.csr_matrix(matrix)
        self.matrix = matrix
        self.encoded = encoded
        self.targets = encoded.targets.tocsr()
        previous = encoded.previous.copy()
        if usable is not None:
            previous[(previous >= 0) & ~usable[np.maximum(previous, 0)]] = -1
        self.previous = previous

    def __len__(self) -> int:
        return self.matrix.shape[0]

    def rows(self, index: np.ndarray) -> np.ndarray:
        """Dense float32 rows (len(index), G) of the matrix."""
        order = np.argsort(index, kind="stable")
        sorted_index = index[order]
        unique, inverse = np.unique(sorted_index, return_inverse=True)
        block = self.matrix[unique]
        if sparse.issparse(block):
            block = block.toarray()
        elif hasattr(block, "to_memory"):
            block = block.to_memory()
            block = block.toarray() if sparse.issparse(block) else block
        block = np.asarray(block, dtype=np.float32)[inverse]
        out = np.empty_like(block)
        out[order] = block
        return out

    def __getitem__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        index, group, role = batch["index"], batch["group"], batch["role"]
        earlier = self.previous[index]
        needs = (earlier >= 0) & (role == ROLE_TARGET)
        previous = np.full(len(index) + int(needs.sum()), -1, dtype=np.int64)
        previous[np.flatnonzero(needs)] = len(index) + np.arange(int(needs.sum()))
        index = np.concatenate([index, earlier[needs]])
        group = np.concatenate([group, np.full(int(needs.sum()), -1)])
        role = np.concatenate([role, np.full(int(needs.sum()), ROLE_PREVIOUS)])
        encoded = self.encoded
        library = encoded.library[index] if encoded.library is not None else np.ones(len(index))
        return {
            "x": torch.from_numpy(self.rows(index)),
            "library": torch.as_tensor(library, dtype=torch.float32),
            "targets": torch.from_numpy(self.targets[index].toarray().astype(np.float32)),
            "step": torch.as_tensor(encoded.steps[index], dtype=torch.long),
            "covariates": torch.as_tensor(encoded.covariates[index], dtype=torch.long),
            "group": torch.as_tensor(group, dtype=torch.long),
            "role": torch.as_tensor(role, dtype=torch.long),
            "previous": torch.from_numpy(previous),
        }


class CiteDataModule(pl.LightningDataModule):
    """Training and validation batches of one registered AnnData (in memory or backed).

    Args:
        adata: the data, set up with ``setup_anndata``.
        registry: its registry.
        train_mask / val_mask: boolean masks over cells (e.g. ``split.mask("train")``).
        n_steps: latent step of perturbed cells when no time key is registered.
        cells_per_group / groups_per_batch: batch layout (see ``ConditionBatchSampler``).
        seed: seed of the batch order.
        num_workers: DataLoader worker processes (0: batches are built in the main process).
        encoded: ``registry.encode(adata, n_steps)`` if the caller has it already (encoding
            computes library sizes, one pass over the matrix).
    """

    def __init__(
        self,
        adata: AnnData,
        registry: DataRegistry,
        train_mask: np.ndarray,
        val_mask: np.ndarray | None = None,
        n_steps: int = 4,
        cells_per_group: int = 128,
        groups_per_batch: int = 4,
        seed: int = 0,
        num_workers: int = 0,
        encoded: EncodedCells | None = None,
    ) -> None:
        super().__init__()
        self.registry = registry
        self.encoded = registry.encode(adata, n_steps=n_steps) if encoded is None else encoded
        self.train_cells = np.flatnonzero(train_mask)
        self.val_cells = np.flatnonzero(val_mask) if val_mask is not None else np.zeros(0, int)
        matrix = expression_matrix(adata, registry.layer)
        seen = np.zeros(adata.n_obs, bool)
        seen[self.train_cells] = True
        self.dataset = CellDataset(matrix, self.encoded, usable=seen.copy())
        seen[self.val_cells] = True
        self.val_dataset = CellDataset(matrix, self.encoded, usable=seen)
        self.cells_per_group = cells_per_group
        self.groups_per_batch = groups_per_batch
        self.seed = seed
        self.num_workers = num_workers
        controls = np.flatnonzero(self.encoded.is_control)
        self.train_groups = condition_groups(
            self.encoded, self.train_cells, np.intersect1d(controls, self.train_cells))
        self.val_groups = condition_groups(
            self.encoded, self.val_cells,
            np.intersect1d(controls, np.union1d(self.train_cells, self.val_cells)),
        ) if len(self.val_cells) else []

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, groups: list[ConditionGroup], shuffle: bool, dataset: CellDataset) -> DataLoader:
        rank, world_size = self._rank()
        sampler = ConditionBatchSampler(groups, self.cells_per_group, self.groups_per_batch,
                                        shuffle=shuffle, seed=self.seed, rank=rank,
                                        world_size=world_size)
        return DataLoader(dataset, batch_size=None, sampler=sampler,
                          num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        """Shuffled condition-grouped batches of the training cells."""
        return self._loader(self.train_groups, shuffle=True, dataset=self.dataset)

    def val_dataloader(self) -> DataLoader | list:
        """Validation batches (seen perturbations only), in a fixed order."""
        if not self.val_groups:
            return []
        return self._loader(self.val_groups, shuffle=False, dataset=self.val_dataset)
