"""``Workbench``: the Python API for scripts and notebooks.

The engine runs on an event loop in a background thread (anyio's blocking
portal), so the same object works from a plain script, from a notebook whose
kernel already runs a loop (no ``asyncio.run`` inside it), and from async code
(``await wb.apredict(...)``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd
from anyio.from_thread import BlockingPortal, start_blocking_portal

from workbench.backend.dataset import frame_inputs, frame_outputs
from workbench.config import BatchingConfig
from workbench.engine import Engine
from workbench.pipeline.graph import Pipeline, Prediction

if TYPE_CHECKING:
    from workbench.backend.autoscale import ScalingPolicy
    from workbench.backend.offline import BatchReport, Columns
    from workbench.ui.dashboard import Dashboard
    from workbench.ui.widgets import Controls, LiveView

__all__ = ["Workbench"]

T = TypeVar("T")


class Workbench:
    """Deploy pipelines and send them requests, in-process or on a Dask cluster.

    Examples
    --------
    >>> wb = Workbench.local(workers=2)                          # doctest: +SKIP
    >>> wb.deploy("tabular")                                     # doctest: +SKIP
    >>> wb.predict("tabular", {"features": rows})["label"]      # doctest: +SKIP
    >>> wb.set_batching("tabular", max_batch_size=64)            # doctest: +SKIP
    >>> wb.stats("tabular")["latency_ms"]                        # doctest: +SKIP
    >>> wb.close()                                               # doctest: +SKIP
    """

    def __init__(self, start: Callable[[], Awaitable[Engine]]) -> None:
        self._exit = contextlib.ExitStack()
        self._portal: BlockingPortal = self._exit.enter_context(start_blocking_portal())
        try:
            self.engine: Engine = self._portal.call(start)
        except BaseException:
            self._exit.close()
            raise
        self._closed = False

    # -- constructors ------------------------------------------------------------------
    @classmethod
    def local(cls, workers: int = 2, threads_per_worker: int = 1, **cluster_kwargs: Any) -> Workbench:
        """Start a Dask ``LocalCluster`` of ``workers`` processes (the embedded default)."""
        return cls(lambda: Engine.local(workers, threads_per_worker, **cluster_kwargs))

    @classmethod
    def connect(cls, address: str, **client_kwargs: Any) -> Workbench:
        """Attach to a running Dask cluster, e.g. ``Workbench.connect("tcp://10.0.0.5:8786")``."""
        return cls(lambda: Engine.connect(address, **client_kwargs))

    @classmethod
    def inprocess(cls) -> Workbench:
        """Run batches in this process: no cluster, same batching and statistics."""

        async def start() -> Engine:
            return Engine.inprocess()

        return cls(start)

    def _call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        if self._closed:
            raise RuntimeError("this Workbench is closed")
        return self._portal.call(lambda: fn(*args, **kwargs))

    def _call_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a plain function on the engine's loop (the engine is used from that loop only)."""

        async def wrapper() -> T:
            return fn(*args, **kwargs)

        return self._call(wrapper)

    # -- deployments -------------------------------------------------------------------
    def deploy(self, target: Pipeline | str | Path, *, name: str | None = None,
               batching: BatchingConfig | Mapping[str, Any] | None = None, placement: str = "auto",
               variant: str | None = None, reference: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Deploy a pipeline, a pipeline file or a demo name; returns what was deployed.

        ``placement``: ``auto`` (the default: in this process when a batch costs less than a trip to a
        worker, else on the workers), ``inprocess``, ``fused`` or ``by-resource``; see :meth:`set_placement`.
        ``reference``: inputs to score drift against (see :meth:`set_reference`).
        """
        deployment = self._call(self.engine.deploy, target, name=name, batching=batching, placement=placement,
                                variant=variant, reference=reference)
        return {"name": deployment.name, "variants": deployment.variants, "placement": deployment.placement,
                "where": getattr(deployment.runner, "where", None), "dashboard_link": self.dashboard_link}

    def set_placement(self, name: str, placement: str) -> dict[str, Any]:
        """Move ``name``'s batches (``auto``, ``inprocess``, ``fused``, ``by-resource``) with no request dropped.

        Returns where they run now, why, and the measured costs (``stats(name)["placed"]``).
        """
        return self._call(self.engine.set_placement, name, placement)

    def undeploy(self, name: str) -> None:
        self._call(self.engine.undeploy, name)

    def swap(self, name: str, variant: str, stage: str | None = None) -> dict[str, Any]:
        """Switch to another variant with no request dropped; returns the swap event."""
        return self._call(self.engine.swap, name, variant, stage)

    def deployments(self) -> list[str]:
        return self._call_sync(self.engine.names)

    def variants(self, name: str) -> dict[str, list[str]]:
        """The variants each inference stage of ``name`` can be swapped to (those in its model repository)."""
        pipeline = self._call_sync(self.engine.deployment, name).pipeline
        repository = pipeline.repository
        return {stage.name: repository.variants(stage.model) if repository is not None else [stage.variant]
                for stage in pipeline.inference_stages}

    # -- requests ----------------------------------------------------------------------
    def predict(self, name: str, inputs: Mapping[str, Any] | pd.DataFrame, *, timeout_s: float | None = None,
                request_id: str | None = None) -> Prediction | pd.DataFrame:
        """Send one request (one or more rows) and wait for its outputs and timings.

        A pandas DataFrame gives a DataFrame back: one row per input row, with its index; its columns feed
        the inputs as in offline batch (:meth:`batch`), and a 2-D output becomes ``name_0 .. name_{k-1}``.
        The request's id, timings and variants are in the answer's ``attrs``.
        """
        if isinstance(inputs, pd.DataFrame):
            return self._call(self._predict_frame, name, inputs, timeout_s=timeout_s, request_id=request_id)
        return self._call(self.engine.predict, name, inputs, timeout_s=timeout_s, request_id=request_id)

    async def _predict_frame(self, name: str, frame: pd.DataFrame, **request: Any) -> pd.DataFrame:
        pipeline = self.engine.deployment(name).pipeline
        prediction = await self.engine.predict(name, frame_inputs(pipeline, frame), **request)
        answer = frame_outputs(pipeline, prediction.outputs, frame.index)
        answer.attrs.update(request_id=prediction.request_id, timings_ms=dict(prediction.timings_ms),
                            variants=dict(prediction.variants))
        return answer

    async def apredict(self, name: str, inputs: Mapping[str, Any], *, timeout_s: float | None = None,
                       request_id: str | None = None) -> Prediction:
        """Like :meth:`predict`, awaited from any event loop (a notebook's, a web server's)."""
        if self._closed:
            raise RuntimeError("this Workbench is closed")
        future = self._portal.start_task_soon(
            lambda: self.engine.predict(name, inputs, timeout_s=timeout_s, request_id=request_id))
        return await asyncio.wrap_future(future)

    def batch(self, target: Pipeline | str | Path, source: Any, destination: str | Path | None = None, *,
              batch_size: int | None = None, columns: Columns | None = None, overwrite: bool = False,
              progress: bool = True) -> BatchReport:
        """Map a pipeline over a whole dataset, partition by partition, on every worker (offline batch).

        Parameters
        ----------
        target
            A deployed name (its warm workers run it), a :class:`Pipeline`, a pipeline file or a demo name.
        source
            Parquet or CSV paths (file, folder, glob or list), a pandas or Dask DataFrame, or a NumPy or Dask array.
        destination
            A folder to write the predictions to as Parquet; ``None`` returns them in ``report.output``.
        batch_size
            Rows per pipeline call on a worker (default 256).
        columns
            The columns that feed the inputs when their names do not say it: a list, or ``{input: columns}``.
        overwrite
            Replace a destination folder that is not empty.
        progress
            Show Dask's progress bar (text in a terminal, a widget in a notebook).

        Examples
        --------
        >>> report = wb.batch("tabular", "rows/*.parquet", "predictions/")   # doctest: +SKIP
        >>> report.rows, report.seconds, report.rows_per_s                    # doctest: +SKIP
        """
        return self._call(self.engine.batch, target, source, destination, batch_size=batch_size, columns=columns,
                          overwrite=overwrite, progress=progress)

    # -- knobs and numbers -------------------------------------------------------------
    def set_batching(self, name: str, **changes: Any) -> BatchingConfig:
        """Change ``max_batch_size``, ``max_delay_ms``, ``mode`` or ``max_in_flight``; applies to the next batch.

        ``mode="auto", target_p99_ms=30`` hands the two first knobs to the auto-tuner
        (``stats(name)["autotune"]`` says what it chose and why).
        """
        return self._call_sync(self.engine.set_batching, name, **changes)

    def set_latency_target(self, name: str, target_p99_ms: float | None) -> None:
        """Set the p99 latency (ms) to meet (``None`` clears it); in mode ``"auto"`` the tuner aims at it."""
        self._call_sync(self.engine.set_latency_target, name, target_p99_ms)

    def stats(self, name: str, *, recent_s: float | None = None) -> dict[str, Any]:
        """Rolling p50/p95/p99, throughput, queue depth, batch sizes, per-stage timings, knobs and workers.

        With ``recent_s``, ``stats["recent"]`` holds the latency percentiles and throughput of the
        last ``recent_s`` seconds only, where the effect of a change shows within seconds.
        """
        return self._call_sync(self.engine.stats, name, recent_s=recent_s)

    # -- model switching and shadow traffic --------------------------------------------
    def set_policy(self, name: str, policy: str = "fixed", *, target_p99_ms: float | None = None,
                   stage: str | None = None, candidates: Sequence[str] | None = None, calibrate: bool = True,
                   interval_s: float = 1.0, window_s: float = 3.0, **rules: Any) -> dict[str, Any]:
        """Pick the variant by hand (``"fixed"``) or by ``"best-quality-within-target"`` under the current load.

        See :meth:`Engine.set_policy <workbench.engine.Engine.set_policy>`; ``stats(name)["switching"]``
        shows the candidates (quality, predicted p99), the last decision and its reason.

        Examples
        --------
        >>> wb.set_policy("text", "best-quality-within-target", target_p99_ms=40,
        ...               candidates=["fp32", "int8"], dwell_s=10)                      # doctest: +SKIP
        """
        return self._call(self.engine.set_policy, name, policy, target_p99_ms=target_p99_ms, stage=stage,
                          candidates=candidates, calibrate=calibrate, interval_s=interval_s, window_s=window_s,
                          **rules)

    def shadow(self, name: str, variant: str, *, fraction: float = 0.1, stage: str | None = None,
               max_pending: int = 64, output: str | None = None) -> dict[str, Any]:
        """Mirror ``fraction`` of ``name``'s traffic to ``variant`` without changing a response.

        ``stats(name)["shadow"]`` compares it with the active variant: latency, agreement, accuracy
        on labelled requests. See :meth:`Engine.shadow <workbench.engine.Engine.shadow>`.

        Examples
        --------
        >>> wb.shadow("text", "int8", fraction=0.25)                  # doctest: +SKIP
        >>> wb.stats("text")["shadow"]["agreement"]["rate"]           # doctest: +SKIP
        0.98
        """
        return self._call(self.engine.shadow, name, variant, fraction=fraction, stage=stage,
                          max_pending=max_pending, output=output)

    def stop_shadow(self, name: str) -> dict[str, Any] | None:
        """Stop the shadow traffic of ``name``; returns its last report (``None`` if none ran)."""
        return self._call(self.engine.stop_shadow, name)

    # -- feedback ----------------------------------------------------------------------
    def feedback(self, name: str, labels: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
        """Post ground-truth labels by request id (``{id: label}`` or ``[{"id": ..., "label": ...}]``).

        The ids are ``Prediction.request_id`` (or the V2 response's ``id``); returns what was
        accepted, the ids not found in the prediction log, and the live quality per variant.
        """
        return self._call(self.engine.feedback, name, labels)

    def quality(self, name: str) -> dict[str, Any]:
        """Live quality per variant from the labels posted: count, accuracy, per-class precision and recall."""
        return self._call_sync(self.engine.quality, name)

    def export_predictions(self, path: str | Path, name: str | None = None, since: float | None = None) -> int:
        """Write the logged predictions (of ``name``, from Unix time ``since``) with their labels to Parquet."""
        return self._call(self.engine.export_predictions, path, name, since)

    def set_reference(self, name: str, inputs: Mapping[str, Any], *, predictions: Mapping[str, Any] | None = None,
                      **monitor: Any) -> dict[str, Any]:
        """Score ``name``'s served rows for drift against reference ``inputs``; returns :meth:`drift`.

        Examples
        --------
        >>> wb.set_reference("tabular", {"features": x_train})      # doctest: +SKIP
        >>> wb.stats("tabular")["drift"]["alerts"]                  # doctest: +SKIP
        ['features[3]']
        """
        return self._call(self.engine.set_reference, name, inputs, predictions=predictions, **monitor)

    def drift(self, name: str) -> dict[str, Any]:
        """PSI per input feature and for the predictions, the worst features and the alert level."""
        return self._call_sync(self.engine.drift, name)

    def watch_business(self, name: str, *, window_s: float = 60.0, baseline_windows: int = 10,
                       rule: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Count ``name``'s business signals afresh over these windows; returns ``stats(name)["business"]``.

        The shares of the last ``window_s`` seconds are tested against the ``baseline_windows``
        windows before; ``rule`` holds the shift test's ``z``, ``min_change`` and ``min_count``.

        Examples
        --------
        >>> wb.watch_business("tabular", window_s=10, baseline_windows=6)      # doctest: +SKIP
        """
        return self._call_sync(self.engine.watch_business, name, window_s=window_s,
                               baseline_windows=baseline_windows, rule=rule)

    def metrics_text(self) -> str:
        """Every metric in the Prometheus text format, as ``GET /metrics`` serves it.

        Examples
        --------
        >>> print(wb.metrics_text())                                  # doctest: +SKIP
        workbench_requests_completed_total{pipeline="tabular"} 12.0
        ...
        """
        return self._call_sync(self.engine.metrics_text)

    def describe(self) -> dict[str, Any]:
        return self._call_sync(self.engine.describe)

    @property
    def dashboard_link(self) -> str | None:
        """The Dask dashboard of the cluster (``None`` in-process)."""
        return self.describe().get("dashboard_link")

    # -- autoscaling -------------------------------------------------------------------
    def autoscale(self, minimum: int | None, maximum: int | None = None, *, interval_s: float = 1.0,
                  wait_count: int = 3, window_s: float = 10.0, cluster: Any = None,
                  policy: ScalingPolicy | Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Let the number of workers follow the traffic, between ``minimum`` and ``maximum``.

        Workers are added when requests queue up, or when a p99 exceeds the
        deployment's latency target (:meth:`set_latency_target`) while the
        workers are busy; they are removed when the workers are mostly idle and
        latency is comfortably under target. Every decision, with the numbers
        behind it, is in :meth:`autoscaling` and ``stats(name)["autoscaling"]``.

        Parameters
        ----------
        minimum, maximum
            Bounds on the number of workers; ``autoscale(None)`` turns autoscaling off.
        interval_s
            Seconds between two decisions.
        wait_count
            Decisions in a row that must choose a worker before it is removed.
        window_s
            Longest stretch of the recent past the figures cover.
        cluster
            The cluster manager to scale when this Workbench did not start one
            (``Workbench.connect``): a dask-kubernetes ``KubeCluster``, a dask-jobqueue cluster, ...
        policy
            Thresholds of the rule (:class:`~workbench.backend.autoscale.ScalingPolicy` or its fields).

        Examples
        --------
        >>> wb = Workbench.local(workers=1)                                 # doctest: +SKIP
        >>> wb.deploy("tabular")                                            # doctest: +SKIP
        >>> wb.set_latency_target("tabular", 20)                            # doctest: +SKIP
        >>> wb.autoscale(1, 4, interval_s=0.5)                              # doctest: +SKIP
        >>> wb.autoscaling()["decisions"][-1]["reason"]                     # doctest: +SKIP
        'tabular: p99 31.2 ms > target 20 ms (utilisation 93% of 1 threads)'
        """
        return self._call_sync(self.engine.autoscale, minimum, maximum, interval_s=interval_s,
                               wait_count=wait_count, window_s=window_s, cluster=cluster, policy=policy)

    def stop_autoscaling(self) -> None:
        """Stop autoscaling; the cluster keeps the workers it has."""
        self._call_sync(self.engine.stop_autoscaling)

    def autoscaling(self, name: str | None = None) -> dict[str, Any]:
        """Autoscaling settings, the latest target and why, and the recent scaling decisions."""
        return self._call_sync(self.engine.autoscaling, name)

    # -- notebook ----------------------------------------------------------------------
    def controls(self, name: str, *, interval_s: float | None = None) -> Controls:
        """ipywidgets controls of ``name``: variant, batching knobs, latency target, auto-tune and autoscaling.

        Each change goes through the engine, as the control API's do; changes made
        elsewhere (the dashboard, the API, the auto-tuner) show at the next refresh,
        every ``interval_s`` (default ``WORKBENCH_UI_REFRESH_S``) from a background thread.

        Examples
        --------
        >>> wb.controls("text")                                      # doctest: +SKIP
        """
        from workbench.ui.widgets import Controls

        return Controls(self, name, interval_s=interval_s)

    def live(self, name: str, *, interval_s: float | None = None, window_s: float = 60.0,
             recent_s: float = 3.0) -> LiveView:
        """A live view of ``name``'s latency (p50/p95/p99 against its target) and throughput over ``window_s``.

        Redrawn every ``interval_s`` (default ``WORKBENCH_UI_REFRESH_S``) from a background
        thread, so it keeps moving while other cells run; each point covers the last
        ``recent_s`` seconds. ``.close()`` stops it.

        Examples
        --------
        >>> wb.live("text")                                          # doctest: +SKIP
        """
        from workbench.ui.widgets import LiveView

        return LiveView(self, name, interval_s=interval_s, window_s=window_s, recent_s=recent_s)

    def dashboard(self, name: str | None = None) -> Dashboard:
        """The Panel dashboard of this Workbench: live charts, workers, scaling, controls and the traffic lab.

        The same dashboard as ``/dashboard`` of ``workbench serve``; every control goes
        through this Workbench's engine. It refreshes every ``WORKBENCH_UI_REFRESH_S``
        seconds from a Panel periodic callback (on the kernel's loop in a notebook),
        reading the engine through this Workbench's portal; ``.stop()`` stops it. In a
        notebook, load Panel's extension first (``import panel as pn; pn.extension()``).

        Parameters
        ----------
        name
            The deployment shown first (default: the first deployed).

        Examples
        --------
        >>> wb.dashboard("tabular")                                  # doctest: +SKIP
        >>> wb.dashboard().show()          # in a browser tab instead   # doctest: +SKIP
        """
        from workbench.ui.dashboard import Dashboard
        from workbench.ui.hub import Hub

        if self._closed:
            raise RuntimeError("this Workbench is closed")
        hub: Hub | None = getattr(self, "_hub", None)
        if hub is None:
            # NOTE: one hub per Workbench: its dashboards share one statistics feed and one traffic lab.
            hub = self._hub = Hub.on_portal(self.engine, self._portal)
        return Dashboard.of(hub, name)

    # -- lifetime ----------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Answer what is queued, stop the batchers, and stop the cluster if this Workbench started it."""
        if self._closed:
            return
        try:
            self._portal.call(self.engine.close)
        finally:
            self._closed = True
            self._exit.close()

    def __enter__(self) -> Workbench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._closed:
            return "Workbench(closed)"
        info = self.describe()
        return (f"Workbench({info['kind']}, workers={len(info.get('workers', {}))}, "
                f"deployed={sorted(info['deployments'])}, dashboard={info.get('dashboard_link')})")
