"""The feature cache: TTL on an injected clock, LRU eviction, and one cache per name in a process."""

from __future__ import annotations

import numpy as np
import pytest
from waiting import ManualClock

from workbench.pipeline.featurecache import CacheRegistry, FeatureCache


def entry(value: float) -> tuple[np.ndarray, ...]:
    return (np.full(3, value, dtype=np.float32),)


def test_an_entry_is_served_until_its_ttl_then_expires() -> None:
    clock = ManualClock(1000.0)
    cache = FeatureCache("t", ttl_s=10.0, clock=clock)
    cache.put("a", entry(1.0))
    clock.now += 9.5
    found = cache.get("a")
    assert found is not None and found[0].tolist() == [1.0, 1.0, 1.0]
    clock.now += 1.0  # 10.5 s after it was computed: a lookup no longer serves it
    assert cache.get("a") is None
    assert len(cache) == 0
    snapshot = cache.snapshot()
    assert (snapshot["hits"], snapshot["misses"], snapshot["expired"]) == (1, 1, 1)
    assert snapshot["hit_rate"] == 0.5


def test_a_new_value_restarts_the_ttl() -> None:
    clock = ManualClock(1000.0)
    cache = FeatureCache("t", ttl_s=10.0, clock=clock)
    cache.put("a", entry(1.0))
    clock.now += 8.0
    cache.put("a", entry(2.0))
    clock.now += 8.0
    found = cache.get("a")
    assert found is not None and found[0][0] == 2.0


def test_the_least_recently_used_entry_goes_first() -> None:
    cache = FeatureCache("t", ttl_s=60.0, max_entries=2)
    cache.put("a", entry(1.0))
    cache.put("b", entry(2.0))
    assert cache.get("a") is not None  # "a" is now the most recently used
    cache.put("c", entry(3.0))
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None
    assert cache.snapshot()["evicted"] == 1


def test_lowering_max_entries_evicts_at_once() -> None:
    cache = FeatureCache("t", ttl_s=60.0, max_entries=5)
    for key in "abcde":
        cache.put(key, entry(0.0))
    cache.configure(ttl_s=60.0, max_entries=2)
    assert len(cache) == 2
    assert cache.get("d") is not None and cache.get("e") is not None


@pytest.mark.parametrize(("ttl_s", "max_entries", "message"), [
    (0.0, 10, "ttl_s must be > 0"), (-1.0, 10, "ttl_s must be > 0"), (1.0, 0, "max_entries must be an integer >= 1"),
])
def test_bad_settings_are_refused_with_the_valid_range(ttl_s: float, max_entries: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FeatureCache("t", ttl_s=ttl_s, max_entries=max_entries)


def test_the_registry_gives_one_cache_per_name_with_the_latest_settings() -> None:
    registry = CacheRegistry()
    first = registry.get("shared", ttl_s=10.0, max_entries=100)
    first.put("k", entry(1.0))
    again = registry.get("shared", ttl_s=20.0, max_entries=100)
    assert again is first and again.ttl_s == 20.0
    assert again.get("k") is not None
    other = registry.get("other")
    assert other is not first and other.get("k") is None
    assert set(registry.snapshot()) == {"shared", "other"}
