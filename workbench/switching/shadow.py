"""Shadow traffic: a share of live requests mirrored to a candidate variant, compared, never answered from.

:class:`ShadowTraffic` watches every answered request of a deployment (an
:class:`~workbench.engine.Observer`, reported as ``stats(name)["shadow"]``). It
takes ``fraction`` of them, *after* their answer went out, and queues them for
the candidate, which runs as a side deployment of its own on the backend
(:mod:`workbench.switching.sidecar`) behind a batcher of its own. So the caller's
response is the active variant's, unchanged, whatever the candidate does, and
it is not delayed: mirroring is an append to a bounded queue; when the candidate
falls behind (``max_pending`` mirrored requests not answered yet) the next ones
are dropped and counted, rather than piling up.

Side by side, on the mirrored requests: latency (p50, p99 of the active variant's
answer and of the candidate's), agreement of the label output row by row, and,
once labels are posted for their request ids (:meth:`Engine.feedback
<workbench.engine.Engine.feedback>`), the accuracy of each on the same rows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.batching.batcher import DynamicBatcher
from workbench.monitor.stats import BatcherStats, RollingWindow
from workbench.pipeline.graph import Prediction
from workbench.switching.sidecar import Sidecar, deploy_sidecar, variant_stage

if TYPE_CHECKING:
    from workbench.engine import Deployment, Engine

__all__ = ["ShadowTraffic", "label_output", "start_shadow", "stop_shadow"]

#: Mirrored request ids remembered for the labels posted later (the most recent).
_LABELLED_IDS = 10_000


def label_output(outputs: Mapping[str, Any], preferred: str | None = None) -> str | None:
    """The output compared: ``preferred``, or the first 1-D output of strings or integers (``topic``, ``label``)."""
    if preferred is not None and preferred in outputs:
        return preferred
    for name, value in outputs.items():
        array = np.asarray(value)
        if array.ndim == 1 and (array.dtype.kind in "OUSb" or np.issubdtype(array.dtype, np.integer)):
            return name
    return None


class ShadowTraffic:
    """Mirror ``fraction`` of a deployment's answered requests to ``sidecar`` and compare; see the module docstring.

    Parameters
    ----------
    name
        The deployment watched.
    sidecar
        The candidate, deployed on the backend.
    variant, stage
        The candidate's variant and the inference stage it replaces.
    fraction
        Share of the answered requests mirrored, in (0, 1]; every ``1/fraction``-th one (no sampling noise).
    max_pending
        Mirrored requests queued or running at most; beyond, new ones are dropped and counted.
    output
        The output compared (default: the first 1-D output of strings or integers).
    batcher
        The candidate's batcher (default: one with the default knobs, over ``sidecar``'s runner).
    """

    def __init__(self, name: str, sidecar: Sidecar, variant: str, stage: str, *, fraction: float = 0.1,
                 max_pending: int = 64, output: str | None = None, batcher: DynamicBatcher | None = None) -> None:
        if not 0 < fraction <= 1:
            raise ValueError("fraction must be in (0, 1]")
        if not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError("max_pending must be an integer >= 1")
        self.name = name
        self.sidecar = sidecar
        self.variant = variant
        self.stage = stage
        self.fraction = fraction
        self.max_pending = max_pending
        self.output = output
        self.batcher = batcher or DynamicBatcher(sidecar.name, sidecar.runner, stats=BatcherStats())
        self.active_ms = RollingWindow(300.0)
        self.candidate_ms = RollingWindow(300.0)
        self.seen = self.sampled = self.compared = self.dropped = self.failed = 0
        self.rows = self.agreed = 0
        self.labelled_rows = self.active_correct = self.candidate_correct = 0
        self.active_variants: dict[str, int] = {}
        self._credit = 0.0
        self._queue: deque[tuple[Mapping[str, Any], Prediction]] = deque()
        self._running = 0
        self._kept: OrderedDict[str, tuple[list[str], list[str]]] = OrderedDict()
        # NOTE: loop objects are made by start(), inside the running loop.
        self._wake: asyncio.Event | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- observer ----------------------------------------------------------------------
    def observe(self, tensors: Mapping[str, Any], prediction: Prediction) -> None:
        self.seen += 1
        self._credit += self.fraction
        if self._credit < 1.0 - 1e-9:
            return
        self._credit -= 1.0
        self.sampled += 1
        if len(self._queue) + self._running >= self.max_pending:
            self.dropped += 1
            return
        self._queue.append((tensors, prediction))
        if self._wake is not None:
            self._wake.set()

    def labelled(self, pairs: Iterable[tuple[str, Any]]) -> None:
        """Labels posted for request ids: those of mirrored requests count into the accuracy of both variants."""
        for request_id, label in pairs:
            kept = self._kept.get(request_id)
            if kept is None:
                continue
            active, candidate = kept
            truth = [str(x) for x in (label if isinstance(label, list) else [label])]
            if len(truth) != len(active):
                continue
            self.labelled_rows += len(truth)
            self.active_correct += sum(t == a for t, a in zip(truth, active))
            self.candidate_correct += sum(t == c for t, c in zip(truth, candidate))
            # NOTE: a request counts once, even if its label is posted again.
            del self._kept[request_id]

    def report(self) -> dict[str, Any]:
        """Plain data for ``stats(name)["shadow"]``: the candidate beside the active variant."""

        def share(part: int, whole: int) -> float | None:
            return part / whole if whole else None

        def latency(window: RollingWindow) -> dict[str, float | None]:
            values = window.percentiles((50, 99))
            return {k: None if np.isnan(v) else round(v, 3) for k, v in values.items()}

        return {
            "variant": self.variant, "stage": self.stage, "running": self.running, "fraction": self.fraction,
            "active_variants": dict(self.active_variants), "output": self.output,
            "seen": self.seen, "sampled": self.sampled, "compared": self.compared, "dropped": self.dropped,
            "failed": self.failed, "pending": len(self._queue) + self._running, "max_pending": self.max_pending,
            "latency_ms": {"active": latency(self.active_ms), "candidate": latency(self.candidate_ms)},
            "agreement": {"rows": self.rows, "agreed": self.agreed, "rate": share(self.agreed, self.rows)},
            "quality": {"labelled_rows": self.labelled_rows,
                        "active_accuracy": share(self.active_correct, self.labelled_rows),
                        "candidate_accuracy": share(self.candidate_correct, self.labelled_rows)},
        }

    # -- running -----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._pump_task is not None and not self._pump_task.done()

    def start(self) -> None:
        if not self.running:
            self._wake = asyncio.Event()
            self._pump_task = asyncio.get_running_loop().create_task(self._pump(), name=f"shadow-{self.name}")

    async def aclose(self) -> None:
        """Stop mirroring, let the candidate finish what it runs, then retire it."""
        task, self._pump_task = self._pump_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._queue.clear()
        await self.batcher.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.sidecar.retire()

    async def _pump(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                tensors, prediction = self._queue.popleft()
                self._running += 1
                task = asyncio.get_running_loop().create_task(self._mirror(tensors, prediction))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _mirror(self, tensors: Mapping[str, Any], prediction: Prediction) -> None:
        try:
            candidate = await self.batcher.submit(dict(tensors))
        except Exception:  # NOTE: the candidate's failure is counted, and concerns no caller
            self.failed += 1
            return
        finally:
            self._running -= 1
        self.compared += 1
        active_variant = prediction.variants.get(self.stage, "?")
        self.active_variants[active_variant] = self.active_variants.get(active_variant, 0) + 1
        self.active_ms.add(prediction.timings_ms.get("total", float("nan")))
        self.candidate_ms.add(candidate.timings_ms.get("total", float("nan")))
        output = self.output = label_output(prediction.outputs, self.output)
        if output is None or output not in candidate.outputs:
            return
        active = [str(x) for x in np.asarray(prediction.outputs[output]).tolist()]
        mirrored = [str(x) for x in np.asarray(candidate.outputs[output]).tolist()]
        self.rows += len(active)
        self.agreed += sum(a == c for a, c in zip(active, mirrored))
        if prediction.request_id:
            self._kept[prediction.request_id] = (active, mirrored)
            if len(self._kept) > _LABELLED_IDS:
                self._kept.popitem(last=False)


async def start_shadow(engine: Engine, deployment: Deployment, variant: str, *, fraction: float = 0.1,
                       stage: str | None = None, max_pending: int = 64, output: str | None = None) -> dict[str, Any]:
    """Mirror ``fraction`` of ``deployment``'s traffic to ``variant``; see :meth:`Engine.shadow
    <workbench.engine.Engine.shadow>`."""
    if not 0 < fraction <= 1:
        raise ValueError("fraction must be in (0, 1]")
    if not isinstance(max_pending, int) or max_pending < 1:
        raise ValueError("max_pending must be an integer >= 1")
    target = variant_stage(deployment, stage)
    pipeline = deployment.pipeline.with_variant(variant, target.name)
    await stop_shadow(deployment)
    sidecar = await deploy_sidecar(engine.backend, deployment.name, "shadow", pipeline, deployment.placement)
    threads = engine.backend.threads(sidecar.name, sidecar.generation)
    # NOTE: batched like the deployment, except for the queue: the shadow's own bound (max_pending) is the limit.
    config = deployment.batcher.config.updated(mode="dynamic", max_queue=max_pending, max_in_flight=max(threads, 1))
    batcher = DynamicBatcher(sidecar.name, sidecar.runner, config, stats=BatcherStats(),
                             pad_values={n: "" if s.dtype == "str" else 0 for n, s in pipeline.input_specs.items()})
    preferred = engine.feedback_loop.outputs.get(deployment.name) if engine.feedback_loop is not None else None
    shadow = ShadowTraffic(deployment.name, sidecar, variant, target.name, fraction=fraction, max_pending=max_pending,
                           output=output or preferred, batcher=batcher)
    shadow.start()
    deployment.observers["shadow"] = shadow
    deployment.record("shadow_started", variant=variant, stage=target.name, fraction=fraction)
    return shadow.report()


async def stop_shadow(deployment: Deployment) -> dict[str, Any] | None:
    """Stop the deployment's shadow traffic and retire its candidate; its last report, or ``None`` if there was none."""
    shadow = deployment.observers.pop("shadow", None)
    if not isinstance(shadow, ShadowTraffic):
        return None
    await shadow.aclose()
    report = shadow.report()
    deployment.record("shadow_stopped", variant=shadow.variant, compared=shadow.compared,
                      agreement=report["agreement"]["rate"], dropped=shadow.dropped)
    return report
