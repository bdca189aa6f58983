"""The control API: deploy, undeploy, swap variants, set batching, latency targets, switching policy
and shadow traffic, read stats.

Every call goes through the same :class:`~workbench.engine.Engine` as the
Python API, the dashboard and the widgets. Documented in the OpenAPI schema
(``/docs``).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from workbench.engine import Engine
from workbench.serving.codec import HEADER_LENGTH
from workbench.serving.responses import JSONResponse
from workbench.serving.v2 import read_inputs

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["Control"], default_response_class=JSONResponse)


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


class Batching(BaseModel):
    """Knobs to change; those left out keep their value."""

    max_batch_size: int | None = Field(None, ge=1, description="Most rows in one batch.")
    max_delay_ms: float | None = Field(None, ge=0, le=10_000, description="Longest wait for company.")
    mode: Literal["dynamic", "realtime", "auto"] | None = Field(None, description="How batches are formed.")
    max_in_flight: int | None = Field(None, ge=1, description="Batches dispatched at once.")
    max_queue: int | None = Field(None, ge=1, description="Requests waiting at most; beyond, 429.")


class DeployRequest(BaseModel):
    target: str = Field(description="A demo name (tabular, text), a pipeline name in the pipelines folder, "
                                    "or a pipeline file path on the server.")
    name: str | None = Field(None, description="Deploy under this name (default: the pipeline's).")
    variant: str | None = Field(None, description="Start with this variant of the first inference stage.")
    placement: Literal["auto", "inprocess", "fused", "by-resource"] = Field(
        "auto", description="auto: in this process when a batch costs less than a trip to a worker, else on "
                            "the workers; inprocess; fused (one worker runs it all); by-resource.")
    batching: Batching | None = None


class PlacementRequest(BaseModel):
    placement: Literal["auto", "inprocess", "fused", "by-resource"] = Field(
        description="Where batches run from now on (those in flight finish where they are).")


class SwapRequest(BaseModel):
    variant: str = Field(description="The variant to switch to.")
    stage: str | None = Field(None, description="Inference stage (default: the first that has the variant).")


class LatencyTarget(BaseModel):
    target_p99_ms: float | None = Field(description="p99 latency target in ms; null clears it.", gt=0)


class Label(BaseModel):
    id: str = Field(min_length=1, description="The request id (the V2 response's `id`).")
    label: str | int | list[str | int] = Field(description="The true class; a list of them for a request of "
                                                           "several rows.")


class Feedback(BaseModel):
    labels: list[Label] = Field(description="One label or many, by request id.")


class SwitchingPolicy(BaseModel):
    policy: Literal["fixed", "best-quality-within-target"] = Field(
        description="`fixed`: the variant changes only when swapped. `best-quality-within-target`: the "
                    "best-quality variant whose predicted p99 at the current load meets the target serves.")
    target_p99_ms: float | None = Field(None, gt=0, description="The p99 (ms) to meet (default: the pipeline's "
                                                                "latency target).")
    stage: str | None = Field(None, description="Inference stage switched (default: the first with several "
                                                "variants).")
    candidates: list[str] | None = Field(None, min_length=1, description="Variants to choose from; equal qualities "
                                                                         "go by this order (default: all, active "
                                                                         "first).")
    margin: float | None = Field(None, ge=0, lt=1, description="A move needs the new variant to meet the target "
                                                               "less this share.")
    dwell_s: float | None = Field(None, ge=0, description="Least time between two switches.")
    confirm_s: float | None = Field(None, ge=0, description="How long a switch must be wanted before it is made.")
    min_labels: int | None = Field(None, ge=1, description="Labelled rows before live accuracy replaces the "
                                                           "metadata's quality.")
    metric: str | None = Field(None, description="The metadata quality figure compared (default `accuracy`).")
    calibrate: bool = Field(True, description="Measure candidates never profiled first (a second or two).")


class ShadowRequest(BaseModel):
    variant: str = Field(description="The candidate variant that receives the mirrored requests.")
    fraction: float = Field(0.1, gt=0, le=1, description="Share of the answered requests mirrored.")
    stage: str | None = Field(None, description="Inference stage (default: the first with several variants).")
    max_pending: int = Field(64, ge=1, description="Mirrored requests queued or running at most; beyond, "
                                                   "dropped and counted.")
    output: str | None = Field(None, description="Output compared (default: the first 1-D label output).")


class Autoscale(BaseModel):
    minimum: int | None = Field(description="Fewest workers; null turns autoscaling off.", ge=0)
    maximum: int | None = Field(None, ge=1, description="Most workers.")


def _summary(engine: Engine, name: str) -> dict[str, Any]:
    deployment = engine.deployment(name)
    return {"name": name, "variants": deployment.variants, "placement": deployment.placement,
            "where": getattr(deployment.runner, "where", None), "generation": deployment.generation,
            "ready": engine.ready(name),
            "batching": deployment.batcher.snapshot()["config"], "latency_target_ms": deployment.latency_target_ms}


@router.get("/pipelines", summary="Deployed pipelines")
async def list_pipelines(request: Request) -> list[dict[str, Any]]:
    engine = _engine(request)
    return [_summary(engine, name) for name in engine.names()]


@router.post("/pipelines", summary="Deploy a pipeline", status_code=201)
async def deploy(request: Request, body: DeployRequest) -> dict[str, Any]:
    engine = _engine(request)
    target = request.app.state.loadable().get(body.target, body.target)
    batching = body.batching.model_dump(exclude_none=True) if body.batching else None
    deployment = await engine.deploy(target, name=body.name, variant=body.variant, placement=body.placement,
                                     batching=batching)
    return _summary(engine, deployment.name)


@router.delete("/pipelines/{name}", summary="Undeploy a pipeline (queued requests are answered first)")
async def undeploy(request: Request, name: str) -> dict[str, Any]:
    await _engine(request).undeploy(name)
    return {"name": name, "undeployed": True}


@router.post("/pipelines/{name}/swap", summary="Swap the active variant with no request dropped")
async def swap(request: Request, name: str, body: SwapRequest) -> dict[str, Any]:
    return await _engine(request).swap(name, body.variant, body.stage)


@router.put("/pipelines/{name}/placement", summary="Move a pipeline's batches (auto, inprocess, fused, by-resource)")
async def set_placement(request: Request, name: str, body: PlacementRequest) -> dict[str, Any]:
    """Returns where batches run now and why, as in the stats' `placed`; no request is dropped by the move."""
    return await _engine(request).set_placement(name, body.placement)


@router.put("/pipelines/{name}/reference", summary="Set the reference rows that drift is scored against",
            openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "description": "A V2 inference request holding the reference rows (binary "
                "tensors and content_type 'pd' as for infer)"}}}}})
async def set_reference(request: Request, name: str) -> dict[str, Any]:
    """Returns the drift report; the served rows are scored against these from now on (the window starts empty)."""
    engine = _engine(request)
    _, _, tensors = read_inputs(engine.deployment(name), await request.body(), request.headers.get(HEADER_LENGTH))
    return await engine.set_reference(name, tensors)


@router.put("/pipelines/{name}/batching", summary="Change batching knobs (from the next batch on)")
async def set_batching(request: Request, name: str, body: Batching) -> dict[str, Any]:
    engine = _engine(request)
    engine.set_batching(name, **body.model_dump(exclude_none=True))
    return _summary(engine, name)


@router.put("/pipelines/{name}/latency-target", summary="Set or clear the p99 latency target")
async def set_latency_target(request: Request, name: str, body: LatencyTarget) -> dict[str, Any]:
    engine = _engine(request)
    engine.set_latency_target(name, body.target_p99_ms)
    return _summary(engine, name)


@router.put("/pipelines/{name}/policy", summary="Set the model-switching policy (fixed, best-quality-within-target)")
async def set_policy(request: Request, name: str, body: SwitchingPolicy) -> dict[str, Any]:
    """Returns the switching state, as in the stats' `switching`: candidates, predictions, last decision."""
    rules = body.model_dump(exclude_none=True, exclude={"policy", "target_p99_ms", "stage", "candidates", "calibrate"})
    return await _engine(request).set_policy(name, body.policy, target_p99_ms=body.target_p99_ms, stage=body.stage,
                                             candidates=body.candidates, calibrate=body.calibrate, **rules)


@router.put("/pipelines/{name}/shadow", summary="Mirror a share of the traffic to a candidate variant")
async def start_shadow(request: Request, name: str, body: ShadowRequest) -> dict[str, Any]:
    """Responses stay the active variant's; the comparison is in the stats' `shadow`."""
    return await _engine(request).shadow(name, body.variant, fraction=body.fraction, stage=body.stage,
                                         max_pending=body.max_pending, output=body.output)


@router.delete("/pipelines/{name}/shadow", summary="Stop the shadow traffic; returns its last report")
async def stop_shadow(request: Request, name: str) -> dict[str, Any]:
    report = await _engine(request).stop_shadow(name)
    return {"name": name, "stopped": report is not None, "report": report}


@router.get("/pipelines/{name}/stats", summary="Rolling latency, throughput, batches, workers and events")
async def stats(request: Request, name: str) -> dict[str, Any]:
    return _engine(request).stats(name)


@router.post("/pipelines/{name}/feedback", summary="Post ground-truth labels by request id (one or many)")
async def feedback(request: Request, name: str, body: Feedback) -> dict[str, Any]:
    labels = [(item.id, item.label) for item in body.labels]
    return await _engine(request).feedback(name, labels)


@router.get("/pipelines/{name}/quality", summary="Live quality per variant from the labels posted")
async def quality(request: Request, name: str) -> dict[str, Any]:
    return _engine(request).quality(name)


# NOTE: a download rather than an export to a path the client names: the server never writes where it is told.
@router.get("/pipelines/{name}/predictions.parquet", summary="The logged predictions and their labels, as Parquet",
            response_class=FileResponse)
async def export_predictions(request: Request, name: str, since: float | None = None) -> FileResponse:
    handle, path = tempfile.mkstemp(suffix=".parquet", prefix="predictions-")
    os.close(handle)
    try:
        await _engine(request).export_predictions(path, name, since)
    except BaseException:
        os.unlink(path)
        raise
    return FileResponse(path, media_type="application/vnd.apache.parquet", filename=f"{name}-predictions.parquet",
                        background=BackgroundTask(os.unlink, path))


@router.get("/cluster", summary="The backend, its workers and the deployments")
async def cluster(request: Request) -> dict[str, Any]:
    return _engine(request).describe()


@router.put("/autoscaling", summary="Turn autoscaling on (minimum, maximum workers) or off (minimum null)")
async def autoscale(request: Request, body: Autoscale) -> dict[str, Any]:
    engine = _engine(request)
    if body.minimum is None:
        engine.stop_autoscaling()
    else:
        engine.autoscale(body.minimum, body.maximum)
    return engine.autoscaling()
