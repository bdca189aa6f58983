"""The cached features stage on real pipelines: keyed reuse within a TTL, shared by name, lists of items."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest

from workbench.batching.batch import merge, split
from workbench.errors import PipelineWiringError, SpecError
from workbench.pipeline import CachedFeatures, FeatureCache, FunctionStage, Pipeline, feature_caches
from workbench.pipeline.features import Aggregate
from workbench.tensor import TensorSpec

CALLS: list[int] = []
_NAMES = itertools.count()


def count_rows(features: np.ndarray) -> np.ndarray:
    """A features computation that records how many rows it was given (importable: the YAML test writes it)."""
    CALLS.append(len(features))
    return features.sum(axis=1)


def text_length(text: np.ndarray) -> np.ndarray:
    CALLS.append(len(text))
    return np.array([[len(t), t.count(" ")] for t in text.tolist()], dtype=np.float32)


@pytest.fixture
def cache_name() -> Iterator[str]:
    """A cache of its own per test (the registry is process-wide)."""
    name = f"test-{next(_NAMES)}"
    CALLS.clear()
    yield name
    feature_caches().drop(name)


def summing(cache: str, *, name: str = "sums", ttl_s: float = 60.0) -> Pipeline:
    stage = CachedFeatures([FunctionStage(count_rows, inputs=["features"], outputs={"total": "float32[-1]"},
                                          kind="features", name="sum")],
                           key="entity", cache=cache, ttl_s=ttl_s, name="cached_sum")
    return Pipeline(name, {"entity": "int64[-1]", "features": "float32[-1,3]"}, [stage])


def test_features_of_a_known_key_are_served_from_the_cache(cache_name: str) -> None:
    pipeline = summing(cache_name)
    first = pipeline.predict({"entity": [1, 2], "features": [[1, 1, 1], [2, 2, 2]]})
    # NOTE: entity 1 comes back with other features: within the TTL its cached features are served.
    second = pipeline.predict({"entity": [1, 3], "features": [[9, 9, 9], [3, 3, 3]]})
    assert first["total"].tolist() == [3.0, 6.0]
    assert second["total"].tolist() == [3.0, 9.0]
    assert CALLS == [2, 1]
    assert first.counters["cached_sum"] == {"hits": 0, "misses": 2, "computed": 2}
    assert second.counters["cached_sum"] == {"hits": 1, "misses": 1, "computed": 1}


def test_a_key_repeated_in_a_batch_is_computed_once(cache_name: str) -> None:
    result = summing(cache_name).predict({"entity": [5, 5, 6, 5], "features": np.ones((4, 3), dtype=np.float32)})
    assert result["total"].tolist() == [3.0] * 4
    assert CALLS == [2]
    assert result.counters["cached_sum"]["computed"] == 2


def test_pipelines_naming_one_cache_share_its_entries(cache_name: str) -> None:
    rows = {"entity": [7], "features": [[1.0, 2.0, 3.0]]}
    summing(cache_name, name="model-a").predict(rows)
    result = summing(cache_name, name="model-b").predict(rows)
    assert CALLS == [1]
    assert result.counters["cached_sum"]["hits"] == 1
    assert feature_caches().get(cache_name).snapshot()["entries"] == 1


def test_another_computation_under_the_same_cache_name_does_not_see_the_entries(cache_name: str) -> None:
    rows = {"entity": [7], "features": [[1.0, 2.0, 3.0]]}
    summing(cache_name).predict(rows)
    other = CachedFeatures([Aggregate(["features"], "total", op="max", name="max")], key="entity", cache=cache_name,
                           name="cached_max")
    result = Pipeline("max", {"entity": "int64[-1]", "features": "float32[-1,3]"}, [other]).predict(rows)
    assert result["total"].tolist() == [3.0]
    assert result.counters["cached_max"]["hits"] == 0


def test_an_expired_entry_is_computed_again(cache_name: str) -> None:
    clock = [0.0]
    feature_caches().add(FeatureCache(cache_name, ttl_s=60.0, clock=lambda: clock[0]))
    pipeline = summing(cache_name, ttl_s=60.0)
    rows = {"entity": [1], "features": [[1.0, 1.0, 1.0]]}
    pipeline.predict(rows)
    clock[0] += 59.0
    assert pipeline.predict(rows).counters["cached_sum"]["hits"] == 1
    clock[0] += 2.0
    assert pipeline.predict(rows).counters["cached_sum"] == {"hits": 0, "misses": 1, "computed": 1}
    assert CALLS == [1, 1]


def test_lists_of_items_per_row_are_cached_item_by_item_and_padding_is_skipped(cache_name: str) -> None:
    stage = CachedFeatures([FunctionStage(text_length, inputs=["texts"], outputs={"shape": "float32[-1,2]"},
                                          kind="features", name="length")],
                           key="texts", cache=cache_name, item_dims=2, name="lengths")
    pipeline = Pipeline("lists", {"texts": "str[-1,-1]"}, [stage])
    assert pipeline.specs["shape"].shape == (-1, -1, 2)
    result = pipeline.predict({"texts": np.array([["a b", "ccc", ""], ["ccc", "d", ""]], dtype=object)})
    assert result["shape"].shape == (2, 3, 2)
    assert result["shape"][:, :, 0].tolist() == [[3, 3, 0], [3, 1, 0]]
    assert CALLS == [3]  # "a b", "ccc", "d": the repeat is computed once, the padding never
    assert result.counters["lengths"] == {"hits": 0, "misses": 4, "computed": 3}


def test_requests_of_different_list_lengths_share_a_batch_and_get_their_own_items(cache_name: str) -> None:
    stage = CachedFeatures([FunctionStage(text_length, inputs=["texts"], outputs={"shape": "float32[-1,2]"},
                                          kind="features", name="length")],
                           key="texts", cache=cache_name, item_dims=2, name="lengths")
    pipeline = Pipeline("lists", {"texts": "str[-1,-1]"}, [stage])
    short = {"texts": np.array([["x y z"]], dtype=object)}
    long = {"texts": np.array([["a", "bb", "ccc"]], dtype=object)}
    # NOTE: what the batcher does with the two requests (pad with "", as the engine asks for text).
    merged = merge([short, long], {"texts": ""})
    alone, together = pipeline.predict(short)["shape"], split(pipeline.predict(merged).outputs, [1, 1])
    assert together[0]["shape"][0, 0].tolist() == alone[0, 0].tolist() == [5.0, 2.0]
    assert together[0]["shape"][0, 1:].tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert together[1]["shape"][0, :, 0].tolist() == [1.0, 2.0, 3.0]


def test_rows_of_numbers_can_be_keyed_by_their_digest(cache_name: str) -> None:
    stage = CachedFeatures([FunctionStage(count_rows, inputs=["features"], outputs={"total": "float32[-1]"},
                                          kind="features", name="sum")],
                           key="features", cache=cache_name, name="by_row")
    pipeline = Pipeline("rows", {"features": "float32[-1,3]"}, [stage])
    pipeline.predict({"features": [[1, 2, 3], [4, 5, 6]]})
    result = pipeline.predict({"features": [[4, 5, 6], [1, 2, 4]]})
    assert result["total"].tolist() == [15.0, 7.0]
    assert result.counters["by_row"]["hits"] == 1


def test_the_stage_round_trips_through_a_pipeline_file(cache_name: str, tmp_path: object) -> None:
    pipeline = summing(cache_name)
    again = Pipeline.from_dict(pipeline.to_dict())
    assert again.to_dict() == pipeline.to_dict()
    data = pipeline.to_dict()["stages"][0]
    assert (data["type"], data["key"], data["cache"], data["ttl_s"]) == ("cached", "entity", cache_name, 60.0)
    rows = {"entity": [4], "features": [[1.0, 1.0, 1.0]]}
    pipeline.predict(rows)
    assert again.predict(rows).counters["cached_sum"]["hits"] == 1


def test_wiring_errors_name_the_stage() -> None:
    with pytest.raises(PipelineWiringError, match=r"'cached'.*'nope'"):
        Pipeline("bad", {"x": "float32[-1,3]"},
                 [CachedFeatures([Aggregate(["x"], "s", op="sum")], key="x", outputs=["nope"])])
    with pytest.raises(ValueError, match="item_dims must be 1"):
        CachedFeatures([Aggregate(["x"], "s")], key="x", item_dims=3)
    with pytest.raises(SpecError, match="stage 'c' \\(cached\\)"):
        Pipeline.from_dict({"name": "p", "inputs": {"x": "float32[-1,3]"},
                            "stages": [{"name": "c", "type": "cached", "key": "x"}]})
    spec = CachedFeatures([Aggregate(["x"], "s", op="sum")], key="x", item_dims=2)
    with pytest.raises(PipelineWiringError, match="fewer than item_dims=2"):
        Pipeline("bad", [TensorSpec("x", "float32", (-1,))], [spec])
