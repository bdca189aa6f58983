"""Ranking as pipeline stages: point-wise, pair-wise and list-wise strategies behind one setting.

* :mod:`~workbench.ranking.pointwise`: each (query, candidate) scored independently,
  the pairs of every request in a batch scored together;
* :mod:`~workbench.ranking.pairwise`: a preference between two candidates, aggregated into a ranking;
* :mod:`~workbench.ranking.listwise`: the whole list scored jointly (normalised scores, top-k,
  a diversity re-rank);
* :mod:`~workbench.ranking.stage`: :class:`Rank`, the stage that runs one of them (``type: rank``);
* :mod:`~workbench.ranking.costs`: :class:`RankingCosts`, the stage time against the list length.

The ``search`` demo (:mod:`workbench.demo.search`) puts them behind MiniLM embeddings.
"""

from __future__ import annotations

from workbench.ranking.base import Strategy, candidate_mask, top_k
from workbench.ranking.costs import RankingCosts
from workbench.ranking.listwise import ListWise
from workbench.ranking.pairwise import PairWise
from workbench.ranking.pointwise import PointWise
from workbench.ranking.stage import STRATEGIES, Rank

__all__ = ["STRATEGIES", "ListWise", "PairWise", "PointWise", "Rank", "RankingCosts", "Strategy", "candidate_mask",
           "top_k"]
