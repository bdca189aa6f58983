"""The one core behind every surface: deployments, their batchers, and the backend.

The :class:`Engine` lives on one event loop. The REST front runs it on its
own loop; :class:`~workbench.api.Workbench` runs it on a background loop for
scripts and notebooks. The Python API, the dashboard and the widgets all go
through it, so there is one copy of the logic.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from workbench import switching
from workbench._sync import aclose
from workbench.backend.cluster_state import Refused
from workbench.backend.dataset import read_reference
from workbench.backend.inprocess import InProcessBackend
from workbench.backend.placement import PlacedRunner, PlacementDecision, check_placement
from workbench.batching.autotune import AutoTuner, Decision, TuningRules
from workbench.batching.batch import AnsweredBatch
from workbench.batching.batcher import DynamicBatcher, RunBatch
from workbench.config import BatchingConfig, WorkbenchSettings
from workbench.errors import NotDeployed, WorkbenchError
from workbench.monitor.business import BusinessCollector, BusinessMonitor, ShiftRule
from workbench.monitor.drift import DriftCollector, DriftMonitor
from workbench.monitor.feedback import FeedbackLoop, normalise_labels
from workbench.monitor.metrics import DeploymentGauges, EngineGauges, Metrics
from workbench.monitor.predlog import PredictionLog, open_prediction_log
from workbench.monitor.pycosts import CachedFetch, PythonCostsCollector, mitigate_as_configured, process_costs
from workbench.monitor.stats import BatcherStats
from workbench.pipeline.cached import cache_report
from workbench.pipeline.graph import Pipeline, Prediction
from workbench.switching.metrics import SwitchingCollector

if TYPE_CHECKING:
    from workbench.backend.autoscale import Autoscaler, ScalingPolicy
    from workbench.backend.offline import BatchReport, Columns

__all__ = ["Backend", "Deployment", "Engine", "Observer", "new_request_id", "resolve_pipeline"]

logger = logging.getLogger(__name__)
#: The batching knobs kept with the cluster (``max_in_flight`` is fitted to each front's own workers).
_SHARED_KNOBS = ("max_batch_size", "max_delay_ms", "mode")

_ID_PREFIX = os.urandom(10).hex()
_ID_COUNTER = itertools.count()


def _new_id_prefix() -> None:
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX, _ID_COUNTER = os.urandom(10).hex(), itertools.count()


os.register_at_fork(after_in_child=_new_id_prefix)  # NOTE: a forked child must not repeat its parent's ids


def new_request_id() -> str:
    """A request id unique across processes and restarts: 80 random bits per process, then a counter.

    NOTE: ``uuid.uuid4().hex`` costs 3 % of a small request's time in the serving process; this costs a tenth.
    """
    return f"{_ID_PREFIX}{next(_ID_COUNTER):012x}"


#: How long a retired generation's batches in flight may take to finish before it is dropped.
_RETIRE_GRACE_S = 30.0


class Observer(Protocol):
    """Watches every answered request of a deployment (business metrics, shadow traffic, ...).

    ``observe`` runs on the engine's loop right after the request's batch is answered: keep it
    to an append; anything costly belongs in ``report``, which runs when someone reads. An
    observer that can take the whole batch at once defines ``observe_batch(batch)``
    (an :class:`~workbench.batching.batch.AnsweredBatch`) instead: it is then fed once per batch.
    Optional: ``labelled(pairs)`` hears of the ``(request_id, label)`` pairs posted to
    :meth:`Engine.feedback`, and ``async aclose()`` is awaited when the deployment goes.
    """

    def observe(self, tensors: Mapping[str, Any], prediction: Prediction) -> None: ...
    def report(self) -> dict[str, Any]: ...


class Backend(Protocol):
    """Where batches run: this process, or Dask workers."""

    kind: str
    loads_locally: bool
    in_flight_per_thread: int

    def on_workers_changed(self, listener: Any) -> None: ...
    async def deploy(self, name: str, generation: int, pipeline: Pipeline, placement: str = ...) -> RunBatch: ...
    async def place(self, name: str, generation: int, pipeline: Pipeline, placement: str) -> RunBatch: ...
    async def retire(self, name: str, generation: int) -> None: ...
    def workers(self, name: str, generation: int) -> list[dict[str, Any]]: ...
    def threads(self, name: str, generation: int) -> int: ...
    async def publish(self, name: str, state: dict[str, Any] | None) -> None: ...
    async def publish_change(self, name: str, fields: Mapping[str, Any], *,
                             expect_generation: int | None = None) -> None: ...
    async def next_generation(self, name: str, current: int) -> int: ...
    def on_state_change(self, listener: Any) -> None: ...
    async def published(self) -> dict[str, Any]: ...
    def describe(self) -> dict[str, Any]: ...
    async def close(self) -> None: ...


def resolve_pipeline(target: Pipeline | str | Path, *, load: bool) -> Pipeline:
    """A pipeline from a :class:`Pipeline`, a pipeline file, the name of a demo or of a file in the pipelines folder."""
    if isinstance(target, Pipeline):
        if target.loaded == load:
            return target
        return Pipeline.from_dict(target.to_dict(), load=load)
    from workbench.demo import DEMOS, demo_pipeline_path

    if isinstance(target, str) and target in DEMOS:
        path = demo_pipeline_path(target)
        if not path.exists():
            raise WorkbenchError(f"demo {target!r} is not built yet: run `workbench models build`", 404)
        return Pipeline.from_yaml(path, load=load)
    path = Path(target)
    if isinstance(target, str) and not path.exists():
        named = WorkbenchSettings().pipelines_dir / f"{target}.yaml"
        path = named if named.exists() else path
    if not path.exists():
        raise WorkbenchError(f"no pipeline file {str(path)!r} (and no demo of that name; demos: {sorted(DEMOS)})", 404)
    return Pipeline.from_yaml(path, load=load)


@dataclass
class Deployment:
    """One deployed pipeline: what serves it now and how it is tuned."""

    name: str
    pipeline: Pipeline
    generation: int
    placement: str
    batcher: DynamicBatcher
    runner: RunBatch
    pinned_in_flight: bool = False
    deployed_at: float = field(default_factory=time.time)
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=200))
    latency_target_ms: float | None = None
    """The p99 latency (ms) to meet: the auto-tuner's target in mode ``"auto"``."""
    autotuner: AutoTuner | None = field(default=None, repr=False)
    """Moves the knobs towards ``latency_target_ms`` while the mode is ``"auto"``."""
    swapping: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    """Held by a variant swap: swaps asked for at once take turns."""
    drift: DriftMonitor | None = field(default=None, repr=False)
    """Scores the served rows against reference data, once :meth:`Engine.set_reference` gave some."""
    observers: dict[str, Observer] = field(default_factory=dict, repr=False)
    """Watchers of every answered request, by the key their report has in :meth:`Engine.stats`."""
    version_seen: int = 0
    """The version of the cluster's shared state this deployment last applied (see :meth:`Engine.settled`)."""

    @property
    def variants(self) -> dict[str, str]:
        """Active variant per inference stage."""
        return {s.name: s.variant for s in self.pipeline.inference_stages}

    def record(self, kind: str, **details: Any) -> dict[str, Any]:
        event = {"time": time.time(), "event": kind, **details}
        self.events.append(event)
        return event

    def state(self) -> dict[str, Any]:
        """What is kept with the cluster (see :meth:`Backend.publish`)."""
        config = self.batcher.config
        return {
            "spec": self.pipeline.to_dict(), "generation": self.generation, "placement": self.placement,
            "batching": {"max_batch_size": config.max_batch_size, "max_delay_ms": config.max_delay_ms,
                         "mode": config.mode},
            "latency_target_ms": self.latency_target_ms,
        }


class Engine:
    """Deployments on a backend, each behind its own dynamic batcher. Use it from one event loop."""

    def __init__(self, backend: Backend, *, prediction_log: PredictionLog | bool = True,
                 latency_budget_ms: float | Literal["settings"] | None = "settings") -> None:
        self.backend = backend
        self.latency_budget_ms = (WorkbenchSettings().latency_budget_ms if latency_budget_ms == "settings"
                                  else latency_budget_ms)
        """The p99 target (ms) of a deployment that names none (``None``: no target); see :meth:`deploy`."""
        if self.latency_budget_ms is not None:
            TuningRules(target_p99_ms=self.latency_budget_ms)
        self.predictions = open_prediction_log() if prediction_log is True else (prediction_log or None)
        """Where answered requests are logged (``True``: as the settings say; ``False``: nowhere)."""
        self.feedback_loop = FeedbackLoop(self.predictions) if self.predictions is not None else None
        self._deployments: dict[str, Deployment] = {}
        self._autoscaler: Autoscaler | None = None
        self.metrics = Metrics(self._gauges)
        """This engine's Prometheus metrics (its own registry); see :mod:`workbench.monitor.metrics`."""
        self.metrics.register(DriftCollector(self._drift_monitors))
        self.metrics.register(SwitchingCollector(lambda: {n: d.observers for n, d in list(self._deployments.items())}))
        self.metrics.register(BusinessCollector(self._business_monitors))
        backend.on_workers_changed(self._workers_changed)
        backend.on_state_change(self._heard_change)
        restarted = getattr(backend, "on_scheduler_restart", None)
        if restarted is not None:
            restarted(self._scheduler_restarted)
        # NOTE: this front's publications and what it hears of others' run one after another, in order: a change
        # heard is read back only once this front's own earlier changes have reached the scheduler.
        self._shared_tail: asyncio.Future[None] | None = None
        process_costs()
        # NOTE: worker figures are fetched when read (stats, scrape), one client.run per 5 s at most, rather
        # than piggy-backed on batch replies: nothing is added to the request path, and nobody pays when no one looks.
        fetch = getattr(backend, "python_costs", None)
        self._worker_costs = CachedFetch(fetch) if fetch is not None else None
        self.metrics.register(PythonCostsCollector(self.python_costs))

    @classmethod
    def inprocess(cls) -> Engine:
        return cls(InProcessBackend())

    @classmethod
    async def local(cls, workers: int = 2, threads_per_worker: int = 1, **cluster_kwargs: Any) -> Engine:
        from workbench.backend.dask import DaskBackend

        return cls(await DaskBackend.local(workers, threads_per_worker, **cluster_kwargs))

    @classmethod
    async def connect(cls, address: str, **client_kwargs: Any) -> Engine:
        """Attach to a cluster; deployments that other processes made there are picked up."""
        from workbench.backend.dask import DaskBackend

        engine = cls(await DaskBackend.connect(address, **client_kwargs))
        await engine.attach_published()
        return engine

    async def close(self) -> None:
        """Finish what is in flight, then stop the batchers and the backend."""
        self.stop_autoscaling()
        await self._settle_shared()
        for deployment in list(self._deployments.values()):
            if deployment.autotuner is not None:
                await deployment.autotuner.stop()
            await _close_observers(deployment)
            await deployment.batcher.close()
            await aclose(deployment.runner)
        self._deployments.clear()
        await self.backend.close()
        if self.predictions is not None:
            # NOTE: after the batchers: every request they answered has been queued, and is written now.
            await asyncio.to_thread(self.predictions.close)

    # -- deployments -------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._deployments)

    def __contains__(self, name: object) -> bool:
        """Whether a pipeline is deployed as ``name`` (read per request: no list is built)."""
        return name in self._deployments

    def ready(self, name: str | None = None) -> bool:
        """Whether ``name`` (or every deployment) has at least one warm worker to run its batches."""
        names = [name] if name is not None else list(self._deployments)
        return all(self.backend.workers(n, self.deployment(n).generation) for n in names)

    def deployment(self, name: str) -> Deployment:
        try:
            return self._deployments[name]
        except KeyError:
            raise NotDeployed(f"no pipeline is deployed as {name!r}; deployed: {sorted(self._deployments)}") from None

    async def deploy(self, target: Pipeline | str | Path, *, name: str | None = None,
                     batching: BatchingConfig | Mapping[str, Any] | None = None, placement: str = "auto",
                     variant: str | None = None, reference: Mapping[str, Any] | None = None) -> Deployment:
        """Deploy a pipeline (object, file, or demo name) under ``name`` (default: the pipeline's name).

        ``placement``: ``auto`` (embedded in this process when a batch costs less than a trip to a
        worker, else on the workers; see :mod:`workbench.backend.placement`), ``inprocess``, ``fused``
        or ``by-resource``. ``reference``: inputs (many rows) to score drift against, as
        :meth:`set_reference` takes them (default: the pipeline file's ``reference``). ``batching`` may
        name ``target_p99_ms``, the p99 latency to hold (requests the queue would keep past it get 429
        at once); without it the engine's :attr:`latency_budget_ms` applies (1 s by default), and
        ``None`` sets no target.
        """
        check_placement(placement)
        pipeline = resolve_pipeline(target, load=self.backend.loads_locally)
        if variant is not None:
            pipeline = pipeline.with_variant(variant)
        name = name or pipeline.name
        if name in self._deployments:
            raise WorkbenchError(f"a pipeline is already deployed as {name!r}; undeploy it or swap its variant", 409)
        if reference is None and pipeline.reference is not None:
            reference = await asyncio.to_thread(read_reference, pipeline, pipeline.reference)
        if reference is not None:
            pipeline.validate(reference)  # NOTE: a bad reference fails the deploy before anything is deployed
        settings = dict(batching) if isinstance(batching, Mapping) else {}
        # NOTE: the default budget unless the caller named a target, ``None`` included (no target at all).
        target_p99_ms = settings.pop("target_p99_ms") if "target_p99_ms" in settings else self.latency_budget_ms
        config = batching if isinstance(batching, BatchingConfig) else BatchingConfig(**settings)
        if config.mode == "auto" and target_p99_ms is None:
            raise ValueError("mode 'auto' needs a latency target: add target_p99_ms to batching")
        if target_p99_ms is not None:
            TuningRules(target_p99_ms=target_p99_ms)
        generation = 1
        runner = await self.backend.deploy(name, generation, pipeline, placement)
        mitigate_as_configured()  # NOTE: the pipeline is warm here (in-process); workers apply it in their plugin
        deployment = self._add(name, pipeline, generation, placement, runner, config, pinned="max_in_flight" in (
            batching if isinstance(batching, Mapping) else {}))
        deployment.record("deployed", variants=deployment.variants, placement=placement, **_where(runner))
        if target_p99_ms is not None:
            deployment.latency_target_ms = float(target_p99_ms)
            self._follow_target(deployment)
            await _seed_admission(deployment)
        await self.backend.publish(name, deployment.state())
        if reference is not None:
            await self.set_reference(name, reference)
        return deployment

    def _add(self, name: str, pipeline: Pipeline, generation: int, placement: str, runner: RunBatch,
             config: BatchingConfig, *, pinned: bool) -> Deployment:
        # NOTE: text pads with "" (a shorter candidate list, say), which stages read as "no item there".
        pad_values = {n: "" if spec.dtype == "str" else 0 for n, spec in pipeline.input_specs.items()}
        batcher = DynamicBatcher(name, runner, config, pad_values=pad_values,
                                 stats=BatcherStats(observer=self.metrics.observer(name)))
        deployment = Deployment(name, pipeline, generation, placement, batcher, runner, pinned_in_flight=pinned)
        batcher.on_batch = functools.partial(self._answered, deployment)
        for stage in pipeline.stages:
            deployment.observers.update(stage.observers())
        if pipeline.business:
            deployment.observers["business"] = BusinessMonitor(pipeline.business, variants=lambda: deployment.variants)
        self._deployments[name] = deployment
        self._fit_in_flight(deployment)
        _hear_moves(deployment)
        return deployment

    async def attach_published(self) -> list[str]:
        """Serve the deployments kept with the cluster that this engine does not serve yet."""
        from workbench.backend.dask import DaskBackend

        attached = []
        for name, state in (await self.backend.published()).items():
            if name in self._deployments or not isinstance(self.backend, DaskBackend):
                continue
            pipeline = Pipeline.from_dict(state["spec"], load=False)
            runner = await self.backend.attach(name, state["generation"], pipeline, state["placement"])
            deployment = self._add(name, pipeline, state["generation"], state["placement"], runner,
                                   BatchingConfig(**state["batching"]), pinned=False)
            deployment.record("attached", generation=state["generation"])
            # NOTE: the target is cluster state; each serving process tunes its own batcher towards it.
            deployment.latency_target_ms = state.get("latency_target_ms")
            self._follow_target(deployment)
            if deployment.latency_target_ms is not None:
                await _seed_admission(deployment)
            attached.append(name)
        return attached

    async def undeploy(self, name: str) -> None:
        """Stop serving ``name``: queued requests are answered first, then the workers drop it."""
        deployment = self.deployment(name)
        await self._drop_here(deployment)
        await self.backend.retire(name, deployment.generation)
        await self._settle_shared()
        await self.backend.publish(name, None)

    async def _drop_here(self, deployment: Deployment) -> None:
        """Stop serving a deployment in this process (its queued requests are answered first)."""
        self._deployments.pop(deployment.name, None)
        if deployment.autotuner is not None:
            await deployment.autotuner.stop()
        await _close_observers(deployment)
        await deployment.batcher.close()
        await aclose(deployment.runner)

    # -- the state shared with other fronts ----------------------------------------------
    def _share(self, name: str, fields: Mapping[str, Any]) -> None:
        """Publish changed fields of ``name``'s shared state, after this front's earlier changes (not awaited)."""
        if fields:
            self._after_shared(lambda: self.backend.publish_change(name, fields))

    def _heard_change(self, name: str) -> None:
        """Another front changed ``name``: read it back and apply it, once this front's own changes are out."""
        self._after_shared(lambda: self._follow(name))

    def _after_shared(self, step: Callable[[], Awaitable[None]]) -> None:
        previous = self._shared_tail

        async def run() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            try:
                await step()
            except Exception:  # NOTE: the next change or the next follow tries again; nobody awaits this one
                logger.warning("keeping the cluster's shared state failed", exc_info=True)

        self._shared_tail = asyncio.ensure_future(run())

    async def _settle_shared(self) -> None:
        tail = self._shared_tail
        if tail is not None:
            await asyncio.wait([tail])

    async def settled(self) -> None:
        """Return once this front's changes have reached the cluster and the changes heard are applied."""
        while True:
            tail = self._shared_tail
            await self._settle_shared()
            if tail is self._shared_tail:
                return

    async def _scheduler_restarted(self) -> None:
        """A new scheduler at the same address knows nothing: give it this front's deployments back."""
        restore = self.backend.restore  # type: ignore[attr-defined]  # NOTE: only a Dask backend calls this
        for deployment in list(self._deployments.values()):
            try:
                held = await restore(deployment.name, deployment.generation, deployment.pipeline)
                await self.backend.publish(deployment.name, deployment.state())
            except Exception as exc:  # NOTE: the next restart, or a redeploy, tries again; say why now
                logger.warning("restoring %s on the restarted scheduler failed", deployment.name, exc_info=True)
                deployment.record("scheduler_restore_failed", error=str(exc))
                continue
            deployment.record("scheduler_restored", workers=held)

    async def _follow(self, name: str) -> None:
        """Apply what the cluster now holds for ``name`` (another front changed it)."""
        state = (await self.backend.published()).get(name)
        deployment = self._deployments.get(name)
        if state is None:
            if deployment is not None:
                await self._drop_here(deployment)
            return
        if deployment is None:
            await self.attach_published()
            return
        if state.get("version", 0) <= deployment.version_seen:
            return
        deployment.version_seen = state.get("version", 0)
        if state["generation"] != deployment.generation:
            await self._follow_swap(deployment, state)
        elif state["placement"] != deployment.placement:
            async with deployment.swapping:
                runner = await self.backend.place(name, deployment.generation, deployment.pipeline, state["placement"])
                deployment.placement = state["placement"]
                await self._switch_runner(deployment, runner)
            deployment.record("placement", placement=state["placement"], by="another front", **_where(runner))
        config = deployment.batcher.config
        knobs = {k: v for k, v in state.get("batching", {}).items() if getattr(config, k, v) != v}
        if knobs:
            deployment.batcher.set_batching(**knobs)
            deployment.record("batching", by="another front", **knobs)
        if state.get("latency_target_ms") != deployment.latency_target_ms:
            deployment.latency_target_ms = state.get("latency_target_ms")
            deployment.record("latency_target", by="another front", target_p99_ms=deployment.latency_target_ms)
        self._follow_target(deployment)

    async def _follow_swap(self, deployment: Deployment, state: Mapping[str, Any]) -> None:
        """Serve the generation another front swapped to (its workers hold it already)."""
        attach = getattr(self.backend, "attach", None)
        if attach is None:
            return
        async with deployment.swapping:
            before = deployment.variants
            pipeline = Pipeline.from_dict(state["spec"], load=False)
            runner = await attach(deployment.name, state["generation"], pipeline, state["placement"])
            deployment.pipeline, deployment.generation = pipeline, state["generation"]
            deployment.placement = state["placement"]
            await self._switch_runner(deployment, runner)
        deployment.record("swapped", before=before, after=deployment.variants, by="another front")

    async def swap(self, name: str, variant: str, stage: str | None = None) -> dict[str, Any]:
        """Switch an inference stage to another variant without dropping a request.

        The new variant is loaded and warmed on every worker first; batches formed
        after that go to it; the old one is dropped once its batches in flight finish.
        """
        deployment = self.deployment(name)
        # NOTE: two swaps at once would build the same next generation with different variants, and the
        # later would retire the generation the earlier had just made active: they take turns instead.
        async with deployment.swapping:
            before = deployment.variants
            began = time.perf_counter()
            old_generation = deployment.generation
            try:
                pipeline = deployment.pipeline.with_variant(variant, stage)
                generation = await self.backend.next_generation(name, old_generation)
                runner = await self.backend.deploy(name, generation, pipeline, deployment.placement)
            except Exception as exc:  # the variant cannot be built: the current one keeps serving
                deployment.record("swap_failed", variant=variant, error=str(exc))
                raise
            try:
                # NOTE: a compare-and-set: another front that swapped first wins, and this swap is undone.
                await self.backend.publish_change(name, {"spec": pipeline.to_dict(), "generation": generation},
                                                  expect_generation=old_generation)
            except Refused as exc:
                await aclose(runner)
                await self.backend.retire(name, generation)
                deployment.record("swap_failed", variant=variant, error=str(exc))
                raise WorkbenchError(f"pipeline {name!r}: {exc}; the swap to {variant!r} was undone", 409) from None
            deployment.pipeline, deployment.generation = pipeline, generation
            await self._switch_runner(deployment, runner)
            await self.backend.retire(name, old_generation)
            event = deployment.record("swapped", before=before, after=deployment.variants,
                                      seconds=round(time.perf_counter() - began, 3))
        return event

    async def set_placement(self, name: str, placement: str) -> dict[str, Any]:
        """Move ``name``'s batches (``auto``, ``inprocess``, ``fused``, ``by-resource``) with no request dropped.

        Batches formed from now on go where the new placement says; those in flight finish where they
        are. Returns ``stats(name)["placed"]``.
        """
        deployment = self.deployment(name)
        check_placement(placement)
        async with deployment.swapping:  # NOTE: a swap and a move take turns: each replaces the runner
            runner = await self.backend.place(name, deployment.generation, deployment.pipeline, placement)
            deployment.placement = placement
            await self._switch_runner(deployment, runner)
            deployment.record("placement", placement=placement, **_where(runner))
            self._share(name, {"placement": placement})
        # NOTE: outside the lock: what this front heard meanwhile may wait for it.
        await self._settle_shared()
        return _placed(runner)

    async def _switch_runner(self, deployment: Deployment, runner: RunBatch) -> None:
        """Send the batches formed from now on to ``runner``; the old one's finish, then it is closed."""
        old, deployment.runner = deployment.runner, runner
        deployment.batcher.replace_runner(runner)
        self._fit_in_flight(deployment)
        _hear_moves(deployment)
        await self._drain(old)
        await aclose(old)

    @staticmethod
    async def _drain(runner: RunBatch) -> None:
        deadline = time.monotonic() + _RETIRE_GRACE_S
        while getattr(runner, "in_flight", 0) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    # -- offline batch -----------------------------------------------------------------
    async def batch(self, target: Pipeline | str | Path, source: Any, destination: str | Path | None = None, *,
                    batch_size: int | None = None, columns: Columns | None = None, overwrite: bool = False,
                    progress: bool = True) -> BatchReport:
        """Map a pipeline (deployed name, object, file or demo name) over a dataset on every worker.

        A deployed pipeline runs on its warm workers; see :func:`workbench.backend.offline.run_batch`.
        """
        from workbench.backend.dask import DaskBackend
        from workbench.backend.offline import run_batch
        from workbench.backend.worker import plugin_name

        deployment = self._deployments.get(target) if isinstance(target, str) else None
        pipeline = deployment.pipeline if deployment else resolve_pipeline(target, load=self.backend.loads_locally)
        return await run_batch(pipeline, source, destination,
                               client=self.backend.client if isinstance(self.backend, DaskBackend) else None,
                               deployment=plugin_name(deployment.name, deployment.generation) if deployment else None,
                               batch_size=batch_size, columns=columns, overwrite=overwrite, progress=progress)

    # -- requests and knobs ------------------------------------------------------------
    async def predict(self, name: str, inputs: Mapping[str, Any], *, timeout_s: float | None = None,
                      request_id: str | None = None) -> Prediction:
        """Validate a request, queue it for its pipeline's batcher and await its outputs and timings.

        ``timeout_s`` is the request's deadline: if it has not been dispatched by
        then, it fails with :class:`~workbench.batching.DeadlineExceeded` and is not run.
        ``request_id`` names the request in the prediction log (a new one when not given);
        it comes back as ``Prediction.request_id``, for labels posted later (:meth:`feedback`).
        """
        deployment = self.deployment(name)
        try:
            tensors = deployment.pipeline.validate(inputs)
        except WorkbenchError as exc:
            self.metrics.observer(name).request_failed(exc.status_code, 1)
            raise
        # NOTE: the log, drift and the observers hear of the request with its batch (see _answered).
        return await deployment.batcher.submit(tensors, timeout_s=timeout_s, request_id=request_id or new_request_id())

    def _answered(self, deployment: Deployment, batch: AnsweredBatch) -> None:
        """Feed one answered batch to drift, the observers and the prediction log: once a batch, on the loop.

        An observer with ``observe_batch`` hears of the batch; one without, of each of its requests.
        """
        if deployment.drift is not None:
            deployment.drift.record(batch.inputs, batch.outputs)
        for observer in list(deployment.observers.values()):
            per_batch = getattr(observer, "observe_batch", None)
            if per_batch is not None:
                per_batch(batch)
            else:
                for tensors, prediction in zip(batch.requests, batch.predictions):
                    observer.observe(tensors, prediction)
        if self.predictions is not None:
            # NOTE: only queues one record for the batch (references, no copy): the log's own thread encodes it.
            self.predictions.record_batch(deployment.name, batch.variants or deployment.variants, batch)

    # -- feedback ----------------------------------------------------------------------
    def _feedback(self) -> FeedbackLoop:
        if self.feedback_loop is None:
            raise WorkbenchError("the prediction log is off (WORKBENCH_PREDICTION_LOG=off), so labels have "
                                 "nothing to join: turn it on to collect feedback", 409)
        return self.feedback_loop

    async def feedback(self, name: str, labels: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
        """Join ground-truth labels to the predictions logged for ``name``; returns the counts and the quality.

        ``labels`` is ``{request_id: label}`` or ``[{"id": ..., "label": ...}, ...]``; a request of
        several rows takes a list of labels. Ids not in the log come back under ``"unknown"``.
        See :mod:`workbench.monitor.feedback`.
        """
        loop = self._feedback()
        # NOTE: joining reads the SQLite file (after the writer caught up): a worker thread, not the loop.
        result = await asyncio.to_thread(loop.add, name, labels)
        deployment = self._deployments.get(name)
        hearing = [getattr(o, "labelled", None) for o in deployment.observers.values()] if deployment else []
        pairs = normalise_labels(labels) if any(hearing) else []
        for labelled in hearing:
            if labelled is not None:
                labelled(pairs)
        return result

    # -- model switching and shadow traffic (see workbench.switching) ------------------
    async def set_policy(self, name: str, policy: str = "fixed", *, target_p99_ms: float | None = None,
                         stage: str | None = None, candidates: Sequence[str] | None = None, calibrate: bool = True,
                         interval_s: float = 1.0, window_s: float = 3.0, **rules: Any) -> dict[str, Any]:
        """Choose how ``name``'s variant is picked: ``"fixed"`` (by hand) or ``"best-quality-within-target"``.

        The latter picks, every ``interval_s``, the best-quality variant of ``stage`` among
        ``candidates`` (default: all, the active one first; equal qualities go by this order)
        whose p99 at the current load meets ``target_p99_ms`` (default: the deployment's
        latency target), and swaps to it; ``rules`` are the hysteresis and quality settings of
        :class:`~workbench.switching.SwitchingRules` (``margin``, ``dwell_s``, ``confirm_s``,
        ``min_labels``, ``metric``, ...). Candidates never profiled are calibrated first
        (``calibrate``). Returns ``stats(name)["switching"]``.
        """
        return await switching.set_policy(self, self.deployment(name), policy, target_p99_ms=target_p99_ms, stage=stage,
                                candidates=candidates, calibrate=calibrate, interval_s=interval_s,
                                window_s=window_s, **rules)

    async def shadow(self, name: str, variant: str, *, fraction: float = 0.1, stage: str | None = None,
                     max_pending: int = 64, output: str | None = None) -> dict[str, Any]:
        """Mirror ``fraction`` of ``name``'s answered requests to ``variant``, never changing a response.

        The candidate runs as a deployment of its own; its latency, its agreement with the
        active variant on ``output`` and its accuracy on labelled requests are reported in
        ``stats(name)["shadow"]`` (see :mod:`workbench.switching.shadow`). Replaces a shadow running already.
        """
        return await switching.start_shadow(self, self.deployment(name), variant, fraction=fraction, stage=stage,
                                  max_pending=max_pending, output=output)

    async def stop_shadow(self, name: str) -> dict[str, Any] | None:
        """Stop mirroring ``name``'s traffic; the shadow's last report, or ``None`` if none ran."""
        return await switching.stop_shadow(self.deployment(name))

    def quality(self, name: str) -> dict[str, Any]:
        """Live quality of ``name`` per variant from the labels posted: count, accuracy, per-class precision/recall,
        and the ROC AUC of a binary classifier with a score output (see :mod:`workbench.monitor.feedback`)."""
        if self.feedback_loop is None:
            return {"pipeline": name, "output": None, "variants": {}, "log": "off"}
        return self.feedback_loop.quality(name)

    async def export_predictions(self, path: str | Path, name: str | None = None,
                                 since: float | None = None) -> int:
        """Write the logged predictions (of ``name``, from Unix time ``since``) and their labels to Parquet."""
        log = self._feedback().log
        return await asyncio.to_thread(log.export_parquet, path, name, since)

    async def set_reference(self, name: str, inputs: Mapping[str, Any], *,
                            predictions: Mapping[str, Any] | None = None, **monitor: Any) -> dict[str, Any]:
        """Score ``name``'s served rows for drift against reference ``inputs`` (the training data, say).

        ``predictions`` are the reference of the prediction drift; by default the deployment computes
        them on ``inputs`` (one batch, not counted in its stats). ``monitor`` goes to
        :class:`~workbench.monitor.drift.DriftMonitor` (``window_rows``, ``window_s``, ``thresholds``, ...).
        The live window starts empty. Returns :meth:`drift`.
        """
        deployment = self.deployment(name)
        tensors = deployment.pipeline.validate(inputs)
        if predictions is None:
            predictions = (await deployment.runner(tensors)).outputs
        deployment.drift = DriftMonitor(tensors, predictions, **monitor)
        deployment.record("drift_reference", rows=deployment.drift.reference_rows,
                          features=len(deployment.drift.inputs))
        return self.drift(name)

    def drift(self, name: str) -> dict[str, Any]:
        """Drift scores of ``name`` (see :meth:`DriftMonitor.report`), or ``{"level": "no_reference"}``."""
        monitor = self.deployment(name).drift
        return monitor.report() if monitor is not None else {"level": "no_reference"}

    def _drift_monitors(self) -> dict[str, DriftMonitor]:
        return {name: d.drift for name, d in list(self._deployments.items()) if d.drift is not None}

    def watch_business(self, name: str, *, window_s: float = 60.0, baseline_windows: int = 10,
                       rule: ShiftRule | Mapping[str, Any] | None = None, **monitor: Any) -> dict[str, Any]:
        """Count ``name``'s business signals afresh, with these windows and this shift rule; returns the report.

        A pipeline that declares business signals is watched from its deployment with the defaults;
        ``rule`` is a :class:`~workbench.monitor.business.ShiftRule` or its fields (``z``, ``min_change``,
        ``min_count``). See :mod:`workbench.monitor.business`; the report is ``stats(name)["business"]``.
        """
        deployment = self.deployment(name)
        if not deployment.pipeline.business:
            raise WorkbenchError(f"pipeline {name!r} declares no business signals: add some to its 'business' "
                                 "(see workbench.pipeline.signals)", 409)
        rule = rule if isinstance(rule, ShiftRule) or rule is None else ShiftRule(**rule)
        watcher = BusinessMonitor(deployment.pipeline.business, window_s=window_s, baseline_windows=baseline_windows,
                                  rule=rule, variants=lambda: deployment.variants, **monitor)
        deployment.observers["business"] = watcher
        deployment.record("business_watch", window_s=window_s, baseline_windows=baseline_windows)
        return watcher.report()

    def _business_monitors(self) -> dict[str, BusinessMonitor]:
        watchers = {name: d.observers.get("business") for name, d in list(self._deployments.items())}
        return {name: w for name, w in watchers.items() if isinstance(w, BusinessMonitor)}

    def set_batching(self, name: str, **changes: Any) -> BatchingConfig:
        """Change a deployment's knobs; they apply from the next batch.

        ``mode="auto"`` starts the auto-tuner towards ``target_p99_ms`` (or the target set
        with :meth:`set_latency_target`); another mode stops it, leaving the knobs where they are.
        """
        deployment = self.deployment(name)
        target = changes.pop("target_p99_ms", None)
        if target is not None:
            TuningRules(target_p99_ms=target)  # NOTE: checked before any knob changes
        mode = changes.get("mode") or deployment.batcher.config.mode
        if mode == "auto" and target is None and deployment.latency_target_ms is None:
            raise ValueError("mode 'auto' needs a latency target: pass target_p99_ms=... or call "
                             "set_latency_target first")
        config = deployment.batcher.set_batching(**changes)
        if target is not None:
            deployment.latency_target_ms = float(target)
            changes["target_p99_ms"] = target
        if changes.get("max_in_flight") is not None:
            deployment.pinned_in_flight = True
        deployment.record("batching", **{k: v for k, v in changes.items() if v is not None})
        self._follow_target(deployment)
        # NOTE: only what changed, so that another front's change to another knob holds too; off the caller's path.
        shared = {f"batching.{k}": getattr(config, k) for k in changes if k in _SHARED_KNOBS}
        if target is not None:
            shared["latency_target_ms"] = deployment.latency_target_ms
        self._share(name, shared)
        return config

    def set_latency_target(self, name: str, target_p99_ms: float | None) -> None:
        """Set the p99 latency (ms) a deployment should meet; ``None`` clears it.

        In mode ``"auto"`` the auto-tuner aims at it from its next decision (and stops
        when it is cleared); ``set_batching(name, mode="auto")`` starts the tuner.
        """
        deployment = self.deployment(name)
        if target_p99_ms is not None:
            TuningRules(target_p99_ms=target_p99_ms)
        deployment.latency_target_ms = None if target_p99_ms is None else float(target_p99_ms)
        deployment.record("latency_target", target_p99_ms=deployment.latency_target_ms)
        self._follow_target(deployment)
        self._share(name, {"latency_target_ms": deployment.latency_target_ms})

    def _follow_target(self, deployment: Deployment) -> None:
        """Follow the deployment's latency target: the batcher's admission, and the auto-tuner.

        The batcher refuses requests the queue would keep past the target (whatever the mode);
        the auto-tuner runs while the mode is ``"auto"`` and a target is set, and stops otherwise.
        """
        tuner, target = deployment.autotuner, deployment.latency_target_ms
        deployment.batcher.set_latency_target(target)
        if deployment.batcher.config.mode == "auto" and target is not None:
            if tuner is None:
                def record(decision: Decision) -> None:
                    deployment.record("autotune", action=decision.action, max_batch_size=decision.knobs.max_batch_size,
                                      max_delay_ms=decision.knobs.max_delay_ms, reason=decision.reason)

                tuner = deployment.autotuner = AutoTuner(deployment.batcher, TuningRules(target_p99_ms=target),
                                                         on_decision=record)
                tuner.start()
                deployment.record("autotune_started", target_p99_ms=target)
            elif tuner.rules.target_p99_ms != target:
                tuner.retarget(target)
        elif tuner is not None:
            # NOTE: cancelling between two decisions is safe: the tuner only ever calls set_batching.
            tuner.cancel()
            deployment.autotuner = None
            config = deployment.batcher.config
            deployment.record("autotune_stopped", mode=config.mode, target_p99_ms=target,
                              max_batch_size=config.max_batch_size, max_delay_ms=config.max_delay_ms)

    @staticmethod
    def _autotune_state(deployment: Deployment) -> dict[str, Any]:
        if deployment.autotuner is not None:
            return deployment.autotuner.snapshot()
        mode = deployment.batcher.config.mode
        reason = ("mode 'auto' with no latency target: set one to start the tuner" if mode == "auto"
                  else f"mode {mode!r}: the knobs stay where they are set")
        return {"running": False, "target_p99_ms": deployment.latency_target_ms, "reason": reason}

    def _workers_changed(self) -> None:
        for deployment in self._deployments.values():
            self._fit_in_flight(deployment)

    def _fit_in_flight(self, deployment: Deployment) -> None:
        """The backend's batches in flight per worker thread that holds the deployment, unless the user pinned it."""
        threads = self.backend.threads(deployment.name, deployment.generation)
        deployment.batcher.runners = threads or None
        if not deployment.pinned_in_flight:
            slots = threads * self.backend.in_flight_per_thread
            if slots and slots != deployment.batcher.config.max_in_flight:
                deployment.batcher.set_batching(max_in_flight=slots)

    # -- autoscaling -------------------------------------------------------------------
    def autoscale(self, minimum: int | None, maximum: int | None = None, *, interval_s: float = 1.0,
                  wait_count: int = 3, window_s: float = 10.0, cluster: Any = None,
                  policy: ScalingPolicy | Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Let the number of workers follow the traffic, between ``minimum`` and ``maximum``.

        Queue depth, utilisation and recent p99 against each deployment's latency
        target (:meth:`set_latency_target`) decide; see :mod:`workbench.backend.autoscale`.
        ``autoscale(None)`` turns it off. ``cluster`` is the cluster manager to scale
        when this engine did not start one (a dask-kubernetes ``KubeCluster``, a
        dask-jobqueue ``SLURMCluster``, ...); by default it is the ``LocalCluster``
        of :meth:`local`. Returns :meth:`autoscaling`.
        """
        if minimum is None:
            self.stop_autoscaling()
            return self.autoscaling()
        if maximum is None:
            raise ValueError("autoscale needs a maximum number of workers: autoscale(minimum, maximum)")
        if self.backend.kind != "dask":
            raise WorkbenchError("autoscaling adds and removes Dask workers, and this workbench runs batches "
                                 "in-process: start it with Workbench.local(...) or Workbench.connect(...)", 409)
        cluster = cluster if cluster is not None else getattr(self.backend, "cluster", None)
        if cluster is None:
            raise WorkbenchError(
                "no cluster manager to scale: this workbench is attached to a running scheduler by address "
                "(Workbench.connect), and only what started the workers can add or remove them. Pass that "
                "cluster object (a dask-kubernetes KubeCluster, a dask-jobqueue cluster, ...) as "
                "autoscale(..., cluster=cluster), or scale the cluster with its own tooling", 409)
        from workbench.backend.autoscale import Autoscaler, ScalingPolicy

        if not isinstance(policy, ScalingPolicy):
            policy = ScalingPolicy(**dict(policy or {}))
        if self._autoscaler is None:
            self._autoscaler = Autoscaler(self)
        self._autoscaler.start(cluster, minimum, maximum, interval_s=interval_s, wait_count=wait_count,
                               window_s=window_s, policy=policy)
        return self.autoscaling()

    def stop_autoscaling(self) -> None:
        """Stop autoscaling; the cluster keeps the workers it has."""
        if self._autoscaler is not None:
            self._autoscaler.stop()

    def autoscaling(self, name: str | None = None) -> dict[str, Any]:
        """Whether autoscaling is on, its settings, the latest target and why, and the recent scaling decisions.

        With ``name``, the latest figures are that deployment's, with its latency target.
        """
        target = self.deployment(name).latency_target_ms if name is not None else None
        view = self._autoscaler.view(name) if self._autoscaler is not None else {"enabled": False, "decisions": []}
        return {**view, "latency_target_ms": target} if name is not None else view

    # -- reading -----------------------------------------------------------------------
    def stats(self, name: str, *, recent_s: float | None = None) -> dict[str, Any]:
        """Rolling latency, throughput, queue depth, batch sizes, knobs, variant and workers of a deployment.

        With ``recent_s``, ``"recent"`` also holds the figures of the last ``recent_s`` seconds only
        (latency percentiles, throughput, busy time, errors): what live charts plot, so that a
        change shows within seconds instead of fading in over the whole window.
        """
        deployment = self.deployment(name)
        stats = deployment.batcher.snapshot()
        stats.update({
            "pipeline": name,
            "variants": deployment.variants,
            "generation": deployment.generation,
            "placement": deployment.placement,
            "placed": _placed(deployment.runner),
            "backend": self.backend.kind,
            "workers": self.backend.workers(name, deployment.generation),
            "redispatched": getattr(deployment.runner, "redispatched", 0),
            "hung": getattr(deployment.runner, "hung", 0),
            "hang_deadline_s": _hang_deadline_s(deployment.runner),
            "autotune": self._autotune_state(deployment),
            "autoscaling": self.autoscaling(name),
            "events": list(deployment.events)[-20:],
            "python": self.python_costs(),
            "drift": self.drift(name),
            "quality": self.quality(name),
            "prediction_log": self.predictions.stats() if self.predictions is not None else None,
        })
        stats.update({key: observer.report() for key, observer in deployment.observers.items()})
        caches = cache_report(deployment.pipeline.stages, stats.get("counts", {}))
        if caches:
            stats["feature_cache"] = caches
        if recent_s is not None:
            stats["recent"] = deployment.batcher.stats.recent(recent_s)
        return stats

    def python_costs(self) -> dict[str, Any]:
        """GC pauses and GIL contention of the serving process and of each worker (``stats(name)["python"]``).

        See :mod:`workbench.monitor.pycosts`; worker figures are at most a few seconds old.
        """
        workers = self._worker_costs.get() if self._worker_costs is not None else {}
        return {"serving": process_costs().snapshot(), "workers": workers}

    def describe(self) -> dict[str, Any]:
        """The backend (kind, dashboard link, workers) and what is deployed."""
        return {**self.backend.describe(), "deployments": {
            name: {"variants": d.variants, "generation": d.generation, "placement": d.placement, **_where(d.runner)}
            for name, d in self._deployments.items()}}

    def metrics_text(self) -> str:
        """The Prometheus text exposition of this engine's metrics (what ``GET /metrics`` serves)."""
        return self.metrics.text()

    def _gauges(self) -> EngineGauges:
        """What the metrics read when scraped; see :class:`~workbench.monitor.metrics.EngineCollector`."""
        gauges = []
        for name, d in self._deployments.items():
            config, batcher = d.batcher.config, d.batcher
            gauges.append(DeploymentGauges(
                name, d.generation, d.variants, batcher.queue_depth, batcher.in_flight, config.max_batch_size,
                config.max_delay_ms, config.max_in_flight, config.max_queue, config.mode, d.latency_target_ms,
                self.backend.workers(name, d.generation), _placed(d.runner)))
        return EngineGauges(self.backend.kind, gauges, self.autoscaling())


def _placed(runner: RunBatch) -> dict[str, Any]:
    """Where a runner sends its batches and why (see :mod:`workbench.backend.placement`)."""
    snapshot = getattr(runner, "snapshot", None)
    return snapshot() if snapshot is not None else {"placement": None, "where": None, "decision": None}


async def _seed_admission(deployment: Deployment) -> None:
    """Time one full batch of made-up rows, so that admission judges a burst on a fresh deployment too.

    Where none may be made (:func:`~workbench.traffic.requests.probe_batch`), the first real batches are
    the first measure.
    """
    from workbench.traffic.requests import probe_batch

    rows = deployment.batcher.config.max_batch_size
    batch = probe_batch(deployment.pipeline, rows)
    if batch is None:
        return
    try:
        began = time.perf_counter()
        await deployment.runner(batch)
    except Exception:
        logger.debug("no warm-up batch for %s", deployment.name, exc_info=True)
        return
    deployment.batcher.seed_service(time.perf_counter() - began, rows)


def _hang_deadline_s(runner: RunBatch) -> float | None:
    """How long the next call to a worker may stay silent (see :mod:`workbench.backend.hung`)."""
    deadline = getattr(runner, "deadline_s", None)
    return deadline() if deadline is not None else None


def _where(runner: RunBatch) -> dict[str, Any]:
    placed = _placed(runner)
    return {"where": placed["where"], "reason": (placed.get("decision") or {}).get("reason")}


def _hear_moves(deployment: Deployment) -> None:
    """Record in the deployment's events the moves an ``auto`` placement makes, and the workers its runner cordons."""
    runner = deployment.runner
    def moved(decision: PlacementDecision) -> None:
        deployment.record("placement_moved", where=decision.where, reason=decision.reason,
                          compute_ms=decision.compute_ms, trip_ms=decision.trip_ms)

    if isinstance(runner, PlacedRunner):
        runner.on_decision = moved
        if hasattr(runner.remote, "on_event"):
            runner.remote.on_event = lambda event, details: deployment.record(event, **details)


async def _close_observers(deployment: Deployment) -> None:
    """Stop the observers that run tasks of their own (switching, shadow traffic)."""
    for observer in list(deployment.observers.values()):
        await aclose(observer)
