"""Pair-wise ranking: a preference between every two candidates, aggregated into a ranking.

For each pair ``(i, j)`` of a request's list the pair model gives the
probability that ``i`` should rank above ``j`` (RankNet's form, over the two
candidates' similarity to the query)::

    P(i > j) = sigmoid(temperature * (s_i - s_j))

and the ranking comes from aggregating the preferences per candidate:
``"borda"`` (the mean preference against the others, a soft win rate) or
``"wins"`` (the share of comparisons won, Copeland). Cost: ``length * (length - 1)``
preferences per request, quadratic in the list length.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workbench.ranking.base import Strategy, StrategyResult, similarities

__all__ = ["AGGREGATIONS", "PairWise"]

#: How preferences become one score per candidate.
AGGREGATIONS = ("borda", "wins")


class PairWise(Strategy):
    """Compare every two candidates of a list; rank by the aggregated preferences.

    Parameters
    ----------
    temperature
        Sharpness of the pair model's preference (> 0).
    aggregate
        ``"borda"`` (mean preference) or ``"wins"`` (share of comparisons won).

    Examples
    --------
    >>> q = np.array([[1.0, 0.0]], dtype=np.float32)
    >>> c = np.array([[[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]]], dtype=np.float32)
    >>> scores, _, counts = PairWise(aggregate="wins").rank(q, c, np.ones((1, 3), dtype=bool), k=3)
    >>> scores.round(2).tolist(), counts["pairs"]
    ([[0.0, 1.0, 0.5]], 6)
    """

    name = "pairwise"

    def __init__(self, temperature: float = 20.0, aggregate: str = "borda") -> None:
        if not temperature > 0:
            raise ValueError(f"pairwise temperature must be > 0, not {temperature!r}")
        if aggregate not in AGGREGATIONS:
            raise ValueError(f"pairwise aggregate must be one of {AGGREGATIONS}, not {aggregate!r}")
        self.temperature = float(temperature)
        self.aggregate = aggregate

    def preferences(self, query: np.ndarray, candidates: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``P(i > j)`` for every pair of every row: ``[rows, length, length]`` (0 where either is padding)."""
        s = similarities(query, candidates)
        margin = self.temperature * (s[:, :, None] - s[:, None, :])
        preference = 1.0 / (1.0 + np.exp(-np.clip(margin, -60.0, 60.0)))
        pair = mask[:, :, None] & mask[:, None, :]
        np.einsum("rii->ri", pair)[...] = False  # NOTE: a candidate is not compared with itself
        return np.where(pair, preference, 0.0).astype(np.float32)

    def rank(self, query: np.ndarray, candidates: np.ndarray, mask: np.ndarray, k: int) -> StrategyResult:
        preference = self.preferences(query, candidates, mask)
        if self.aggregate == "wins":
            preference = (preference > 0.5).astype(np.float32)
        others = np.maximum(mask.sum(axis=1, keepdims=True) - 1, 0)
        totals = preference.sum(axis=2)
        # NOTE: a list of one has nothing to lose to: its candidate scores 1.
        scores = np.where(others > 0, totals / np.maximum(others, 1), 1.0).astype(np.float32)
        lengths = mask.sum(axis=1)
        return scores, None, {"candidates": int(lengths.sum()), "pairs": int((lengths * (lengths - 1)).sum())}

    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "aggregate": self.aggregate}
