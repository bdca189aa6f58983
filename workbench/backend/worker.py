"""What runs inside each Dask worker: warm pipelines and a direct batch handler.

A deployment is a :class:`DeploymentPlugin` registered with the cluster, so
every worker, including those that join later, builds the pipeline once and
keeps its ONNX Runtime sessions warm. Batches do not go through the scheduler
(a task round trip costs about 10 ms): the plugin adds a ``workbench_run``
handler to the worker's comm server, which the serving process calls directly
on the worker's address (about 1 ms). ``Worker.handlers`` is not a public Dask
API; the Dask range it was tested with is pinned in ``pyproject.toml`` and
covered by the integration tests.

Each deployment runs in lanes of its own on each worker (Triton's instance
groups): ``instances`` threads that only its batches use, so a batch of one
pipeline never waits behind another's on the worker's own thread. The worker's
share of the cores for ONNX Runtime (``WORKBENCH_INTRA_OP_THREADS``, or every
core) is divided between a deployment's lanes, so its lanes together do not
oversubscribe the cores. The time a batch waits for a free lane comes back as
its ``worker_queue`` timing, apart from the wire (``transfer``).

Workers announce what they hold on the :data:`EVENTS_TOPIC` event topic, so
the serving process learns about new workers without polling.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from distributed import Worker, WorkerPlugin

from workbench.backend.wire import decode_tensors, encode_error, encode_tensors
from workbench.config import WorkbenchSettings
from workbench.models.repository import ModelRepository
from workbench.monitor.pycosts import mitigate_as_configured, process_costs
from workbench.pipeline.graph import Pipeline, Prediction, Segment

__all__ = ["EVENTS_TOPIC", "HANDLER", "PING", "DeploymentPlugin", "lane_threads", "plugin_name", "python_costs",
           "shared_repository"]

#: Dask event topic on which workers announce deployments they are ready to run (or dropped).
EVENTS_TOPIC = "workbench"
#: Name of the comm handler that runs a batch on a worker.
HANDLER = "workbench_run"
#: Name of the comm handler that answers a heartbeat through a deployment's lanes.
PING = "workbench_ping"


def plugin_name(deployment: str, generation: int) -> str:
    """The worker-plugin name of one generation of a deployment (a swap makes a new generation)."""
    return f"workbench/{deployment}/{generation}"


class DeploymentPlugin(WorkerPlugin):
    """Builds one pipeline on a worker and keeps it warm until the deployment goes.

    Parameters
    ----------
    deployment
        The name the pipeline is deployed under.
    generation
        Increases with every variant swap; batches name the generation they expect.
    spec
        The pipeline in file form (:meth:`Pipeline.to_dict`), with an absolute repository path
        that the worker can read (same machine or a shared filesystem).
    instances
        Lanes on each worker: threads that run only this deployment's batches; ``None``: as many as
        the worker has threads (Dask's ``nthreads``).
    """

    def __init__(self, deployment: str, generation: int, spec: dict[str, Any], instances: int | None = None) -> None:
        if instances is not None and not (isinstance(instances, int) and instances >= 1):
            raise ValueError("instances must be an integer >= 1, or None")
        self.deployment = deployment
        self.generation = generation
        self.spec = spec
        self.instances = instances
        self.name = plugin_name(deployment, generation)
        self.pipeline: Pipeline | None = None
        self.segments: list[Segment] = []
        self.lanes: ThreadPoolExecutor | None = None
        #: Lanes on this worker, once set up (``instances``, or the worker's threads).
        self.lane_count = instances or 1

    async def setup(self, worker: Worker) -> None:
        install_handler(worker)
        began = time.perf_counter()
        self.lane_count = self.instances or max(worker.state.nthreads, 1)
        self.lanes = ThreadPoolExecutor(self.lane_count, thread_name_prefix=f"lane-{self.deployment}")
        # NOTE: creating sessions holds the GIL for a while; a thread keeps the worker's
        # event loop (heartbeats, other deployments' batches) turning meanwhile.
        self.pipeline = await asyncio.get_running_loop().run_in_executor(None, self._build)
        self.segments = self.pipeline.segments()
        # NOTE: the recorder is process-wide (installed once, whatever the number of deployments); Dask's own
        # GIL monitor, where it runs (gilknocker installed), stands in for our sampler.
        process_costs(gil=not _dask_gil_monitor(worker))
        # NOTE: after the build, so that the warm sessions are what gc.freeze() takes out of later collections.
        mitigate_as_configured()
        worker.log_event(EVENTS_TOPIC, {
            "event": "ready", **self.describe(worker), "load_ms": (time.perf_counter() - began) * 1e3,
        })

    def _build(self) -> Pipeline:
        root = self.spec.get("repository")
        if root is None:
            return Pipeline.from_dict(self.spec)
        return Pipeline.from_dict(self.spec, repository=shared_repository(root, lane_threads(self.lane_count)))

    def teardown(self, worker: Worker) -> None:
        self.pipeline = None
        if self.lanes is not None:
            # NOTE: a batch running now finishes (its reply still goes out); nothing new starts on these lanes.
            self.lanes.shutdown(wait=False)
        worker.log_event(EVENTS_TOPIC, {"event": "gone", **self.describe(worker)})

    def describe(self, worker: Worker) -> dict[str, Any]:
        """What the serving process needs to place batches on this worker."""
        providers = {s.name: s.provider for s in self.pipeline.inference_stages} if self.pipeline else {}
        return {
            "deployment": self.deployment, "generation": self.generation, "worker": worker.address,
            "resources": dict(worker.state.total_resources), "nthreads": self.lane_count,
            "providers": providers, "intra_op_threads": lane_threads(self.lane_count),
        }


def lane_threads(instances: int) -> int:
    """ONNX Runtime intra-op threads per lane: the worker's share of the cores, divided between the lanes."""
    share = WorkbenchSettings().intra_op_threads or os.cpu_count() or 1
    return max(1, share // instances)


#: One repository per (root, threads per session) in this process: deployments whose lanes get the same
#: threads share their sessions (the search and text demos share one MiniLM encoder).
_REPOSITORIES: dict[tuple[str, int], ModelRepository] = {}


def shared_repository(root: str | Path, intra_op_threads: int) -> ModelRepository:
    """The process's repository at ``root`` whose sessions use ``intra_op_threads`` ONNX Runtime threads."""
    key = (str(root), intra_op_threads)
    repository = _REPOSITORIES.get(key)
    if repository is None:
        config = replace(WorkbenchSettings().session_config(), intra_op_threads=intra_op_threads)
        repository = _REPOSITORIES[key] = ModelRepository(root, session_config=config)
    return repository

def _dask_gil_monitor(worker: Worker) -> bool:
    return bool(getattr(worker.monitor, "monitor_gil_contention", False))


def python_costs(dask_worker: Any = None) -> dict[str, Any]:
    """Run on each worker (``client.run``): its GC pauses and GIL contention (see :mod:`workbench.monitor.pycosts`)."""
    dask_gil = None
    if dask_worker is not None and _dask_gil_monitor(dask_worker):
        recent = list(dask_worker.monitor.quantities.get("gil_contention", ()))[-60:]
        dask_gil = {"contention": sum(recent) / len(recent) if recent else 0.0, "source": "dask",
                    "samples": len(recent)}
    return process_costs().snapshot(gil=dask_gil)


def install_handler(worker: Worker) -> None:
    """Add the batch and heartbeat handlers to the worker's comm server (once per worker)."""
    for name, handler in ((HANDLER, _run_batch), (PING, _ping)):
        if name not in worker.handlers:
            # NOTE: Dask names handlers by ``__name__`` in its logs and metrics; a plain partial has none.
            worker.handlers[name] = functools.update_wrapper(functools.partial(handler, worker), handler)


async def _ping(worker: Worker, deployment: str, generation: int) -> dict[str, Any]:
    """A heartbeat that a free lane of the deployment answers: a worker whose lanes are all stuck stays silent.

    ``{"missing": True}`` when the worker does not hold that generation (it answered all the same).
    """
    plugin = worker.plugins.get(plugin_name(deployment, generation))
    lanes = plugin.lanes if isinstance(plugin, DeploymentPlugin) else None
    if lanes is None:
        return {"missing": True}
    try:
        await asyncio.get_running_loop().run_in_executor(lanes, time.perf_counter_ns)
    except RuntimeError:  # NOTE: the lanes were shut down (a swap): the worker's loop answered
        return {"missing": True}
    return {"alive": True}


async def _run_batch(worker: Worker, deployment: str, generation: int, segment: int | None,
                     tensors: dict[str, Any]) -> dict[str, Any]:
    """Run one batch (or one segment of it) in the worker's thread pool.

    Returns ``{"outputs", "timings"}`` (and ``"counters"`` when stages counted), ``{"error": ...}`` for a
    failure of the batch itself, or ``{"missing": True}`` when this worker does
    not hold that generation (the caller then tries another worker).
    """
    plugin = worker.plugins.get(plugin_name(deployment, generation))
    # NOTE: hold the pipeline and its lanes themselves: a teardown (swap, scale-down) during the batch must
    # not pull them away.
    pipeline = plugin.pipeline if isinstance(plugin, DeploymentPlugin) else None
    lanes = plugin.lanes if isinstance(plugin, DeploymentPlugin) else None
    if pipeline is None or lanes is None:
        return {"missing": True}
    assert isinstance(plugin, DeploymentPlugin)
    run: Callable[[dict[str, Any]], Prediction] = (
        pipeline.execute if segment is None else functools.partial(pipeline.execute_segment, plugin.segments[segment]))
    try:
        arrays = decode_tensors(tensors)
        arrived = time.perf_counter_ns()
        try:
            running = asyncio.get_running_loop().run_in_executor(lanes, _timed, run, arrays)
        except RuntimeError:  # NOTE: the lanes were shut down after the look-up: another worker takes it
            return {"missing": True}
        prediction, started = await running
    except Exception as exc:  # the batch's own failure: the caller's requests get it, the worker goes on
        return {"error": encode_error(exc)}
    timings = prediction.timings_ms
    # NOTE: the wait for a free lane of this deployment, apart from the wire: the caller counts the rest of the
    # round trip outside the stages as transfer.
    timings["worker_queue"] = (started - arrived) / 1e6
    reply = {"outputs": encode_tensors(prediction.outputs), "timings": timings}
    if prediction.counters:
        # NOTE: counts of the batch (cache hits, ...) ride back with it: a few numbers, no extra round trip.
        reply["counters"] = prediction.counters
    return reply


def _timed(run: Callable[[dict[str, Any]], Prediction], arrays: dict[str, Any]) -> tuple[Prediction, int]:
    """Run a batch on a lane, and say when the lane started it."""
    started = time.perf_counter_ns()
    return run(arrays), started
