"""The one core behind every surface: deployments, their batchers, and the backend.

The :class:`Engine` lives on one event loop. The REST front runs it on its
own loop; :class:`~workbench.api.Workbench` runs it on a background loop for
scripts and notebooks. The Python API, the dashboard and the widgets all go
through it, so there is one copy of the logic.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from workbench.backend.inprocess import InProcessBackend
from workbench.batching.batcher import DynamicBatcher, RunBatch
from workbench.config import BatchingConfig
from workbench.errors import NotDeployed, WorkbenchError
from workbench.pipeline.graph import Pipeline, Prediction

__all__ = ["Backend", "Deployment", "Engine", "resolve_pipeline"]

#: How long a retired generation's batches in flight may take to finish before it is dropped.
_RETIRE_GRACE_S = 30.0


class Backend(Protocol):
    """Where batches run: this process, or Dask workers."""

    kind: str
    loads_locally: bool

    def on_workers_changed(self, listener: Any) -> None: ...
    async def deploy(self, name: str, generation: int, pipeline: Pipeline, placement: str = ...) -> RunBatch: ...
    async def retire(self, name: str, generation: int) -> None: ...
    def workers(self, name: str, generation: int) -> list[dict[str, Any]]: ...
    def threads(self, name: str, generation: int) -> int: ...
    async def publish(self, name: str, state: dict[str, Any] | None) -> None: ...
    async def published(self) -> dict[str, Any]: ...
    def describe(self) -> dict[str, Any]: ...
    async def close(self) -> None: ...


def resolve_pipeline(target: Pipeline | str | Path, *, load: bool) -> Pipeline:
    """A pipeline from a :class:`Pipeline`, a pipeline file, or the name of a demo."""
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
        }


class Engine:
    """Deployments on a backend, each behind its own dynamic batcher. Use it from one event loop."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._deployments: dict[str, Deployment] = {}
        backend.on_workers_changed(self._workers_changed)

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
        for deployment in list(self._deployments.values()):
            await deployment.batcher.close()
        self._deployments.clear()
        await self.backend.close()

    # -- deployments -------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._deployments)

    def deployment(self, name: str) -> Deployment:
        try:
            return self._deployments[name]
        except KeyError:
            raise NotDeployed(f"no pipeline is deployed as {name!r}; deployed: {sorted(self._deployments)}") from None

    async def deploy(self, target: Pipeline | str | Path, *, name: str | None = None,
                     batching: BatchingConfig | Mapping[str, Any] | None = None, placement: str = "fused",
                     variant: str | None = None) -> Deployment:
        """Deploy a pipeline (object, file, or demo name) under ``name`` (default: the pipeline's name)."""
        pipeline = resolve_pipeline(target, load=self.backend.loads_locally)
        if variant is not None:
            pipeline = pipeline.with_variant(variant)
        name = name or pipeline.name
        if name in self._deployments:
            raise WorkbenchError(f"a pipeline is already deployed as {name!r}; undeploy it or swap its variant", 409)
        config = batching if isinstance(batching, BatchingConfig) else BatchingConfig(**dict(batching or {}))
        generation = 1
        runner = await self.backend.deploy(name, generation, pipeline, placement)
        deployment = self._add(name, pipeline, generation, placement, runner, config, pinned="max_in_flight" in (
            batching if isinstance(batching, Mapping) else {}))
        deployment.record("deployed", variants=deployment.variants, placement=placement)
        await self.backend.publish(name, deployment.state())
        return deployment

    def _add(self, name: str, pipeline: Pipeline, generation: int, placement: str, runner: RunBatch,
             config: BatchingConfig, *, pinned: bool) -> Deployment:
        pad_values = {n: 0 for n in pipeline.input_specs}
        batcher = DynamicBatcher(name, runner, config, pad_values=pad_values)
        deployment = Deployment(name, pipeline, generation, placement, batcher, runner, pinned_in_flight=pinned)
        self._deployments[name] = deployment
        self._fit_in_flight(deployment)
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
            attached.append(name)
        return attached

    async def undeploy(self, name: str) -> None:
        """Stop serving ``name``: queued requests are answered first, then the workers drop it."""
        deployment = self.deployment(name)
        del self._deployments[name]
        await deployment.batcher.close()
        await self.backend.retire(name, deployment.generation)
        await self.backend.publish(name, None)

    async def swap(self, name: str, variant: str, stage: str | None = None) -> dict[str, Any]:
        """Switch an inference stage to another variant without dropping a request.

        The new variant is loaded and warmed on every worker first; batches formed
        after that go to it; the old one is dropped once its batches in flight finish.
        """
        deployment = self.deployment(name)
        before = deployment.variants
        began = time.perf_counter()
        pipeline = deployment.pipeline.with_variant(variant, stage)
        generation = deployment.generation + 1
        runner = await self.backend.deploy(name, generation, pipeline, deployment.placement)
        old_generation, old_runner = deployment.generation, deployment.runner
        deployment.pipeline, deployment.generation, deployment.runner = pipeline, generation, runner
        deployment.batcher.replace_runner(runner)
        self._fit_in_flight(deployment)
        await self._drain(old_runner)
        await self.backend.retire(name, old_generation)
        event = deployment.record("swapped", before=before, after=deployment.variants,
                                  seconds=round(time.perf_counter() - began, 3))
        await self.backend.publish(name, deployment.state())
        return event

    @staticmethod
    async def _drain(runner: RunBatch) -> None:
        deadline = time.monotonic() + _RETIRE_GRACE_S
        while getattr(runner, "in_flight", 0) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    # -- requests and knobs ------------------------------------------------------------
    async def predict(self, name: str, inputs: Mapping[str, Any]) -> Prediction:
        """Validate a request, queue it for its pipeline's batcher and await its outputs and timings."""
        deployment = self.deployment(name)
        tensors = deployment.pipeline.validate(inputs)
        return await deployment.batcher.submit(tensors)

    def set_batching(self, name: str, **changes: Any) -> BatchingConfig:
        """Change a deployment's knobs; they apply from the next batch."""
        deployment = self.deployment(name)
        config = deployment.batcher.set_batching(**changes)
        if changes.get("max_in_flight") is not None:
            deployment.pinned_in_flight = True
        deployment.record("batching", **{k: v for k, v in changes.items() if v is not None})
        # NOTE: keeping the cluster's copy current is not on the caller's path.
        asyncio.get_running_loop().create_task(self.backend.publish(name, deployment.state()))
        return config

    def _workers_changed(self) -> None:
        for deployment in self._deployments.values():
            self._fit_in_flight(deployment)

    def _fit_in_flight(self, deployment: Deployment) -> None:
        """One batch in flight per worker thread that holds the deployment, unless the user pinned it."""
        if not deployment.pinned_in_flight:
            threads = self.backend.threads(deployment.name, deployment.generation)
            if threads and threads != deployment.batcher.config.max_in_flight:
                deployment.batcher.set_batching(max_in_flight=threads)

    # -- reading -----------------------------------------------------------------------
    def stats(self, name: str) -> dict[str, Any]:
        """Rolling latency, throughput, queue depth, batch sizes, knobs, variant and workers of a deployment."""
        deployment = self.deployment(name)
        stats = deployment.batcher.snapshot()
        stats.update({
            "pipeline": name,
            "variants": deployment.variants,
            "generation": deployment.generation,
            "placement": deployment.placement,
            "backend": self.backend.kind,
            "workers": self.backend.workers(name, deployment.generation),
            "redispatched": getattr(deployment.runner, "redispatched", 0),
            "events": list(deployment.events)[-20:],
        })
        return stats

    def describe(self) -> dict[str, Any]:
        """The backend (kind, dashboard link, workers) and what is deployed."""
        return {**self.backend.describe(), "deployments": {
            name: {"variants": d.variants, "generation": d.generation, "placement": d.placement}
            for name, d in self._deployments.items()}}
