"""Prometheus metrics of an engine, in a registry of its own.

Each :class:`~workbench.engine.Engine` owns one :class:`Metrics`, so several
engines in one process (tests, a notebook next to a server) never share a
series. ``GET /metrics`` serves it, and ``engine.metrics_text()`` /
``Workbench.metrics_text()`` return the same text in a notebook.

Two kinds of metrics, paid for differently:

* counted as requests complete (the batcher's :class:`~workbench.monitor.stats.BatcherStats`
  tells a :class:`PipelineObserver` of each event, for the Python API and REST alike)::

    workbench_requests_completed_total{pipeline}          answered with outputs
    workbench_requests_failed_total{pipeline,code}         failed, by HTTP status (400 bad input, 500 stage, 503, ...)
    workbench_requests_rejected_total{pipeline}            refused at the door with 429 (queue full, latency target)
    workbench_requests_expired_total{pipeline}             deadline passed before they ran (504, not run)
    workbench_request_duration_seconds{pipeline}           histogram, end to end: queued to answered
    workbench_stage_duration_seconds{pipeline,stage}       histogram: queue, batch_formation, transfer, each stage
    workbench_batch_size_rows{pipeline}                    histogram of rows per batch dispatched
    workbench_batch_duration_seconds{pipeline}             histogram, dispatch to results per batch
    workbench_stage_events_total{pipeline,stage,event}     what counting stages did: cache hits, misses,
                                                           computed; candidates and pairs a ranking scored
    workbench_feature_cache_hit_ratio{pipeline,stage}      hits / (hits + misses) of a cached features stage

* read when scraped (:class:`EngineCollector`, from an :class:`EngineGauges` snapshot)::

    workbench_backend_info{kind}                           inprocess or dask
    workbench_queue_depth{pipeline}                        requests waiting to be batched
    workbench_batches_in_flight{pipeline}                  batches dispatched and not yet answered
    workbench_active_variant_info{pipeline,stage,variant}  the variant each inference stage serves
    workbench_deployment_generation{pipeline}              bumped by each variant swap
    workbench_batching_max_batch_size{pipeline}, ..._max_delay_seconds, ..._max_in_flight, ..._max_queue
    workbench_batching_mode_info{pipeline,mode}            dynamic, realtime or auto
    workbench_latency_target_seconds{pipeline}             the p99 target, where one is set
    workbench_placement_info{pipeline,placement,where}     auto, inprocess, fused or by-resource; embedded or remote
    workbench_placement_cost_seconds{pipeline,part}        a batch's compute and its trip to a worker (medians),
                                                           what ``auto`` decides on
    workbench_placement_moves{pipeline}                    moves ``auto`` made since the deployment (or swap)
    workbench_workers{pipeline}                            workers holding the deployment
    workbench_worker_threads{pipeline,worker}              and their threads,
    workbench_worker_resource{pipeline,worker,resource}    resources (GPU, ...)
    workbench_worker_batches_in_flight{pipeline,worker}    and batches in flight
    workbench_autoscaling_enabled, ..._min_workers, ..._max_workers, ..._target_workers

Every request observes the stage times of the batch it ran in, so the stage
histograms and the end-to-end one count the same requests.

Durations are in seconds and sizes in rows, as Prometheus names units,
while the rest of the workbench speaks ms. This module belongs to monitoring,
not serving: the engine owns it and counts into it with or without an HTTP
server, and it imports nothing above it (the engine hands the collector an
:class:`EngineGauges` snapshot instead of being read here).

Extending: later metrics go into the same registry. Instruments counted on an
event are created with ``registry=metrics.registry``; values that already
live somewhere are better read when scraped, by a collector passed to
:meth:`Metrics.register` (a ``prometheus_client.registry.Collector``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = [
    "BATCH_ROWS_BUCKETS", "CONTENT_TYPE", "DURATION_BUCKETS_S", "DeploymentGauges", "EngineCollector",
    "EngineGauges", "Metrics", "PipelineObserver",
]

#: Histogram buckets for durations, in seconds: 5 µs to 10 s at 1, 2.5, 5 per decade, so that both
#: the microsecond stages of a tabular pipeline and 100 ms text batches fall between two edges.
DURATION_BUCKETS_S: tuple[float, ...] = (
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
#: Histogram buckets for rows per batch.
BATCH_ROWS_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: What :meth:`Metrics.exposition` writes: the Prometheus text format 0.0.4.
# NOTE: spelled out because recent prometheus-client names CONTENT_TYPE_LATEST the 1.0.0 format,
# while generate_latest keeps writing 0.0.4 (legacy names), which is what Prometheus 3 must be told.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: How prometheus_client writes a bucket edge (``le``), so that ours read the same as its own histograms'.
_edge_text: Callable[[float], str] = floatToGoString


class _Buckets:
    """One histogram series: a count per bucket (the last one is +Inf) and the sum."""

    __slots__ = ("counts", "sum")

    def __init__(self, size: int) -> None:
        self.counts = [0] * (size + 1)
        self.sum = 0.0


class PipelineObserver:
    """Counts one pipeline's requests and batches (a :class:`~workbench.monitor.stats.StatsObserver`).

    Attached to the pipeline's batcher stats; :class:`Metrics` exposes what it counted when scraped.
    """

    # NOTE: the counts are plain numbers, not prometheus_client instruments: those take a lock per
    # increment (two per observation) to be thread-safe, about 0.6 µs an observation, and a request
    # observes ten or so timings. Events come from the engine's event loop only, so no lock is needed:
    # a request with 10 timings costs 1.3-1.6 µs here against 6-8 µs with prometheus_client's Histogram.
    # Scrapes read the numbers on that loop too (GET /metrics, Workbench.metrics_text).

    __slots__ = ("_duration_edges", "_rows_edges", "batch_durations", "batch_rows", "completed", "durations",
                 "expired", "failed", "rejected", "stage_events")

    def __init__(self, duration_edges: Sequence[float], rows_edges: Sequence[float]) -> None:
        self._duration_edges = tuple(duration_edges)
        self._rows_edges = tuple(rows_edges)
        self.completed = 0
        self.rejected = 0
        self.expired = 0
        self.failed: dict[int, int] = {}
        #: The end-to-end ``"total"`` and every other part of the requests' timings, in seconds.
        self.durations: dict[str, _Buckets] = {}
        self.batch_rows = _Buckets(len(self._rows_edges))
        self.batch_durations = _Buckets(len(self._duration_edges))
        #: What counting stages reported, by stage then by event (``hits``, ``misses``, ...).
        self.stage_events: dict[str, dict[str, int]] = {}

    def request_done(self, timings_ms: Mapping[str, float]) -> None:
        """One request's timings (a batch of one)."""
        self.requests_done({}, {part: (ms,) for part, ms in timings_ms.items()}, 1)

    def requests_done(self, shared_ms: Mapping[str, float], each_ms: Mapping[str, Sequence[float]],
                      count: int) -> None:
        self.completed += count
        for part, ms in shared_ms.items():
            self._observe(part, ms * 1e-3, count)
        for part, values in each_ms.items():
            for ms in values:
                self._observe(part, ms * 1e-3)

    def _observe(self, part: str, seconds: float, count: int = 1) -> None:
        series = self.durations.get(part)
        if series is None:
            series = self.durations[part] = _Buckets(len(self._duration_edges))
        series.counts[bisect_left(self._duration_edges, seconds)] += count
        series.sum += seconds * count

    def request_failed(self, status_code: int, requests: int) -> None:
        self.failed[status_code] = self.failed.get(status_code, 0) + requests

    def request_rejected(self) -> None:
        self.rejected += 1

    def request_expired(self) -> None:
        self.expired += 1

    def batch_dispatched(self, rows: int) -> None:
        self.batch_rows.counts[bisect_left(self._rows_edges, rows)] += 1
        self.batch_rows.sum += rows

    def batch_ran(self, seconds: float) -> None:
        self.batch_durations.counts[bisect_left(self._duration_edges, seconds)] += 1
        self.batch_durations.sum += seconds

    def stages_counted(self, counts: Mapping[str, Mapping[str, int]]) -> None:
        for stage, figures in counts.items():
            events = self.stage_events.get(stage)
            if events is None:
                events = self.stage_events[stage] = {}
            for event, n in figures.items():
                events[event] = events.get(event, 0) + n


class _CountedCollector(Collector):
    """Exposes what the pipeline observers counted."""

    def __init__(self, observers: Mapping[str, PipelineObserver], duration_edges: Sequence[float],
                 rows_edges: Sequence[float]) -> None:
        self._observers = observers
        self._duration_le = [_edge_text(edge) for edge in duration_edges] + ["+Inf"]
        self._rows_le = [_edge_text(edge) for edge in rows_edges] + ["+Inf"]

    def collect(self) -> Iterable[Metric]:
        p = ["pipeline"]
        completed = CounterMetricFamily("workbench_requests_completed", "Requests answered with outputs.", labels=p)
        failed = CounterMetricFamily("workbench_requests_failed", "Requests that failed, by the HTTP status of "
                                     "their error.", labels=[*p, "code"])
        rejected = CounterMetricFamily("workbench_requests_rejected", "Requests refused at once with 429 (queue "
                                       "full, or too long for the latency target).", labels=p)
        expired = CounterMetricFamily("workbench_requests_expired", "Requests whose deadline passed before they "
                                      "ran (504; they were not run).", labels=p)
        request = HistogramMetricFamily("workbench_request_duration_seconds", "Requests from queued to answered.",
                                        labels=p)
        stage = HistogramMetricFamily("workbench_stage_duration_seconds", "Where the requests' time went: queue, "
                                      "batch_formation, transfer and each stage of their batch.",
                                      labels=[*p, "stage"])
        rows = HistogramMetricFamily("workbench_batch_size_rows", "Rows per batch dispatched.", labels=p)
        batch = HistogramMetricFamily("workbench_batch_duration_seconds", "Batches from dispatch to results.",
                                      labels=p)
        events = CounterMetricFamily("workbench_stage_events", "What counting stages did: cache hits, misses and "
                                     "items computed; candidates and pairs a ranking scored.",
                                     labels=[*p, "stage", "event"])
        hit_ratio = GaugeMetricFamily("workbench_feature_cache_hit_ratio", "Share of a cached features stage's "
                                      "lookups served from the cache (since the pipeline was deployed).",
                                      labels=[*p, "stage"])
        # NOTE: copied first: a scrape from another thread (prometheus_client's own server) must not
        # iterate a dict the event loop is adding a pipeline or a stage to.
        for name, observer in list(self._observers.items()):
            completed.add_metric([name], observer.completed)
            rejected.add_metric([name], observer.rejected)
            expired.add_metric([name], observer.expired)
            for code, count in sorted(observer.failed.items()):
                failed.add_metric([name, str(code)], count)
            for part, series in list(observer.durations.items()):
                if part == "total":
                    request.add_metric([name], _cumulative(series, self._duration_le), series.sum)
                else:
                    stage.add_metric([name, part], _cumulative(series, self._duration_le), series.sum)
            rows.add_metric([name], _cumulative(observer.batch_rows, self._rows_le), observer.batch_rows.sum)
            batch.add_metric([name], _cumulative(observer.batch_durations, self._duration_le),
                             observer.batch_durations.sum)
            for stage_name, figures in list(observer.stage_events.items()):
                for event, count in list(figures.items()):
                    events.add_metric([name, stage_name, event], count)
                lookups = figures.get("hits", 0) + figures.get("misses", 0)
                if lookups:
                    hit_ratio.add_metric([name, stage_name], figures.get("hits", 0) / lookups)
        yield from (completed, failed, rejected, expired, request, stage, rows, batch, events, hit_ratio)


def _cumulative(series: _Buckets, le: Sequence[str]) -> list[tuple[str, float]]:
    running, buckets = 0, []
    for edge, count in zip(le, series.counts):
        running += count
        buckets.append((edge, float(running)))
    return buckets


@dataclass(slots=True)
class DeploymentGauges:
    """One deployment as it is at scrape time."""

    pipeline: str
    generation: int
    variants: Mapping[str, str]
    queue_depth: int
    in_flight: int
    max_batch_size: int
    max_delay_ms: float
    max_in_flight: int
    max_queue: int
    mode: str
    latency_target_ms: float | None = None
    workers: Sequence[Mapping[str, Any]] = ()
    """``{"address", "resources", "nthreads", "in_flight", ...}`` per worker holding the deployment."""
    placed: Mapping[str, Any] = field(default_factory=dict)
    """Where its batches run and why, as ``stats(name)["placed"]``."""


@dataclass(slots=True)
class EngineGauges:
    """What the engine looks like at scrape time: its backend, deployments and autoscaling."""

    backend: str
    deployments: Sequence[DeploymentGauges] = ()
    autoscaling: Mapping[str, Any] = field(default_factory=dict)
    """As :meth:`~workbench.engine.Engine.autoscaling` returns it."""


class EngineCollector(Collector):
    """The gauges, built at scrape time from the snapshot that ``read`` returns (nothing on the request path)."""

    def __init__(self, read: Callable[[], EngineGauges]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        state = self._read()
        p = ["pipeline"]
        backend = InfoMetricFamily("workbench_backend", "Where batches run.", labels=[])
        backend.add_metric([], {"kind": state.backend})
        queue = GaugeMetricFamily("workbench_queue_depth", "Requests waiting to be batched.", labels=p)
        in_flight = GaugeMetricFamily("workbench_batches_in_flight", "Batches dispatched and not yet answered.",
                                      labels=p)
        variant = InfoMetricFamily("workbench_active_variant", "The variant each inference stage serves.",
                                   labels=[*p, "stage"])
        generation = GaugeMetricFamily("workbench_deployment_generation",
                                       "The deployment's generation (a variant swap starts a new one).", labels=p)
        max_batch = GaugeMetricFamily("workbench_batching_max_batch_size", "Most rows in one batch.", labels=p)
        max_delay = GaugeMetricFamily("workbench_batching_max_delay_seconds", "Longest wait for company.",
                                      labels=p)
        max_flight = GaugeMetricFamily("workbench_batching_max_in_flight", "Batches dispatched at once.", labels=p)
        max_queue = GaugeMetricFamily("workbench_batching_max_queue", "Requests waiting at most; beyond, 429.",
                                      labels=p)
        mode = InfoMetricFamily("workbench_batching_mode", "How batches are formed.", labels=p)
        target = GaugeMetricFamily("workbench_latency_target_seconds", "The p99 latency to meet, where one is set.",
                                   labels=p)
        workers = GaugeMetricFamily("workbench_workers", "Workers holding the deployment, ready for its batches.",
                                    labels=p)
        threads = GaugeMetricFamily("workbench_worker_threads", "Threads of each worker holding the deployment.",
                                    labels=[*p, "worker"])
        resources = GaugeMetricFamily("workbench_worker_resource", "Resources of each worker holding the deployment.",
                                      labels=[*p, "worker", "resource"])
        worker_flight = GaugeMetricFamily("workbench_worker_batches_in_flight",
                                          "The deployment's batches each worker is running.", labels=[*p, "worker"])
        placement = InfoMetricFamily("workbench_placement", "Where the deployment's batches run, and how decided.",
                                     labels=p)
        cost = GaugeMetricFamily("workbench_placement_cost_seconds", "A batch's compute and its trip to a worker "
                                 "(recent medians): what placement auto decides on.", labels=[*p, "part"])
        moves = GaugeMetricFamily("workbench_placement_moves", "Moves placement auto made since the deployment.",
                                  labels=p)
        for d in state.deployments:
            name = [d.pipeline]
            if d.placed.get("where"):
                placement.add_metric(name, {"placement": str(d.placed.get("placement")),
                                            "where": str(d.placed["where"])})
                moves.add_metric(name, float(d.placed.get("moves") or 0))
                for part in ("compute", "trip"):
                    if d.placed.get(f"{part}_ms") is not None:
                        cost.add_metric([d.pipeline, part], float(d.placed[f"{part}_ms"]) * 1e-3)
            queue.add_metric(name, d.queue_depth)
            in_flight.add_metric(name, d.in_flight)
            for stage, active in d.variants.items():
                variant.add_metric([d.pipeline, stage], {"variant": active})
            generation.add_metric(name, d.generation)
            max_batch.add_metric(name, d.max_batch_size)
            max_delay.add_metric(name, d.max_delay_ms * 1e-3)
            max_flight.add_metric(name, d.max_in_flight)
            max_queue.add_metric(name, d.max_queue)
            mode.add_metric(name, {"mode": d.mode})
            if d.latency_target_ms is not None:
                target.add_metric(name, d.latency_target_ms * 1e-3)
            workers.add_metric(name, len(d.workers))
            for worker in d.workers:
                where = [d.pipeline, str(worker.get("address", ""))]
                threads.add_metric(where, float(worker.get("nthreads") or 0))
                worker_flight.add_metric(where, float(worker.get("in_flight") or 0))
                for resource, amount in (worker.get("resources") or {}).items():
                    resources.add_metric([*where, str(resource)], float(amount))
        yield from (backend, queue, in_flight, variant, generation, max_batch, max_delay, max_flight, max_queue, mode,
                    target, placement, cost, moves, workers, threads, resources, worker_flight)
        yield from _autoscaling(state.autoscaling)


def _autoscaling(view: Mapping[str, Any]) -> Iterable[Metric]:
    yield GaugeMetricFamily("workbench_autoscaling_enabled", "Whether autoscaling is on (1) or off (0).",
                            value=1.0 if view.get("enabled") else 0.0)
    for key, metric, doc in (("minimum", "min_workers", "Fewest workers autoscaling keeps."),
                             ("maximum", "max_workers", "Most workers autoscaling starts.")):
        if view.get("enabled") and view.get(key) is not None:
            yield GaugeMetricFamily(f"workbench_autoscaling_{metric}", doc, value=float(view[key]))
    last = view.get("last") or {}
    if view.get("enabled") and last.get("target") is not None:
        yield GaugeMetricFamily("workbench_autoscaling_target_workers", "Workers the latest scaling decision aims at.",
                                value=float(last["target"]))


class Metrics:
    """An engine's Prometheus metrics (see the module docstring for what is exposed).

    Parameters
    ----------
    gauges
        Returns the engine's state when the metrics are scraped; ``None``: the counted metrics only.
    duration_buckets_s
        Bucket edges (seconds) of the duration histograms.

    Examples
    --------
    >>> metrics = Metrics()
    >>> observer = metrics.observer("tabular")
    >>> observer.request_done({"queue": 0.05, "model": 0.2, "total": 0.3})
    >>> 'workbench_requests_completed_total{pipeline="tabular"} 1.0' in metrics.text()
    True
    """

    def __init__(self, gauges: Callable[[], EngineGauges] | None = None, *,
                 duration_buckets_s: Sequence[float] = DURATION_BUCKETS_S) -> None:
        if list(duration_buckets_s) != sorted(set(duration_buckets_s)) or not duration_buckets_s:
            raise ValueError("duration_buckets_s must be increasing bucket edges (seconds), at least one")
        self.registry = CollectorRegistry()
        """Where every metric of this engine goes; later metrics register here too."""
        self._duration_edges = tuple(float(edge) for edge in duration_buckets_s)
        self._observers: dict[str, PipelineObserver] = {}
        self.register(_CountedCollector(self._observers, self._duration_edges, BATCH_ROWS_BUCKETS))
        if gauges is not None:
            self.register(EngineCollector(gauges))

    def observer(self, pipeline: str) -> PipelineObserver:
        """The observer counting ``pipeline``'s requests (the same one each time, across undeploy and redeploy)."""
        observer = self._observers.get(pipeline)
        if observer is None:
            observer = self._observers[pipeline] = PipelineObserver(self._duration_edges, BATCH_ROWS_BUCKETS)
        return observer

    def register(self, collector: Collector) -> None:
        """Add metrics read when scraped (a ``prometheus_client`` collector) to this registry."""
        self.registry.register(collector)

    def exposition(self) -> bytes:
        """The Prometheus text format (:data:`CONTENT_TYPE`) of every metric in the registry."""
        return generate_latest(self.registry)

    def text(self) -> str:
        """:meth:`exposition` as a string."""
        return self.exposition().decode()
