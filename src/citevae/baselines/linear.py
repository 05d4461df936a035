"""The linear baseline of Ahlmann-Eltze, Huber & Anders (2025).

Ahlmann-Eltze C., Huber W., Anders S. "Deep-learning-based gene perturbation effect prediction does
not yet outperform simple linear baselines." Nature Methods (2025).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from citevae.baselines.base import DEFAULT_N_STEPS, Baseline
from citevae.errors import DataValidationError


class Linear(Baseline):
    """Bilinear model of training deltas: Y ~ G W P^T, W by closed-form ridge regression.

    - Y (genes x perturbations): training deltas (condition mean - control mean) of one context.
    - G (genes x K): the genes' scores on the top-K principal components of the training expression
      matrix (genes x training (condition, context) mean profiles, controls included, gene-centred).
    - P (perturbations x D): a single target's embedding is its row of G when the gene is measured,
      concatenated with its row of ``gene_features`` (e.g. GO features) when that table is given
      (zeros for a missing part); a combination sums its targets' embeddings.
    - W = (G^T G + lambda I)^-1 G^T Y P (P^T P + lambda I)^-1; predicted delta = G W p.

    W is fitted per context with trained perturbations, and once on all contexts pooled (used for
    contexts with none). Targets without any embedding contribute nothing; a perturbation none of whose
    targets has an embedding predicts delta 0. The paper also adds the row means b of Y; set
    ``center=True`` for that variant (then a perturbation with no embedding still predicts 0).
    """

    name = "linear"

    def __init__(self, n_components: int = 10, ridge: float = 0.1,
                 gene_features: pd.DataFrame | None = None, center: bool = False,
                 n_steps: int = DEFAULT_N_STEPS) -> None:
        super().__init__(n_steps)
        if n_components < 1 or ridge < 0:
            raise DataValidationError(
                f"Linear needs n_components >= 1 and ridge >= 0, got {n_components} and {ridge}"
            )
        if gene_features is not None and (not isinstance(gene_features, pd.DataFrame)
                                          or gene_features.index.has_duplicates):
            raise DataValidationError("gene_features must be a DataFrame indexed by unique gene symbols")
        self.n_components, self.ridge, self.center = int(n_components), float(ridge), center
        self.gene_features = None if gene_features is None else gene_features.astype(np.float64)

    def _fit(self) -> None:
        means = self.stats.unit_means()
        profiles = [*means.values(), *self.stats.control.values()]
        matrix = np.stack(profiles, axis=1)
        matrix = matrix - matrix.mean(axis=1, keepdims=True)
        u, s, _ = np.linalg.svd(matrix, full_matrices=False)
        k = max(1, min(self.n_components, int((s > 1e-10 * max(s[0], 1e-300)).sum())))
        self.G = u[:, :k] * s[:k]
        self._gene_index = {g: i for i, g in enumerate(self.registry.var_names)}
        deltas = {key: d for key, d in self.stats.unit_deltas().items() if self._embed(key[0]) is not None}
        self.W: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for context in sorted({x for _, x in deltas}):
            self.W[context] = self._solve([(c, d) for (c, x), d in deltas.items() if x == context])
        self._pooled = self._solve([(c, d) for (c, _), d in deltas.items()]) if deltas else None

    def _solve(self, items: list[tuple[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """Ridge solution W (K, D) and offset b (G,) for (condition, delta) pairs."""
        Y = np.stack([d for _, d in items], axis=1)
        b = Y.mean(axis=1) if self.center else np.zeros(Y.shape[0])
        Y = Y - b[:, None]
        P = np.stack([self._embed(c) for c, _ in items])
        G, lam = self.G, self.ridge
        left = np.linalg.solve(G.T @ G + lam * np.eye(G.shape[1]), G.T @ Y @ P)
        W = np.linalg.solve(P.T @ P + lam * np.eye(P.shape[1]), left.T).T
        return W, b

    def _embed(self, condition: str) -> np.ndarray | None:
        """Summed embedding (D,) of a condition's targets; None if no target has one."""
        k = self.G.shape[1]
        width = k + (0 if self.gene_features is None else self.gene_features.shape[1])
        total, found = np.zeros(width), False
        for target in self.stats.targets(condition):
            if target in self._gene_index:
                total[:k] += self.G[self._gene_index[target]]
                found = True
            if self.gene_features is not None and target in self.gene_features.index:
                total[k:] += self.gene_features.loc[target].to_numpy()
                found = True
        return total if found else None

    def _delta(self, condition: str, context: str, step: int) -> np.ndarray:
        p = self._embed(condition)
        fitted = self.W.get(context, self._pooled)
        if p is None or fitted is None:
            return np.zeros(self.registry.n_genes)
        W, b = fitted
        return self.G @ W @ p + b
