"""The ranking stage: a query and its candidates in, ranked indices and scores out; the strategy is a setting.

``strategy`` picks how the list is scored (see :data:`STRATEGIES`):
``pointwise`` (each pair on its own), ``pairwise`` (preferences between two
candidates, aggregated) or ``listwise`` (the whole list jointly: normalised
scores, optional diversity re-rank). Changing it is a change of one setting,
in Python (``Rank(..., strategy="pairwise")``) or in the pipeline file::

    - name: rank
      type: rank
      inputs: [query_embedding, candidate_embeddings, candidates]
      outputs: [ranking, scores]
      strategy: listwise        # pointwise | pairwise | listwise
      top_k: 5
      diversity: 0.3            # the strategy's own settings follow it

Inputs: the query embedding ``float32[-1,dim]``, the candidate embeddings
``float32[-1,-1,dim]`` (a list per request), and optionally the candidates'
text ``str[-1,-1]`` (or a ``bool[-1,-1]`` mask) that says which slots are real
(without it, an all-zero embedding is padding). Outputs, with ``k = top_k``:

* ``ranking int64[-1,k]``: indices into the request's own candidate list, best first;
  ``-1`` past the end of a list shorter than ``k``;
* ``scores float32[-1,k]``: the strategy's score of each ranked candidate
  (pointwise: similarity; pairwise: aggregated preference in [0, 1]; listwise:
  probability over the list); ``0`` where the ranking is ``-1``.

Each batch counts ``requests``, ``candidates`` and ``pairs`` (the pairs the
strategy compared: its cost that grows with the square of the list length).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np

from workbench.pipeline.stage import Stage, StageKind
from workbench.ranking.base import Strategy, candidate_mask, top_k
from workbench.ranking.costs import RankingCosts
from workbench.ranking.listwise import ListWise
from workbench.ranking.pairwise import PairWise
from workbench.ranking.pointwise import PointWise
from workbench.tensor import TensorSpec

__all__ = ["STRATEGIES", "Rank"]

#: The ranking strategies by the name ``strategy`` takes.
STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (PointWise, PairWise, ListWise)}


class Rank(Stage):
    """Rank each request's candidates for its query with a point-wise, pair-wise or list-wise strategy.

    Parameters
    ----------
    inputs
        Query embedding, candidate embeddings and, optionally, the candidates' text (or a mask).
    outputs
        Names of the ranked indices and of their scores.
    strategy
        ``"pointwise"``, ``"pairwise"`` or ``"listwise"``.
    top_k
        How many candidates each request gets back (>= 1).
    options
        The strategy's settings: ``temperature`` (pairwise, listwise), ``aggregate`` (pairwise),
        ``diversity`` (listwise).

    Examples
    --------
    >>> stage = Rank(["q", "c"], strategy="listwise", top_k=2, diversity=0.3)
    >>> q = np.array([[1.0, 0.0]], dtype=np.float32)
    >>> c = np.array([[[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]], dtype=np.float32)
    >>> stage.run(q, c)[0].tolist()
    [[1, 0]]
    """

    kind = StageKind.POSTPROCESS
    type_name = "rank"
    n_inputs = None
    n_outputs = 2
    counts = True

    def __init__(
        self, inputs: Sequence[str] = ("query_embedding", "candidate_embeddings"),
        outputs: Sequence[str] = ("ranking", "scores"), *, strategy: str = "pointwise", top_k: int = 10,
        name: str | None = None, **options: Any,
    ) -> None:
        super().__init__(inputs, outputs, name=name)
        if len(self.inputs) not in (2, 3):
            raise self.wiring_error(f"takes 2 or 3 inputs (query, candidates[, mask]), got {len(self.inputs)}")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {sorted(STRATEGIES)}, not {strategy!r}")
        if int(top_k) < 1:
            raise ValueError(f"top_k must be an integer >= 1, not {top_k!r}")
        self.top_k = int(top_k)
        settings = [p for p in inspect.signature(STRATEGIES[strategy]).parameters if p != "self"]
        unknown = sorted(set(options) - set(settings))
        if unknown:
            raise ValueError(f"strategy {strategy!r} has no setting {unknown[0]!r}; its settings: {settings}")
        self.strategy: Strategy = STRATEGIES[strategy](**options)

    def output_specs(self, inputs: Sequence[TensorSpec]) -> list[TensorSpec]:
        query, candidates, *rest = inputs
        self.expect(query, kinds="f", ndim=2, nan_ok=False)
        self.expect(candidates, kinds="f", ndim=3, nan_ok=False)
        width = (query.shape[1], candidates.shape[2]) if query.shape and candidates.shape else (-1, -1)
        if -1 not in width and width[0] != width[1]:
            raise self.wiring_error(f"candidates have {width[1]} dimensions where the query has {width[0]}",
                                    candidates.name)
        if rest:
            self.expect(rest[0], kinds="Ub", ndim=2)
        return [TensorSpec(self.outputs[0], "int64", (-1, self.top_k)),
                TensorSpec(self.outputs[1], "float32", (-1, self.top_k))]

    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        return self.run_counted(*arrays)[0]

    def run_counted(self, *arrays: np.ndarray) -> tuple[tuple[np.ndarray, ...], dict[str, int]]:
        query, candidates = arrays[0], arrays[1]
        mask = candidate_mask(candidates, arrays[2] if len(arrays) > 2 else None)
        if mask.shape != candidates.shape[:2]:
            raise ValueError(f"the mask has shape {list(mask.shape)} where the candidates have "
                             f"{list(candidates.shape[:2])}")
        scores, order, counts = self.strategy.rank(query, candidates, mask, self.top_k)
        ranked, ranked_scores = top_k(scores, mask, self.top_k, order)
        return (ranked, ranked_scores), {"requests": int(query.shape[0]), **counts}

    @property
    def strategy_name(self) -> str:
        return self.strategy.name

    def params(self) -> dict[str, Any]:
        return {"strategy": self.strategy.name, "top_k": self.top_k, **self.strategy.params()}

    def observers(self) -> dict[str, Any]:
        """A :class:`~workbench.ranking.costs.RankingCosts`: this stage's time against the list length."""
        key = "ranking" if self.name == "rank" else f"ranking/{self.name}"
        lists = self.inputs[2] if len(self.inputs) > 2 else None
        return {key: RankingCosts(self.name, self.strategy.name, candidates=lists, ranking=self.outputs[0])}
