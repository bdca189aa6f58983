"""Requests made for the demo pipelines carry the demos' own data."""

from __future__ import annotations

from pathlib import Path

from workbench.demo import demo_pipeline
from workbench.demo.catalogue import PASSAGES, QUERIES
from workbench.traffic import request_maker


def test_search_requests_hold_catalogue_queries_with_their_relevant_passage_among_the_candidates(
        demo_home: Path) -> None:
    make = request_maker(demo_pipeline("search", demo_home, load=False), seed=3)
    relevant = {query: PASSAGES[index][1] for query, index in QUERIES}
    passages = {text for _, text in PASSAGES}
    for _ in range(20):
        request = make(4)
        assert request["query"].shape == (4,) and request["candidates"].shape == (4, 8)
        for query, candidates in zip(request["query"], request["candidates"]):
            assert relevant[query] in candidates
            assert len(set(candidates)) == 8 and set(candidates) <= passages
    # NOTE: the relevant passage is not always in the same place, which a ranker could learn to game.
    positions = {list(c).index(relevant[q]) for _ in range(10) for q, c in zip(*make(4).values())}
    assert len(positions) > 1
