"""How a ranking strategy's cost grows with the list length, watched on the live traffic.

:class:`RankingCosts` is an engine observer (``Deployment.observers``): after
each answered request it files the ranking stage's time under the length of
the request's candidate list, and :meth:`RankingCosts.report` gives, per
length, the number of requests and the median and mean stage time, plus the
time per candidate. The engine attaches one to every deployment with a
:class:`~workbench.ranking.stage.Rank` stage; ``stats(name)["ranking"]``
holds its report.

NOTE: a request's stage time is that of the batch it ran in. Under concurrent
traffic a batch holds lists of several lengths (padded to the longest), so the
figures are cleanest with one request at a time, which is how
``benchmarks/bench_ranking.py`` measures them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from workbench.ranking.base import real_items

__all__ = ["RankingCosts"]


class RankingCosts:
    """Ranking stage time (ms) by candidate-list length, over the last ``keep`` requests of each length.

    Parameters
    ----------
    stage
        The ranking stage's name (its key in the request timings).
    strategy
        The strategy it runs (reported as is).
    candidates
        The request tensor holding the candidates (their length is counted there); ``None``: the
        number of ranked indices is used (at most ``top_k``).
    ranking
        The output tensor of ranked indices.
    """

    def __init__(self, stage: str, strategy: str, *, candidates: str | None = None, ranking: str = "ranking",
                 keep: int = 1000) -> None:
        self.stage = stage
        self.strategy = strategy
        self.candidates = candidates
        self.ranking = ranking
        self.keep = keep
        self._by_length: dict[int, deque[float]] = {}

    def observe(self, tensors: Mapping[str, Any], prediction: Any) -> None:
        ms = prediction.timings_ms.get(self.stage)
        if ms is None:
            return
        lists = tensors.get(self.candidates) if self.candidates is not None else None
        if lists is not None and getattr(lists, "ndim", 0) == 2:
            length = int(real_items(lists).sum(axis=1).max())
        else:
            ranked = prediction.outputs.get(self.ranking)
            if ranked is None:
                return
            length = int((np.asarray(ranked) >= 0).sum(axis=1).max())
        samples = self._by_length.get(length)
        if samples is None:
            samples = self._by_length[length] = deque(maxlen=self.keep)
        samples.append(float(ms))

    def report(self) -> dict[str, Any]:
        by_length = {}
        for length, samples in sorted(self._by_length.items()):
            values = np.fromiter(samples, dtype=np.float64)
            median = float(np.median(values))
            by_length[length] = {"requests": int(values.size), "p50_ms": median, "mean_ms": float(values.mean()),
                                 "per_candidate_us": median * 1e3 / length if length else None}
        return {"stage": self.stage, "strategy": self.strategy, "by_length": by_length}
