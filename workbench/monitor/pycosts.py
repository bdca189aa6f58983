"""Python's own costs: garbage-collector pauses and GIL contention, per process.

A p99 spike can be the collector rather than the model. :class:`GcPauses`
times every collection through ``gc.callbacks`` (start/stop, per generation)
and keeps the pauses of a recent window: count, total and longest.
:class:`GilSampler` estimates GIL contention from how late a thread wakes from
short sleeps: a thread that wants the GIL back after ``sleep`` waits for
whoever holds it (up to ``sys.getswitchinterval()`` per turn). Dask's own GIL
monitor (``gilknocker``, ``distributed.admin.system-monitor.gil.enabled``) is
read instead on a worker where it runs.

Both are process-wide: :func:`process_costs` installs them once per process
(the serving process, and each Dask worker through its deployment plugin).
:func:`mitigate` applies the mitigations: ``gc.freeze()`` once the pipelines
are warm (what lives for the whole process is never traversed again), and a
higher first-generation threshold (fewer, not longer, young collections).

Exposed as ``Engine.stats(name)["python"]`` and on the engine registry::

    workbench_python_gc_collections_total{process,generation}
    workbench_python_gc_pause_seconds_total{process,generation}
    workbench_python_gc_longest_pause_seconds{process}       longest pause in the window
    workbench_python_gil_contention_ratio{process}           share of time a thread waited for the GIL
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["CachedFetch", "GcPauses", "GilSampler", "ProcessCosts", "PythonCostsCollector", "mitigate",
           "mitigate_as_configured", "process_costs"]

_GENERATIONS = (0, 1, 2)


class GcPauses:
    """Times every garbage collection of this process (``gc.callbacks``).

    Parameters
    ----------
    window_s
        How far back :meth:`snapshot` looks.
    max_pauses
        Pauses kept at most (the oldest go first).

    Examples
    --------
    >>> pauses = GcPauses(window_s=60)
    >>> pauses.install()
    >>> _ = gc.collect()
    >>> pauses.snapshot()["count"] >= 1
    True
    >>> pauses.uninstall()
    """

    def __init__(self, window_s: float = 60.0, max_pauses: int = 20_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        self.window_s = window_s
        self._clock = clock
        # NOTE: a deque, not a RollingWindow: the callback runs in whichever thread allocated, in the
        # middle of that thread's work, so it must neither lock (the reader may be the thread collecting)
        # nor leave a structure half-updated; deque.append and list(deque) are each atomic under the GIL.
        self._pauses: deque[tuple[float, int, int]] = deque(maxlen=max_pauses)
        self._started = 0
        self.collections_total = [0, 0, 0]
        self.pause_ns_total = [0, 0, 0]
        self.installed = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter_ns()
            return
        pause_ns = time.perf_counter_ns() - self._started
        generation = int(info["generation"])
        self.collections_total[generation] += 1
        self.pause_ns_total[generation] += pause_ns
        self._pauses.append((self._clock(), generation, pause_ns))

    def install(self) -> None:
        if not self.installed:
            gc.callbacks.append(self._callback)
            self.installed = True

    def uninstall(self) -> None:
        if self.installed:
            gc.callbacks.remove(self._callback)
            self.installed = False

    def snapshot(self) -> dict[str, Any]:
        """Pauses of the window: ``count``, ``total_ms``, ``longest_ms``, and the same ``by_generation``."""
        horizon = self._clock() - self.window_s
        recent = [pause for pause in list(self._pauses) if pause[0] >= horizon]
        by_generation = {}
        for generation in _GENERATIONS:
            ns = [pause_ns for _, g, pause_ns in recent if g == generation]
            by_generation[str(generation)] = _figures(ns)
        return {
            "window_s": self.window_s, **_figures([pause_ns for _, _, pause_ns in recent]),
            "by_generation": by_generation,
            "collections_total": list(self.collections_total),
            "pause_ms_total": [ns / 1e6 for ns in self.pause_ns_total],
            "frozen_objects": gc.get_freeze_count(), "thresholds": list(gc.get_threshold()),
        }


def _figures(pauses_ns: list[int]) -> dict[str, Any]:
    return {"count": len(pauses_ns), "total_ms": sum(pauses_ns) / 1e6,
            "longest_ms": max(pauses_ns, default=0) / 1e6}


class GilSampler:
    """Estimates GIL contention: how late a daemon thread wakes from ``interval_s`` sleeps.

    ``contention`` is the lateness summed over the window divided by the time
    slept: 0 for an idle interpreter, towards 1 when other threads keep the
    GIL. The timer's own overshoot (tens of µs a wake) sets a floor of about 1 %.
    It wakes every 50 ms by default: each wake asks for the GIL, and at 5 ms the
    sampler itself cost a serving process about 7 % of its CPU under load.
    """

    def __init__(self, interval_s: float = 0.05, window_s: float = 60.0) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.interval_s = interval_s
        self.window_s = window_s
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=int(window_s / interval_s) + 1)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="workbench-gil-sampler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        interval, samples, stop = self.interval_s, self._samples, self._stop
        while not stop.is_set():
            began = time.perf_counter()
            time.sleep(interval)
            woke = time.perf_counter()
            samples.append((time.monotonic(), woke - began, max(woke - began - interval, 0.0)))

    def snapshot(self) -> dict[str, Any]:
        horizon = time.monotonic() - self.window_s
        recent = [s for s in list(self._samples) if s[0] >= horizon]
        slept = sum(s[1] for s in recent)
        return {"contention": sum(s[2] for s in recent) / slept if slept else 0.0, "source": "sampler",
                "samples": len(recent), "longest_wait_ms": max((s[2] for s in recent), default=0.0) * 1e3}


class ProcessCosts:
    """The GC pauses and GIL contention of one process (see :func:`process_costs`)."""

    def __init__(self, window_s: float = 60.0, gil_interval_s: float = 0.05) -> None:
        self.gc = GcPauses(window_s)
        self.gil = GilSampler(gil_interval_s, window_s)

    def start(self, *, gil: bool = True) -> ProcessCosts:
        self.gc.install()
        if gil:
            self.gil.start()
        return self

    def stop(self) -> None:
        self.gc.uninstall()
        self.gil.stop()

    def snapshot(self, gil: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``{"gc": ..., "gil": ...}``; ``gil`` replaces the sampler's figures (Dask's own monitor)."""
        return {"gc": self.gc.snapshot(), "gil": dict(gil) if gil is not None else self.gil.snapshot()}


_process: ProcessCosts | None = None
_process_lock = threading.Lock()


def process_costs(*, gil: bool | None = None) -> ProcessCosts:
    """This process's recorder, installed on first use (``gil``: start the sampler; default from settings)."""
    # NOTE: a module-level instance on purpose: gc.callbacks and the GIL are themselves process-wide, and two
    # recorders would time the same pauses twice. Engines, worker plugins and tests share this one.
    global _process
    with _process_lock:
        if _process is None:
            if gil is None:
                from workbench.config import WorkbenchSettings

                gil = WorkbenchSettings().gil_sampler
            _process = ProcessCosts().start(gil=gil)
        return _process


def mitigate(*, freeze: bool, threshold0: int | None) -> dict[str, Any]:
    """Apply the GC mitigations once the process is warm; returns what was applied.

    ``threshold0`` raises the first-generation threshold (allocations between two young
    collections); ``freeze`` collects once, then moves every surviving object to the
    permanent generation, so later full collections no longer traverse models and modules.
    """
    if threshold0 is not None:
        if threshold0 < 1:
            raise ValueError("threshold0 must be an integer >= 1")
        gc.set_threshold(threshold0, *gc.get_threshold()[1:])
    if freeze:
        gc.collect()
        gc.freeze()
    return {"frozen_objects": gc.get_freeze_count(), "thresholds": list(gc.get_threshold())}


def mitigate_as_configured() -> dict[str, Any] | None:
    """:func:`mitigate` as the ``WORKBENCH_GC_*`` settings say (``None``: ``WORKBENCH_GC_MITIGATE=0``)."""
    from workbench.config import WorkbenchSettings

    settings = WorkbenchSettings()
    if not settings.gc_mitigate:
        return None
    return mitigate(freeze=settings.gc_freeze, threshold0=settings.gc_threshold0)


class CachedFetch:
    """The latest result of an async ``fetch``, refreshed in the background at most every ``every_s``.

    :meth:`get` never waits: it returns what was fetched last and, when that is
    stale and a loop is running, starts one refresh.
    """

    def __init__(self, fetch: Callable[[], Awaitable[dict[str, Any]]], every_s: float = 5.0) -> None:
        self._fetch = fetch
        self.every_s = every_s
        self.value: dict[str, Any] = {}
        self._at = float("-inf")
        self._task: asyncio.Task[None] | None = None

    def get(self) -> dict[str, Any]:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return self.value
        if (self._task is None or self._task.done()) and time.monotonic() - self._at >= self.every_s:
            self._at = time.monotonic()
            self._task = loop.create_task(self._refresh())
        return self.value

    async def _refresh(self) -> None:
        try:
            self.value = await self._fetch()
        except Exception:  # NOTE: a worker leaving mid-fetch; the next refresh tries again
            self._at = float("-inf")


class PythonCostsCollector(Collector):
    """The figures of ``read()`` (``{"serving": snapshot, "workers": {address: snapshot}}``) as metrics."""

    def __init__(self, read: Callable[[], Mapping[str, Any]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        figures = self._read()
        processes = {"serving": figures.get("serving") or {}, **(figures.get("workers") or {})}
        labels = ["process", "generation"]
        count = CounterMetricFamily("workbench_python_gc_collections", "Garbage collections, by generation.",
                                    labels=labels)
        pause = CounterMetricFamily("workbench_python_gc_pause_seconds", "Time spent in garbage collections.",
                                    labels=labels)
        longest = GaugeMetricFamily("workbench_python_gc_longest_pause_seconds",
                                    "Longest garbage-collection pause in the recent window.", labels=["process"])
        gil = GaugeMetricFamily("workbench_python_gil_contention_ratio",
                                "Estimated share of time a thread waits for the GIL (recent window).",
                                labels=["process"])
        for process, snapshot in processes.items():
            gc_figures = snapshot.get("gc") or {}
            for generation, (n, ms) in enumerate(zip(gc_figures.get("collections_total", ()),
                                                     gc_figures.get("pause_ms_total", ()))):
                count.add_metric([process, str(generation)], n)
                pause.add_metric([process, str(generation)], ms * 1e-3)
            if gc_figures:
                longest.add_metric([process], gc_figures["longest_ms"] * 1e-3)
            if snapshot.get("gil"):
                gil.add_metric([process], float(snapshot["gil"]["contention"]))
        yield from (count, pause, longest, gil)
