"""Point-wise ranking: each (query, candidate) pair scored on its own, then sorted.

The pairs of every request in the batch are gathered into one flat batch and
scored in one call, so candidates of many requests share the scorer's work;
padding slots are left out before scoring, not after. The score is the
similarity of the two embeddings (a dot product: the cosine for the normalised
MiniLM embeddings). Cost: one score per candidate, linear in the list length.
"""

from __future__ import annotations

import numpy as np

from workbench.ranking.base import Strategy, StrategyResult

__all__ = ["PointWise"]


class PointWise(Strategy):
    """Score every (query, candidate) pair independently; rank by score.

    Examples
    --------
    >>> q = np.array([[1.0, 0.0]], dtype=np.float32)
    >>> c = np.array([[[0.0, 1.0], [1.0, 0.0]]], dtype=np.float32)
    >>> scores, order, counts = PointWise().rank(q, c, np.ones((1, 2), dtype=bool), k=2)
    >>> scores.tolist(), counts["candidates"]
    ([[0.0, 1.0]], 2)
    """

    name = "pointwise"

    def rank(self, query: np.ndarray, candidates: np.ndarray, mask: np.ndarray, k: int) -> StrategyResult:
        rows, cols = np.nonzero(mask)
        # NOTE: one flat batch of the real pairs of all requests: what a cross-encoder would be fed.
        pair_scores = np.einsum("nd,nd->n", query[rows], candidates[rows, cols], optimize=True)
        scores = np.zeros(mask.shape, dtype=np.float32)
        scores[rows, cols] = pair_scores
        return scores, None, {"candidates": int(rows.size), "pairs": 0}
