"""List-wise ranking: the whole candidate list scored jointly.

Scores are normalised over the list (a softmax of the similarities with a
temperature: they sum to 1 over a request's own candidates, so they read as
"which of these is it"), and the order may be re-ranked for diversity with
maximal marginal relevance (MMR, Carbonell and Goldstein 1998): each next pick
maximises ``(1 - diversity) * relevance - diversity * (most similar already picked)``,
which needs the candidates' similarities to each other. With ``diversity=0``
the order is by score. Cost: the list's ``length * length`` similarity matrix
(quadratic) plus ``k`` greedy steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workbench.ranking.base import Strategy, StrategyResult, similarities

__all__ = ["ListWise"]


class ListWise(Strategy):
    """Normalise the scores over the list; optionally re-rank the top ``k`` for diversity (MMR).

    Parameters
    ----------
    temperature
        Sharpness of the softmax over the list (> 0).
    diversity
        Weight of redundancy in the MMR re-rank, in ``[0, 1)``; 0 ranks by score alone.

    Examples
    --------
    >>> q = np.array([[1.0, 0.0]], dtype=np.float32)
    >>> c = np.array([[[0.0, 1.0], [1.0, 0.0]]], dtype=np.float32)
    >>> scores, order, _ = ListWise(temperature=1.0).rank(q, c, np.ones((1, 2), dtype=bool), k=2)
    >>> round(float(scores.sum()), 5), order is None, scores.argmax()
    (1.0, True, np.int64(1))
    """

    name = "listwise"

    def __init__(self, temperature: float = 10.0, diversity: float = 0.0) -> None:
        if not temperature > 0:
            raise ValueError(f"listwise temperature must be > 0, not {temperature!r}")
        if not 0.0 <= diversity < 1.0:
            raise ValueError(f"listwise diversity must be in [0, 1), not {diversity!r}")
        self.temperature = float(temperature)
        self.diversity = float(diversity)

    def rank(self, query: np.ndarray, candidates: np.ndarray, mask: np.ndarray, k: int) -> StrategyResult:
        relevance = similarities(query, candidates)
        logits = np.where(mask, self.temperature * relevance, -np.inf)
        top = np.max(logits, axis=1, keepdims=True)
        weights = np.where(mask, np.exp(logits - np.where(np.isfinite(top), top, 0.0)), 0.0)
        total = weights.sum(axis=1, keepdims=True)
        scores = (weights / np.where(total > 0, total, 1.0)).astype(np.float32)
        lengths = mask.sum(axis=1)
        counts = {"candidates": int(lengths.sum()), "pairs": 0}
        if self.diversity == 0.0:
            return scores, None, counts
        counts["pairs"] = int((lengths * lengths).sum())
        return scores, self._mmr(relevance, candidates, mask, k), counts

    def _mmr(self, relevance: np.ndarray, candidates: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
        """Greedy MMR order of the first ``k`` picks per row (the rest follow by relevance)."""
        rows, length = mask.shape
        similarity = np.einsum("rid,rjd->rij", candidates, candidates, optimize=True)
        redundancy = np.full((rows, length), -np.inf, dtype=np.float64)
        free = mask.copy()
        picked = np.zeros((rows, length), dtype=bool)
        picks = np.zeros((rows, min(k, length)), dtype=np.int64)
        index = np.arange(rows)
        for step in range(picks.shape[1]):
            penalty = np.where(np.isfinite(redundancy), redundancy, 0.0)
            value = (1.0 - self.diversity) * relevance - self.diversity * penalty
            choice = np.argmax(np.where(free, value, -np.inf), axis=1)
            # NOTE: a row whose own list ran out takes a padding slot it has not taken yet (top_k masks it as -1).
            spent = ~free.any(axis=1)
            choice[spent] = np.argmax(~picked[spent], axis=1)
            picks[:, step] = choice
            free[index, choice] = False
            picked[index, choice] = True
            redundancy = np.maximum(redundancy, similarity[index, choice])
        # NOTE: the slots not picked follow, real candidates by relevance, then padding.
        key = np.where(picked, -np.inf, np.where(mask, relevance, -1e30))
        rest = np.argsort(-key, axis=1, kind="stable")[:, : length - picks.shape[1]]
        return np.concatenate([picks, rest], axis=1)

    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "diversity": self.diversity}
