"""The feature cache on deployed pipelines: hits counted where the stage runs reach the serving process.

The same pipeline is deployed in-process and on a LocalCluster of one worker
process; there the cache lives in the worker, and the counts come back with
each batch's outputs.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from workbench.api import Workbench
from workbench.pipeline import CachedFeatures, Pipeline
from workbench.pipeline.features import Aggregate

_NAMES = itertools.count()


def entity_sums(name: str, cache: str) -> Pipeline:
    """Per entity, the sum of its features, computed once per entity within the TTL."""
    stage = CachedFeatures([Aggregate(["features"], "total", op="sum", name="sum")], key="entity", cache=cache,
                           ttl_s=600, max_entries=1000, name="entity_features")
    return Pipeline(name, {"entity": "int64[-1]", "features": "float32[-1,4]"}, [stage])


def rows(entities: list[int], value: float = 1.0) -> dict[str, np.ndarray]:
    return {"entity": np.array(entities, dtype=np.int64),
            "features": np.full((len(entities), 4), value, dtype=np.float32)}


def hit_ratio(text: str, pipeline: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "workbench_feature_cache_hit_ratio" and sample.labels["pipeline"] == pipeline:
                return sample.value
    return None


@pytest.fixture(scope="module")
def inprocess() -> Iterator[Workbench]:
    with Workbench.inprocess() as workbench:
        yield workbench


@pytest.fixture(scope="module")
def cluster() -> Iterator[Workbench]:
    with Workbench.local(workers=1) as workbench:
        yield workbench


@pytest.fixture(params=["inprocess", "cluster"])
def wb(request: pytest.FixtureRequest) -> Workbench:
    workbench: Workbench = request.getfixturevalue(request.param)
    return workbench


def test_hits_and_the_hit_rate_are_in_stats_and_metrics(wb: Workbench) -> None:
    name, cache = f"sums-{next(_NAMES)}", f"entities-{next(_NAMES)}"
    wb.deploy(entity_sums(name, cache))
    try:
        first = wb.predict(name, rows([1, 2, 3]))
        # NOTE: entity 1 comes back with other features: what was computed for it is served within the TTL.
        second = wb.predict(name, rows([1, 2, 4], value=5.0))
        assert first["total"].tolist() == [4.0, 4.0, 4.0]
        assert second["total"].tolist() == [4.0, 4.0, 20.0]
        report = wb.stats(name)["feature_cache"]["entity_features"]
        assert report == {"cache": cache, "ttl_s": 600.0, "hits": 2, "misses": 4, "computed": 4, "hit_rate": 2 / 6}
        assert hit_ratio(wb.metrics_text(), name) == pytest.approx(2 / 6)
    finally:
        wb.undeploy(name)


def test_two_deployments_naming_one_cache_share_its_entries(wb: Workbench) -> None:
    cache = f"shared-{next(_NAMES)}"
    names = [f"model-{next(_NAMES)}" for _ in range(2)]
    for name in names:
        wb.deploy(entity_sums(name, cache))
    try:
        wb.predict(names[0], rows([10, 11]))
        wb.predict(names[1], rows([10, 11, 12]))
        second = wb.stats(names[1])["feature_cache"]["entity_features"]
        assert (second["hits"], second["computed"]) == (2, 1)
    finally:
        for name in names:
            wb.undeploy(name)


def test_the_search_demo_on_a_worker_encodes_its_catalogue_once(cluster: Workbench, demo_home: object) -> None:
    from workbench.demo.catalogue import PASSAGES, QUERIES

    texts = [text for _, text in PASSAGES]
    # NOTE: on a worker, and not probed by auto (its probe rows would fill the cache first).
    cluster.deploy("search", name="search-on-worker", placement="fused")
    try:
        for query, answer in QUERIES[:3]:
            prediction = cluster.predict("search-on-worker", {"query": [query], "candidates": [texts]})
            assert prediction["ranking"][0, 0] == answer
        report = cluster.stats("search-on-worker")["feature_cache"]["embed_candidates"]
        # NOTE: the cache lives in the worker process; its counts came back with the batches.
        assert (report["computed"], report["misses"], report["hits"]) == (len(texts), len(texts), 2 * len(texts))
    finally:
        cluster.undeploy("search-on-worker")
