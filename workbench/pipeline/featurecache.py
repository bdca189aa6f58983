"""A keyed cache of computed features, shared by every pipeline of a process under a cache name.

Entries live ``ttl_s`` seconds and at most ``max_entries`` are kept (the least
recently used go first). The cache is process-wide on purpose: two pipelines
(or two models) that compute the same features under the same cache name reuse
each other's entries, whether they run in the serving process or in one Dask
worker process. :func:`feature_caches` is that process's registry.

Examples
--------
>>> cache = FeatureCache("demo", ttl_s=60, max_entries=2)
>>> cache.put("user-1", (np.ones(3, dtype=np.float32),))
>>> cache.get("user-1")[0].tolist(), cache.get("user-2")
([1.0, 1.0, 1.0], None)
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

__all__ = ["CacheRegistry", "FeatureCache", "feature_caches"]

Entry = tuple[np.ndarray, ...]


class FeatureCache:
    """Computed features by key, each for ``ttl_s`` seconds, ``max_entries`` at most (LRU).

    Parameters
    ----------
    name
        The name pipelines share it by.
    ttl_s
        How long an entry may be served after it was computed (seconds, > 0).
    max_entries
        How many entries are kept at most (>= 1); the least recently used go first.
    clock
        Monotonic seconds; tests pass their own.
    """

    def __init__(self, name: str, ttl_s: float = 300.0, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        # NOTE: batches of several deployments run in worker threads at once; one lock keeps the
        # dictionary and the counts consistent (lookups are dictionary operations, far below the features' cost).
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[float, Entry]] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evicted = 0
        self.expired = 0
        self.ttl_s = 0.0
        self.max_entries = 0
        self.configure(ttl_s, max_entries)

    def configure(self, ttl_s: float, max_entries: int) -> None:
        """Change the TTL and the size bound; entries beyond the new bound go at once."""
        if not ttl_s > 0:
            raise ValueError(f"cache {self.name!r}: ttl_s must be > 0 (seconds), not {ttl_s!r}")
        if int(max_entries) < 1:
            raise ValueError(f"cache {self.name!r}: max_entries must be an integer >= 1, not {max_entries!r}")
        with self._lock:
            self.ttl_s = float(ttl_s)
            self.max_entries = int(max_entries)
            self._trim()

    def get(self, key: Hashable) -> Entry | None:
        """The entry of ``key``, or ``None`` when it is absent or older than the TTL (counted as a miss)."""
        with self._lock:
            found = self._entries.get(key)
            if found is not None and self._clock() - found[0] > self.ttl_s:
                del self._entries[key]
                self.expired += 1
                found = None
            if found is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return found[1]

    def put(self, key: Hashable, value: Entry) -> None:
        """Store ``value`` (arrays the cache now owns: do not change them) under ``key``."""
        with self._lock:
            self._entries[key] = (self._clock(), value)
            self._entries.move_to_end(key)
            self._trim()

    def _trim(self) -> None:
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.evicted += 1

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def snapshot(self) -> dict[str, Any]:
        """Size, settings and counts of this process's cache (lookups: ``hits + misses``)."""
        with self._lock:
            lookups = self.hits + self.misses
            return {"entries": len(self._entries), "max_entries": self.max_entries, "ttl_s": self.ttl_s,
                    "hits": self.hits, "misses": self.misses, "evicted": self.evicted, "expired": self.expired,
                    "hit_rate": self.hits / lookups if lookups else None}


class CacheRegistry:
    """The feature caches of one process, by name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._caches: dict[str, FeatureCache] = {}

    def get(self, name: str, ttl_s: float = 300.0, max_entries: int = 10_000) -> FeatureCache:
        """The cache called ``name``, made with these settings when it is new.

        NOTE: an existing cache takes the settings of the latest stage that asks for it, so a redeploy
        with a new TTL applies it; pipelines that share a cache should ask for the same settings.
        """
        with self._lock:
            cache = self._caches.get(name)
            if cache is None:
                cache = self._caches[name] = FeatureCache(name, ttl_s, max_entries)
                return cache
        if (cache.ttl_s, cache.max_entries) != (float(ttl_s), int(max_entries)):
            cache.configure(ttl_s, max_entries)
        return cache

    def add(self, cache: FeatureCache) -> FeatureCache:
        """Register a cache made elsewhere (with a clock of its own, say) under its name, replacing any."""
        with self._lock:
            self._caches[cache.name] = cache
        return cache

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            caches = dict(self._caches)
        return {name: cache.snapshot() for name, cache in caches.items()}

    def drop(self, name: str) -> None:
        with self._lock:
            self._caches.pop(name, None)


# NOTE: one registry per process is the point (sharing across pipelines and models); it is created on first
# use, like pycosts.process_costs(), and holds nothing but the caches.
_REGISTRY = CacheRegistry()


def feature_caches() -> CacheRegistry:
    """This process's feature caches."""
    return _REGISTRY
