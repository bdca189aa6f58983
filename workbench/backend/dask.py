"""The Dask backend: a LocalCluster of our own, or any cluster by scheduler address.

Deploying registers a :class:`~workbench.backend.worker.DeploymentPlugin`
(every worker, present or joining later, builds the pipeline and keeps it
warm) and returns a :class:`~workbench.backend.dispatch.DaskRunner` that sends
batches straight to those workers. What a user controls (deployments, their
variant and knobs) is also kept with the scheduler, one atomic change at a
time, so every process attached to the cluster sees the same deployments (see
:mod:`workbench.backend.cluster_state`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import dask.config
from distributed import Client, LocalCluster
from distributed.comm.addressing import get_address_host_port
from distributed.core import ConnectionPool
from distributed.protocol.pickle import dumps

from workbench.backend.cluster_state import METADATA_KEY, TOPIC, change_on_scheduler, reserve_generation
from workbench.backend.dispatch import DaskRunner
from workbench.backend.inprocess import InProcessRunner
from workbench.backend.placement import PLACEMENTS, PlacedRunner, check_placement
from workbench.backend.pool import WorkerPool
from workbench.backend.worker import EVENTS_TOPIC, DeploymentPlugin, plugin_name, python_costs, shared_repository
from workbench.errors import BackendUnavailable
from workbench.pipeline.graph import Pipeline
from workbench.traffic.requests import probe_batch

__all__ = ["HOUSEKEEPING", "DaskBackend", "housekeeping_config", "tls_security"]

logger = logging.getLogger(__name__)

#: How often the list of live workers is checked against the scheduler.
_RECONCILE_S = 1.0
#: Dask's housekeeping cadence for a LocalCluster of our own. At Dask's defaults (a stack sample every
#: 10 ms in every server, an event-loop tick every 20 ms, psutil polls every 100 and 500 ms) an idle
#: cluster of two workers kept 0.56 of a core busy on a 2-core machine; at these, about 0.19. Profiles,
#: tick warnings and memory limits keep working, at a coarser grain. A value the user configured wins.
HOUSEKEEPING = {
    "distributed.worker.profile.interval": "100ms",
    "distributed.admin.tick.interval": "200ms",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "500ms",
}


def housekeeping_config() -> dict[str, str]:
    """:data:`HOUSEKEEPING`, less the settings the user changed from Dask's own defaults."""
    shipped = dask.config.merge(*dask.config.defaults)
    return {key: value for key, value in HOUSEKEEPING.items()
            if dask.config.get(key) == dask.config.get(key, config=shipped)}


def tls_security(ca_file: str | None, cert: str | None, key: str | None) -> Any:
    """A ``distributed.security.Security`` for a cluster that uses TLS (client certificate and CA)."""
    from distributed.security import Security

    return Security(tls_ca_file=ca_file, tls_client_cert=cert, tls_client_key=key, require_encryption=True)


class DaskBackend:
    """Batches run on Dask workers that keep the deployed pipelines warm.

    Create it with :meth:`local` or :meth:`connect`, inside a running event loop.
    """

    kind = "dask"
    loads_locally = False
    #: A second batch waits at each worker thread while the first runs, so the worker never idles while an
    #: answer travels back and the next batch is formed and sent (saturated text: 0.84-0.88 -> 0.9 of raw ORT).
    in_flight_per_thread = 2

    def __init__(self, client: Client, cluster: LocalCluster | None = None, *, address: str | None = None,
                 client_kwargs: Mapping[str, Any] | None = None) -> None:
        # NOTE: typed loosely: an asynchronous client's methods return awaitables that its stubs do not say.
        self.client: Any = client
        self.cluster: Any = cluster
        # NOTE: batches go over a pool of our own, not the client's: warm workers keep serving while the
        # scheduler is gone, and after the client that lost it is replaced.
        self.rpc = ConnectionPool(limit=512, connection_args=client.connection_args, deserialize=True)
        #: Where to reattach when the scheduler comes back (a cluster attached by address only).
        self._address = address
        self._client_kwargs = dict(client_kwargs or {})
        self._scheduler_id: str | None = None
        #: Since when (epoch seconds) the scheduler does not answer; ``None`` while it does.
        self.scheduler_lost_at: float | None = None
        self._restart_listeners: list[Callable[[], Awaitable[None]]] = []
        self.pool = WorkerPool(self._changed)
        self._listeners: list[Callable[[], None]] = []
        self._reconciler: asyncio.Task[None] | None = None
        self._workers: dict[str, Any] = {}
        #: This front's name in the changes it announces (see :mod:`workbench.backend.cluster_state`).
        self.origin = uuid.uuid4().hex
        self._state_listeners: list[Callable[[str], None]] = []

    # -- starting and stopping ---------------------------------------------------------
    @classmethod
    async def local(cls, workers: int = 2, threads_per_worker: int = 1, **cluster_kwargs: Any) -> DaskBackend:
        """Start a LocalCluster of worker processes on this machine.

        Unless ``WORKBENCH_INTRA_OP_THREADS`` is set, each worker's ONNX Runtime
        sessions get an equal share of the cores, so workers do not fight over them.
        """
        env = dict(cluster_kwargs.pop("env", {}))
        if "WORKBENCH_INTRA_OP_THREADS" not in os.environ:
            env.setdefault("WORKBENCH_INTRA_OP_THREADS", str(max(1, (os.cpu_count() or 1) // max(workers, 1))))
        cluster_kwargs.setdefault("dashboard_address", ":0")
        # NOTE: the terminal's Ctrl-C stops the serving process, which then closes its workers gracefully.
        cluster_kwargs.setdefault("preload", ["workbench.backend.shielded"])
        housekeeping = housekeeping_config()
        # NOTE: the scheduler and the nannies read these when created; ``config`` carries them to every
        # worker process, those started later by scaling included.
        with dask.config.set(housekeeping):
            cluster: Any = await LocalCluster(
                n_workers=workers, threads_per_worker=threads_per_worker, processes=True, asynchronous=True,
                env=env, config={**housekeeping, **cluster_kwargs.pop("config", {})}, **cluster_kwargs)
        try:
            client: Any = await Client(cluster, asynchronous=True)
        except BaseException:
            await cluster.close()
            raise
        return await cls(client, cluster)._start()

    @classmethod
    async def connect(cls, address: str, **client_kwargs: Any) -> DaskBackend:
        """Attach to a running cluster (``dask scheduler`` / ``dask worker``, or any deployment of them)."""
        client: Any = await Client(address, asynchronous=True, **client_kwargs)
        return await cls(client, address=address, client_kwargs=client_kwargs)._start()

    async def _start(self) -> DaskBackend:
        await self.rpc.start()
        self._subscribe()
        await self.refresh_workers()
        self._reconciler = asyncio.get_running_loop().create_task(self._reconcile(), name="workbench-reconcile")
        return self

    async def close(self) -> None:
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciler
        await self.client.close()
        await self.rpc.close()
        if self.cluster is not None:
            await self.cluster.close()

    def _subscribe(self) -> None:
        self.client.subscribe_topic(EVENTS_TOPIC, self.pool.on_event)
        self.client.subscribe_topic(TOPIC, self._state_changed)

    async def _reconcile(self) -> None:
        """Forget workers the scheduler no longer lists (killed workers send no goodbye); reattach when it is back."""
        while True:
            try:
                if self.client.status != "running":
                    raise ConnectionError(f"the client is {self.client.status}")
                await asyncio.wait_for(self.refresh_workers(), 10)
                if self.scheduler_lost_at is not None:
                    logger.warning("the scheduler answers again, after %.1f s", time.time() - self.scheduler_lost_at)
                    self.scheduler_lost_at = self.pool.unreachable = None
            except Exception:  # keep reconciling through scheduler hiccups
                if self.scheduler_lost_at is None:
                    self.scheduler_lost_at = time.time()
                    self.pool.unreachable = f"the scheduler at {self.client.scheduler.address} does not answer"
                    logger.warning("the scheduler does not answer: warm workers keep serving", exc_info=True)
                await self._forget_unreachable_workers()
                if self._address is not None and self.client.status in ("closing", "closed"):
                    with contextlib.suppress(Exception):
                        await self._reattach()
            await asyncio.sleep(_RECONCILE_S)

    async def _forget_unreachable_workers(self, timeout_s: float = 1.0) -> None:
        """While the scheduler cannot say which workers died, find out: a worker that takes no connection is gone.

        NOTE: Dask workers close once their scheduler is gone, and a call to a closed worker retries its
        refused connection for Dask's whole connect timeout: forgetting them ends those waits at once.
        """
        async def reachable(address: str) -> bool:
            host, port = get_address_host_port(address)
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
            except (OSError, TimeoutError):
                return False
            writer.close()
            return True

        addresses = sorted({slot.address for key in self.pool.generations() for slot in self.pool.workers(key)})
        for address, alive in zip(addresses, await asyncio.gather(*(reachable(a) for a in addresses))):
            if not alive:
                logger.warning("worker %s takes no connection (and the scheduler cannot tell): forgotten", address)
                self.pool.forget_worker(address)

    async def _reattach(self) -> None:
        """A new client on the same address (the old one gave up reconnecting); raises while nobody answers there."""
        assert self._address is not None
        client: Any = await asyncio.wait_for(
            Client(self._address, asynchronous=True, **{"timeout": 5, **self._client_kwargs}), 10)
        old, self.client = self.client, client
        self._subscribe()
        with contextlib.suppress(Exception):
            await old.close()

    async def refresh_workers(self) -> dict[str, Any]:
        """The scheduler's current worker list (cached for :meth:`describe`)."""
        identity = await self.client.scheduler.identity(n_workers=-1)
        restarted = self._scheduler_id is not None and identity.get("id") != self._scheduler_id
        self._scheduler_id = identity.get("id")
        self._workers = dict(identity.get("workers", {}))
        self.pool.keep_only(self._workers)
        if restarted:
            logger.warning("the scheduler was restarted: restoring the deployments on it")
            self._subscribe()  # NOTE: a new scheduler knows none of this client's subscriptions
            for listener in self._restart_listeners:
                task = asyncio.ensure_future(listener())
                _RESTORING.add(task)
                task.add_done_callback(_RESTORING.discard)
        return self._workers

    def on_scheduler_restart(self, listener: Callable[[], Awaitable[None]]) -> None:
        """Await ``listener()`` when a new scheduler answers at the same address (it knows no deployment)."""
        self._restart_listeners.append(listener)

    async def restore(self, name: str, generation: int, pipeline: Pipeline, settle_s: float = 3.0) -> list[str]:
        """Give a restarted scheduler the deployment back, and take its workers back in the pool.

        Workers that kept running hold it still (they are not rebuilt); the scheduler keeps the plugin for
        workers that join later, and those of the workers now listed that lack it build it. Returns the
        workers that hold it.
        """
        plugin = DeploymentPlugin(name, generation, pipeline.to_dict(), instances=pipeline.instances)
        # NOTE: workers come back to the new scheduler over a few seconds: wait for their number to settle.
        seen, stable_since = -1, time.monotonic()
        deadline = time.monotonic() + 4 * settle_s
        while time.monotonic() < deadline:
            count = len(await self.refresh_workers())
            if count != seen:
                seen, stable_since = count, time.monotonic()
            elif count and time.monotonic() - stable_since >= settle_s:
                break
            await asyncio.sleep(0.2)
        held = await self._holders(plugin.name)
        missing = sorted(set(self._workers) - set(held))
        await self.client.run_on_scheduler(_KEEP_PLUGIN, name=plugin.name, plugin=dumps(plugin), missing=missing)
        if missing:
            held = await self._holders(plugin.name)
        self._take((name, generation), held)
        return sorted(held)

    # -- deployments -------------------------------------------------------------------
    def on_workers_changed(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    async def deploy(self, name: str, generation: int, pipeline: Pipeline, placement: str = "auto") -> PlacedRunner:
        """Make every worker build ``pipeline`` (the given generation); return the runner for it.

        Workers hold it whatever the placement (see :mod:`workbench.backend.placement`).
        """
        check_placement(placement)
        plugin = DeploymentPlugin(name, generation, pipeline.to_dict(), instances=pipeline.instances)
        try:
            try:
                replies = await self.client.register_plugin(plugin, name=plugin.name)
            except OSError as exc:
                # NOTE: a worker left while the others built it: go on with those that did (the scheduler
                # gives the plugin to the worker that replaces it), or undo it when none could.
                replies = await self._built_after_a_loss(plugin.name, exc)
        except BaseException:
            # NOTE: the scheduler keeps a plugin whose setup failed on a worker, and would set it up
            # again on every worker that joins: take it back, so a refused deploy leaves nothing behind.
            with contextlib.suppress(Exception):
                await self.client.unregister_worker_plugin(plugin.name)
            raise
        workers = await self.refresh_workers()
        for address in replies:
            info = workers.get(address, {})
            # NOTE: the batches it runs at once: its lanes (see workbench.backend.worker).
            self.pool.add((name, generation), address, resources=info.get("resources"),
                          nthreads=pipeline.instances or info.get("nthreads"))
        return await self.place(name, generation, pipeline, placement)

    async def _built_after_a_loss(self, plugin: str, lost: OSError, wait_s: float = 60.0) -> list[str]:
        """The workers that hold ``plugin`` once every worker still alive has built it (or ``wait_s`` passed)."""
        deadline = time.monotonic() + wait_s
        while True:
            alive = set(await self.refresh_workers())
            held = set(await self._holders(plugin))
            if (held >= alive and held) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        if not held:
            raise BackendUnavailable(f"no worker could build {plugin!r}: a worker left during the deploy ({lost})")
        logger.warning("a worker left while %s was being built (%s); %d others hold it", plugin, lost, len(held))
        return sorted(held)

    async def attach(self, name: str, generation: int, pipeline: Pipeline, placement: str = "auto") -> PlacedRunner:
        """The runner for a deployment that another process made (its workers are already warm)."""
        self._take((name, generation), await self._holders(plugin_name(name, generation)))
        return await self.place(name, generation, pipeline, placement)

    async def _holders(self, plugin: str) -> dict[str, dict[str, Any]]:
        """What each worker that has built ``plugin`` holds of it (one ``client.run``), by address."""
        described = await self.client.run(_describe_deployment, plugin)
        return {address: description for address, description in described.items() if description is not None}

    def _take(self, key: tuple[str, int], held: Mapping[str, Mapping[str, Any]]) -> None:
        """Put the workers of :meth:`_holders` in the pool for ``key``."""
        for address, description in held.items():
            self.pool.add(key, address, resources=description["resources"], nthreads=description["nthreads"],
                          providers=description["providers"])

    async def place(self, name: str, generation: int, pipeline: Pipeline, placement: str) -> PlacedRunner:
        """A runner for a deployment its workers hold, placed as ``placement`` says (``auto``: measured now)."""
        remote = self.runner(name, generation, pipeline, "by-resource" if placement == "by-resource" else "fused")
        placed = PlacedRunner(name, placement, remote, functools.partial(_load_here, pipeline))
        return await placed.start(probe_batch(pipeline, 1) if placement == "auto" else None)

    def runner(self, name: str, generation: int, pipeline: Pipeline, placement: str) -> DaskRunner:
        wants_gpu = any(s.resource == "gpu" for s in pipeline.stages)
        return DaskRunner(
            self.rpc, self.pool, name, generation,
            segments=pipeline.segments() if placement == "by-resource" else None,
            resource="gpu" if wants_gpu else "cpu", output_names=pipeline.output_names,
            variants={s.name: s.variant for s in pipeline.inference_stages},
        )

    async def retire(self, name: str, generation: int) -> None:
        """Drop one generation from every worker (after a swap, or on undeploy)."""
        self.pool.drop((name, generation))
        with contextlib.suppress(Exception):  # a worker that is already gone has nothing to drop
            await self.client.unregister_worker_plugin(plugin_name(name, generation))

    @staticmethod
    def placements() -> tuple[str, ...]:
        return PLACEMENTS

    def workers(self, name: str, generation: int) -> list[dict[str, Any]]:
        cordoned = self.pool.cordoned
        return [{**slot.describe(), "cordoned": cordoned.get(slot.address)}
                for slot in self.pool.workers((name, generation))]

    def threads(self, name: str, generation: int) -> int:
        return self.pool.threads((name, generation))

    # -- cluster state -----------------------------------------------------------------
    async def publish(self, name: str, state: dict[str, Any] | None) -> None:
        """Keep a deployment's whole state with the scheduler (``None`` removes it)."""
        await change_on_scheduler(self.client, name, self.origin, replace=state, delete=state is None)

    async def publish_change(self, name: str, fields: Mapping[str, Any], *,
                             expect_generation: int | None = None) -> None:
        """Change some fields of a deployment's state (dotted paths), atomically on the scheduler.

        With ``expect_generation``: only while the deployment is at that generation
        (:class:`~workbench.backend.cluster_state.Refused` otherwise).
        """
        await change_on_scheduler(self.client, name, self.origin, fields=fields, expect_generation=expect_generation)

    async def next_generation(self, name: str, current: int) -> int:
        """A generation for ``name``'s next swap that no other front builds at the same time."""
        return await reserve_generation(self.client, name)

    def on_state_change(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(name)`` (on the event loop) when another front changed ``name``'s shared state."""
        self._state_listeners.append(listener)

    def _state_changed(self, event: tuple[float, Mapping[str, Any]]) -> None:
        _, message = event
        if message.get("origin") == self.origin:
            return
        for listener in self._state_listeners:
            listener(message["deployment"])

    async def published(self) -> dict[str, Any]:
        # NOTE: Dask's msgpack hands lists back as tuples; a pipeline spec wants its lists back.
        return dict(_lists(await self.client.get_metadata(METADATA_KEY, default={})))

    async def python_costs(self) -> dict[str, Any]:
        """GC pauses and GIL contention of each worker: one ``client.run`` round trip, by address."""
        return dict(await self.client.run(python_costs))

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "scheduler": self.client.scheduler.address,
            "scheduler_lost_at": self.scheduler_lost_at,
            "dashboard_link": self.client.dashboard_link,
            "workers": {
                address: {"resources": w.get("resources", {}), "nthreads": w.get("nthreads"), "name": w.get("name")}
                for address, w in self._workers.items()
            },
        }


#: The restorations under way (asyncio keeps only weak references to tasks).
_RESTORING: set[asyncio.Future[None]] = set()


def _keep_plugin_on_scheduler() -> Callable[..., Awaitable[None]]:
    """What a restarted scheduler runs to keep a deployment's plugin; nested, so that it travels by value."""

    async def keep(dask_scheduler: Any, name: str, plugin: bytes, missing: list[str]) -> None:
        dask_scheduler.worker_plugins[name] = plugin
        if missing:
            await dask_scheduler.broadcast(msg={"op": "plugin-add", "plugin": plugin, "name": name}, workers=missing)

    return keep


_KEEP_PLUGIN = _keep_plugin_on_scheduler()


def _lists(value: Any) -> Any:
    """``value`` with every tuple turned back into a list, at any depth."""
    if isinstance(value, dict):
        return {key: _lists(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(item) for item in value]
    return value


async def _load_here(pipeline: Pipeline) -> InProcessRunner:
    """The pipeline loaded in this process, for an embedded placement: one ONNX Runtime thread per session.

    NOTE: an embedded pipeline is light by choice, and this process also serves HTTP: a session's own
    thread pool would only spin beside the event loop.
    """
    spec = pipeline.to_dict()
    root = spec.get("repository")

    def build() -> Pipeline:
        return Pipeline.from_dict(spec, repository=shared_repository(root, 1) if root else None)

    return InProcessRunner(await asyncio.to_thread(build))


def _describe_deployment(name: str, dask_worker: Any = None) -> dict[str, Any] | None:
    """Run on each worker by :meth:`DaskBackend.attach`: what it holds of one deployment generation."""
    plugin = dask_worker.plugins.get(name)
    if not isinstance(plugin, DeploymentPlugin) or plugin.pipeline is None:
        return None
    return plugin.describe(dask_worker)
