"""One statistics feed per engine, shared by every open view.

Views never read the engine on their own: each refresh asks the feed, which
takes at most one snapshot of every deployment per interval, however many
browser tabs and notebook views are open. A snapshot is a few rolling
percentiles read on the engine's loop (milliseconds); it is taken from the
views' periodic callbacks only, never on a request's path. The feed keeps the
last points of each deployment's time series, so a view opened later starts
with its history.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from workbench.ui.rows import time_row, worker_rows

if TYPE_CHECKING:
    from workbench.engine import Engine
    from workbench.traffic.lab import TrafficLab
    from workbench.ui.link import EngineLink

__all__ = ["Sample", "StatsFeed"]


@dataclass(frozen=True, slots=True)
class Sample:
    """What the engine said at one moment: each deployment's statistics, the cluster, autoscaling and traffic."""

    at: float
    """When it was taken (seconds since the epoch)."""
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    cluster: dict[str, Any] = field(default_factory=dict)
    autoscaling: dict[str, Any] = field(default_factory=dict)
    traffic: dict[str, dict[str, Any]] = field(default_factory=dict)


class StatsFeed:
    """Snapshots of one engine, at most one per ``interval_s``, and the recent time series of each deployment.

    Parameters
    ----------
    link
        The way onto the engine's loop.
    lab
        The engine's traffic lab, whose runs each sample reports.
    interval_s
        Shortest time between two snapshots.
    history
        Points kept per deployment (10 minutes at one a second).
    recent_s
        How far back the latency percentiles of a point look.
    """

    def __init__(self, link: EngineLink, lab: TrafficLab, *, interval_s: float = 1.0, history: int = 600,
                 recent_s: float = 2.0) -> None:
        if not interval_s > 0:
            raise ValueError("interval_s must be > 0")
        self.link = link
        self.lab = lab
        self.interval_s = interval_s
        self.recent_s = recent_s
        self._history: dict[str, deque[dict[str, float]]] = {}
        self._size = history
        self._latest: Sample | None = None
        self._previous: Sample | None = None
        self._taken = -float("inf")
        # NOTE: views of a server share its loop's thread, but notebook views may refresh from other threads.
        self._lock = threading.Lock()

    def poll(self, *, force: bool = False) -> Sample:
        """The latest sample, taking a new one first when the last is ``interval_s`` old (or when ``force``)."""
        with self._lock:
            # NOTE: a little slack, so that views refreshing every interval_s take a sample each time.
            if self._latest is None or force or time.monotonic() - self._taken >= 0.8 * self.interval_s:
                self._add(self.link.call(_read, self.link.engine, self.lab, self.recent_s))
                self._taken = time.monotonic()
            assert self._latest is not None
            return self._latest

    def history(self, name: str, after_ms: float | None = None) -> list[dict[str, float]]:
        """The time series points of deployment ``name``, oldest first (only those after ``after_ms``, if given)."""
        with self._lock:
            points = self._history.get(name, ())
            if after_ms is None:
                return list(points)
            # NOTE: the points are in time order: read the new ones from the right end only.
            newer = list(itertools.takewhile(lambda point: point["time"] > after_ms, reversed(points)))
            return newer[::-1]

    def last_point(self, name: str) -> dict[str, float] | None:
        """The newest time series point of deployment ``name``."""
        with self._lock:
            points = self._history.get(name)
            return points[-1] if points else None

    @property
    def size(self) -> int:
        """Points kept per deployment."""
        return self._size

    def workers(self) -> list[dict[str, Any]]:
        """The rows of the workers table, from the latest two samples."""
        with self._lock:
            latest, previous = self._latest, self._previous
        if latest is None:
            return []
        span = latest.at - previous.at if previous is not None else 0.0
        return worker_rows(latest.cluster, latest.stats, previous.stats if previous else None, span)

    def _add(self, sample: Sample) -> None:
        previous = self._latest
        for name in self._history.keys() - sample.stats.keys():
            del self._history[name]
        for name, stats in sample.stats.items():
            before: Mapping[str, Any] | None = previous.stats.get(name) if previous is not None else None
            row = time_row(stats, sample.at, before, previous.at if previous is not None else None)
            self._history.setdefault(name, deque(maxlen=self._size)).append(row)
        self._previous, self._latest = previous, sample


def _read(engine: Engine, lab: TrafficLab, recent_s: float) -> Sample:
    """Runs on the engine's loop, in one go: a consistent snapshot of everything the views show."""
    stats = {name: engine.stats(name, recent_s=recent_s) for name in engine.names()}
    return Sample(time.time(), stats, engine.describe(), engine.autoscaling(), lab.status())
