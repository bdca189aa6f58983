"""What the three ranking strategies share: the candidate mask, the strategy interface, top-k.

A ranking stage gets, per request row, one query embedding ``[rows, dim]`` and
a list of candidate embeddings ``[rows, length, dim]``. Lists of different
lengths share a batch padded to the longest (the batcher pads text with ``""``,
the cached encoder turns padding into zero vectors), so every strategy works
under a mask ``[rows, length]`` of the real candidates: a padded slot is never
scored, never ranked and never returned, and a request only ever sees indices
into its own list.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np

__all__ = ["Strategy", "StrategyResult", "candidate_mask", "real_items", "similarities", "top_k"]

#: What a strategy returns: the score per candidate, the order to rank them in (best first; ``None``:
#: by score), and counts of what it did (``candidates``, ``pairs``: the cost that grows with the list).
StrategyResult = tuple[np.ndarray, np.ndarray | None, dict[str, int]]


class Strategy(abc.ABC):
    """One way of turning a query and its candidates into a ranking."""

    name: ClassVar[str]

    @abc.abstractmethod
    def rank(self, query: np.ndarray, candidates: np.ndarray, mask: np.ndarray, k: int) -> StrategyResult:
        """Score ``candidates [rows, length, dim]`` for ``query [rows, dim]`` where ``mask`` is true.

        ``k`` is how many will be returned (a strategy that re-ranks may stop there).
        """

    def params(self) -> dict[str, Any]:
        """The strategy's settings as plain data (written in the pipeline file next to ``strategy``)."""
        return {}


def candidate_mask(candidates: np.ndarray, given: np.ndarray | None = None) -> np.ndarray:
    """Which slots hold a real candidate: from ``given`` (the candidates' text, or a bool mask), else non-zero rows.

    Text: a non-empty ``str`` is a candidate; ``""`` (what the batcher pads a shorter list with) is not.
    """
    if given is None:
        return np.asarray(np.any(candidates != 0, axis=-1), dtype=bool)
    return real_items(given)


def real_items(given: np.ndarray) -> np.ndarray:
    """Which slots of ``given`` (candidates' text, a bool mask, or ids) hold a real item rather than padding."""
    if given.dtype == bool:
        return np.asarray(given, dtype=bool)
    if given.dtype.kind == "O" or given.dtype.kind == "U":
        flat = [isinstance(item, str) and item != "" for item in given.reshape(-1).tolist()]
        return np.array(flat, dtype=bool).reshape(given.shape)
    return np.asarray(given != 0, dtype=bool)


def top_k(scores: np.ndarray, mask: np.ndarray, k: int, order: np.ndarray | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` candidates per row: indices ``int64 [rows, k]`` and their scores ``float32 [rows, k]``.

    ``order`` (best first, per row) overrides the order by score. Past a row's own list
    the index is ``-1`` and the score ``0``.
    """
    rows = mask.shape[0]
    if order is None:
        # NOTE: stable, on -score with padding at -inf: ties keep the list's order, and padding comes last.
        keyed = np.where(mask, scores, -np.inf)
        order = np.argsort(-keyed, axis=1, kind="stable")
    order = order[:, :k]
    ranked = np.full((rows, k), -1, dtype=np.int64)
    ranked_scores = np.zeros((rows, k), dtype=np.float32)
    width = order.shape[1]
    valid = np.take_along_axis(mask, order, axis=1)
    ranked[:, :width] = np.where(valid, order, -1)
    ranked_scores[:, :width] = np.where(valid, np.take_along_axis(scores, order, axis=1), 0.0)
    return ranked, ranked_scores


def similarities(query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Cosine similarity of each candidate to its row's query (the embeddings are normalised): ``[rows, length]``."""
    return np.asarray(np.einsum("rd,rld->rl", query, candidates, optimize=True))
