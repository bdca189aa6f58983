"""The ``search`` demo over real HTTP: BYTES tensors in, the same clear answer from all three ranking strategies.

One server runs the demo pipeline (point-wise, from its file) and two copies
built with the other strategies, in the server process (where batches run
does not change the ranking). The catalogue is the demo's own file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from loopback import LiveServer, live_server

from workbench.demo.catalogue import load_catalogue
from workbench.demo.search import CATALOGUE_FILE, search_pipeline
from workbench.models import ModelRepository
from workbench.serving.app import ServeConfig
from workbench.serving.server import engine_factory

# NOTE: FastAPI 0.165 deprecates ORJSONResponse, which the app still uses (see test_metrics_http.py).
pytestmark = pytest.mark.filterwarnings("ignore::fastapi.exceptions.FastAPIDeprecationWarning")

DEPLOYMENTS = {"search": "pointwise", "search-pairwise": "pairwise", "search-listwise": "listwise"}
TOP_K = 5


@pytest.fixture(scope="module")
def catalogue(demo_home: Path) -> dict[str, Any]:
    return load_catalogue(demo_home / "pipelines" / CATALOGUE_FILE)


@pytest.fixture(scope="module")
def server(demo_home: Path, repository: ModelRepository) -> Iterator[LiveServer]:
    targets = ["search", search_pipeline(repository, strategy="pairwise", name="search-pairwise"),
               search_pipeline(repository, strategy="listwise", diversity=0.3, name="search-listwise")]
    with live_server(engine_factory(None, 0, inprocess=True), ServeConfig(targets=targets)) as live:
        yield live


def search_request(query: str, candidates: list[str]) -> dict[str, Any]:
    return {"inputs": [{"name": "query", "datatype": "BYTES", "shape": [1], "data": [query]},
                       {"name": "candidates", "datatype": "BYTES", "shape": [1, len(candidates)], "data": candidates}]}


def outputs(response: httpx.Response) -> dict[str, dict[str, Any]]:
    assert response.status_code == 200, response.text
    return {o["name"]: o for o in response.json()["outputs"]}


def passages(catalogue: dict[str, Any]) -> list[str]:
    return [p["text"] for p in catalogue["passages"]]


def test_every_strategy_ranks_the_clear_answer_first_with_the_documented_shapes(
        server: LiveServer, catalogue: dict[str, Any]) -> None:
    texts = passages(catalogue)
    with httpx.Client(base_url=server.url, timeout=120) as http:
        for name in DEPLOYMENTS:
            for item in catalogue["queries"]:
                answer = outputs(http.post(f"/v2/models/{name}/infer", json=search_request(item["query"], texts)))
                ranking, scores = answer["ranking"], answer["scores"]
                assert (ranking["datatype"], ranking["shape"]) == ("INT64", [1, TOP_K])
                assert (scores["datatype"], scores["shape"]) == ("FP32", [1, TOP_K])
                assert ranking["data"][0] == item["answer"], (name, item["query"])
                assert len(set(ranking["data"])) == TOP_K and all(0 <= i < len(texts) for i in ranking["data"])
    assert sum(scores["data"]) <= 1.0 + 1e-5  # the last one is list-wise: probabilities over the list


async def test_lists_of_different_lengths_batched_together_each_get_their_own_ranking(
        server: LiveServer, catalogue: dict[str, Any]) -> None:
    texts = passages(catalogue)
    item = catalogue["queries"][0]
    others = [t for i, t in enumerate(texts) if i != item["answer"]]
    # NOTE: lists of 2 to 12 passages with the answer at a different place in each, sent at once.
    lists = [[*others[:length - 1 - place], texts[item["answer"]], *others[length - 1 - place:length - 1]]
             for length, place in ((2, 0), (3, 2), (5, 1), (8, 7), (12, 4), (4, 3))]
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
        for name in DEPLOYMENTS:
            together = await asyncio.gather(*(http.post(f"/v2/models/{name}/infer",
                                                        json=search_request(item["query"], candidates))
                                              for candidates in lists))
            for candidates, response in zip(lists, together):
                ranking = outputs(response)["ranking"]["data"]
                own = [i for i in ranking if i >= 0]
                assert candidates[own[0]] == texts[item["answer"]], name
                assert len(own) == min(len(candidates), TOP_K) and all(i < len(candidates) for i in own)
                assert ranking[len(own):] == [-1] * (TOP_K - len(own))
                alone = outputs(await http.post(f"/v2/models/{name}/infer",
                                                json=search_request(item["query"], candidates)))["ranking"]["data"]
                assert alone == ranking


def test_the_catalogue_is_encoded_once_then_served_from_the_feature_cache(
        server: LiveServer, catalogue: dict[str, Any]) -> None:
    texts = passages(catalogue)
    queries = [item["query"] for item in catalogue["queries"]]
    with httpx.Client(base_url=server.url, timeout=120) as http:
        outputs(http.post("/v2/models/search/infer", json=search_request(queries[0], texts)))  # the catalogue is warm
        before = {name: server.engine.stats(name)["feature_cache"]["embed_candidates"] for name in DEPLOYMENTS}
        for name in DEPLOYMENTS:
            for query in queries:
                outputs(http.post(f"/v2/models/{name}/infer", json=search_request(query, texts)))
        after = {name: server.engine.stats(name)["feature_cache"]["embed_candidates"] for name in DEPLOYMENTS}
        metrics = http.get("/metrics").text
    for name in DEPLOYMENTS:
        # NOTE: every deployment reads the one process-wide cache: no passage is encoded again, by any of them.
        assert after[name]["computed"] == before[name]["computed"], name
        assert after[name]["hits"] - before[name]["hits"] == len(queries) * len(texts)
        assert after[name]["cache"] == "minilm-fp32" and after[name]["hit_rate"] > 0.5
    assert 'workbench_feature_cache_hit_ratio{pipeline="search-pairwise",stage="embed_candidates"}' in metrics
    assert 'workbench_stage_events_total{event="hits",pipeline="search",stage="embed_candidates"}' in metrics


def test_stats_show_each_strategy_cost_against_the_list_length(
        server: LiveServer, catalogue: dict[str, Any]) -> None:
    texts = passages(catalogue)
    query = catalogue["queries"][1]["query"]
    lengths = (4, 8, 16, 32)
    before = {name: server.engine.stats(name)["counts"].get("rank", {}).get("pairs", 0) for name in DEPLOYMENTS}
    with httpx.Client(base_url=server.url, timeout=120) as http:
        for name in DEPLOYMENTS:
            for length in lengths:
                outputs(http.post(f"/v2/models/{name}/infer", json=search_request(query, texts[:length])))
    for name, strategy in DEPLOYMENTS.items():
        stats = server.engine.stats(name)
        report = stats["ranking"]
        assert report["strategy"] == strategy and report["stage"] == "rank"
        assert set(lengths) <= set(report["by_length"])
        assert all(report["by_length"][n]["requests"] >= 1 and report["by_length"][n]["p50_ms"] > 0 for n in lengths)
        pairs = stats["counts"]["rank"]["pairs"] - before[name]
        # NOTE: the work each strategy does, counted: none, every ordered pair, the list's similarity matrix.
        expected = {"pointwise": 0, "pairwise": sum(n * (n - 1) for n in lengths),
                    "listwise": sum(n * n for n in lengths)}[strategy]
        assert pairs == expected, name
