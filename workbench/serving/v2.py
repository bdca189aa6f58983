"""The Open Inference Protocol (KServe V2) over HTTP, with the binary tensor and repository extensions.

Each deployed pipeline is a model; the variants of its first inference stage
are its versions, of which the active one is served. The infer route reads the
raw body (no schema validation layer on the hot path) and answers with
orjson, or with binary tensors when the client asks for them.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response

from workbench import __version__
from workbench.backend.dataset import columns_frame, frame_inputs
from workbench.engine import Deployment, Engine, new_request_id
from workbench.errors import InvalidInput, NotDeployed
from workbench.pipeline.inference import OnnxStage
from workbench.serving.codec import HEADER_LENGTH, decode_request, encode_response, v2_datatype
from workbench.serving.responses import JSONResponse

__all__ = ["TIMEOUT_HEADER", "answer_infer", "read_inputs", "router"]

router = APIRouter(tags=["Open Inference Protocol (KServe V2)"], default_response_class=JSONResponse)

#: Extensions this server speaks.
EXTENSIONS = ["binary_tensor_data", "model_repository"]


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _versioned(deployment: Deployment) -> OnnxStage | None:
    """The inference stage whose variants are the model's versions (the first one)."""
    stages = deployment.pipeline.inference_stages
    return stages[0] if stages else None


def _check_version(engine: Engine, name: str, version: str | None) -> Deployment:
    deployment = engine.deployment(name)
    stage = _versioned(deployment)
    active = stage.variant if stage is not None else "1"
    if version is not None and version != active:
        raise NotDeployed(f"model {name!r} serves version {active!r}, not {version!r} (swap variants through the "
                          "control API)")
    return deployment


# -- server -----------------------------------------------------------------------------
@router.get("/v2", summary="Server metadata")
async def server_metadata() -> dict[str, Any]:
    return {"name": "inference-workbench", "version": __version__, "extensions": EXTENSIONS}


@router.get("/v2/health/live", summary="Liveness")
async def live() -> dict[str, Any]:
    return {"live": True}


@router.get("/v2/health/ready", summary="Readiness: every deployed pipeline has a warm worker")
async def ready(request: Request) -> Response:
    is_ready = _engine(request).ready()
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


# -- models -----------------------------------------------------------------------------
@router.get("/v2/models/{name}", summary="Model metadata")
@router.get("/v2/models/{name}/versions/{version}", summary="Model metadata of a version")
async def model_metadata(request: Request, name: str, version: str | None = None) -> dict[str, Any]:
    engine = _engine(request)
    deployment = _check_version(engine, name, version)
    pipeline = deployment.pipeline
    stage = _versioned(deployment)
    versions = pipeline.repository.variants(stage.model) if stage is not None and pipeline.repository else ["1"]

    def tensors(specs: Any) -> list[dict[str, Any]]:
        return [{"name": spec.name, "datatype": v2_datatype(spec.dtype), "shape": list(spec.shape or [-1])}
                for spec in specs]

    return {
        "name": name, "versions": versions, "platform": "inference-workbench",
        "inputs": tensors(pipeline.input_specs.values()), "outputs": tensors(pipeline.output_specs.values()),
        "parameters": {"active_version": stage.variant if stage else "1", "variants": deployment.variants,
                       "description": pipeline.description},
    }


@router.get("/v2/models/{name}/ready", summary="Model readiness")
@router.get("/v2/models/{name}/versions/{version}/ready", summary="Model readiness of a version")
async def model_ready(request: Request, name: str, version: str | None = None) -> Response:
    engine = _engine(request)
    _check_version(engine, name, version)
    is_ready = engine.ready(name)
    return JSONResponse({"name": name, "ready": is_ready}, status_code=200 if is_ready else 503)


def _path_parameters(*names: str) -> dict[str, Any]:
    """The OpenAPI description of string path parameters that the route reads itself."""
    return {"parameters": [{"name": n, "in": "path", "required": True, "schema": {"type": "string", "title": n.title()}}
                           for n in names]}


# NOTE: the infer route reads its path parameters from ``request.path_params``: FastAPI's validation of
# two string parameters costs about 20 µs a request, a fifth of what the bare HTTP stack spends on one.
# ``workbench serve`` answers infer requests before they reach FastAPI (:mod:`workbench.serving.fastpath`);
# this route documents them in the OpenAPI schema, and answers them when that path is turned off.
@router.post("/v2/models/{name}/infer", summary="Inference (JSON or binary tensors)",
             openapi_extra=_path_parameters("name"))
@router.post("/v2/models/{name}/versions/{version}/infer", summary="Inference on a version",
             openapi_extra=_path_parameters("name", "version"))
async def infer(request: Request) -> Response:
    received = time.perf_counter()
    headers = request.headers
    body, header_length = await answer_infer(
        _engine(request), request.path_params["name"], request.path_params.get("version"), await request.body(),
        headers.get(HEADER_LENGTH), headers.get(TIMEOUT_HEADER), request.app.state.config.default_timeout_ms,
        received)
    if header_length is None:
        return Response(body, media_type="application/json")
    return Response(body, media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(header_length)})


#: The request header that sets a deadline in milliseconds (the ``timeout_ms`` parameter wins).
TIMEOUT_HEADER = "x-request-timeout-ms"


async def answer_infer(engine: Engine, name: str, version: str | None, body: bytes, header_length: str | None,
                       timeout_header: str | None, default_timeout_ms: float | None,
                       received: float) -> tuple[bytes, int | None]:
    """Run one V2 infer request; return the answer's body and, for binary outputs, the JSON header's length.

    What every infer route calls (FastAPI's and the fast path's), so both answer alike.
    ``received`` is the ``time.perf_counter()`` at which the request arrived.
    """
    deployment = _check_version(engine, name, version)
    header, parameters, tensors = read_inputs(deployment, body, header_length)
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    wanted, binary = _requested_outputs(header, parameters, deployment)
    # NOTE: the engine logs the prediction under the client's id, or a new one: the id answered is the one logged.
    prediction = await engine.predict(name, tensors, timeout_s=_timeout_s(parameters, timeout_header,
                                                                          default_timeout_ms),
                                      request_id=request_id)
    outputs = prediction.outputs if wanted is None else {n: prediction.outputs[n] for n in wanted}
    stage = _versioned(deployment)
    # NOTE: the version that computed the outputs: a swap may have made another one active meanwhile.
    served = prediction.variants.get(stage.name, stage.variant) if stage else None
    timings = dict(prediction.timings_ms)
    timings["http"] = (time.perf_counter() - received) * 1e3 - timings.get("total", 0.0)
    return encode_response(name, served, prediction.request_id or request_id or new_request_id(), outputs, binary,
                           {"timings_ms": timings})


def read_inputs(deployment: Deployment, body: bytes, header_length: str | None,
                ) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
    """A V2 request body's JSON header, its parameters and its input tensors, checked against the metadata."""
    header, tensors = decode_request(body, header_length)
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput("'parameters' must be an object")
    if parameters.get("content_type") == "pd":
        # NOTE: MLServer's convention: the inputs are a table's columns, read as offline batch reads a table.
        tensors = frame_inputs(deployment.pipeline, columns_frame(tensors))
    _check_datatypes(deployment, tensors)
    return header, parameters, tensors


def _check_datatypes(deployment: Deployment, tensors: dict[str, np.ndarray]) -> None:
    """Each input's datatype must be the one the model metadata gives, as Triton checks.

    NOTE: the pipeline would accept a castable dtype (BOOL or INT64 data for an FP32 input), but a V2
    client states the datatype, and one that differs from the metadata is a client bug worth naming.
    """
    specs = deployment.pipeline.input_specs
    for name, array in tensors.items():
        spec = specs.get(name)
        if spec is None:
            continue  # NOTE: the pipeline names the unknown tensor and the ones it expects
        given, expected = v2_datatype(array.dtype), v2_datatype(spec.dtype)
        if given != expected:
            raise InvalidInput(f"tensor {name!r}: datatype {given} where model {deployment.name!r} expects "
                               f"{expected}", name)


def _requested_outputs(header: dict[str, Any], parameters: dict[str, Any],
                       deployment: Deployment) -> tuple[list[str] | None, set[str] | bool]:
    """Which outputs to return (``None``: all) and which of them as binary tensors."""
    binary: set[str] | bool = parameters.get("binary_data_output") is True
    requested = header.get("outputs")
    if requested is None:
        return None, binary
    if not isinstance(requested, list):
        raise InvalidInput("'outputs' must be a list")
    names = []
    chosen: set[str] = set()
    available = deployment.pipeline.output_names
    for item in requested:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput("every requested output needs a 'name'")
        if item["name"] not in available:
            raise InvalidInput(f"unknown output {item['name']!r}; model {deployment.name!r} has {list(available)}",
                               item["name"])
        names.append(item["name"])
        options = item.get("parameters") or {}
        if not isinstance(options, dict):
            raise InvalidInput(f"output {item['name']!r}: 'parameters' must be an object")
        if options.get("binary_data") is True:
            chosen.add(item["name"])
    return names, binary if binary is True else chosen


def _timeout_s(parameters: dict[str, Any], header: str | None, default_ms: float | None) -> float | None:
    """The request's deadline: ``timeout_ms`` parameter, Triton's ``timeout`` (µs), a header, or the default."""
    value: Any = parameters.get("timeout_ms")
    scale = 1e-3
    if value is None and "timeout" in parameters:
        value, scale = parameters["timeout"], 1e-6
    if value is None:
        value = header
    if value is None:
        return default_ms * 1e-3 if default_ms else None
    seconds = math.nan
    if not isinstance(value, bool):
        with contextlib.suppress(TypeError, ValueError, OverflowError):
            seconds = float(value) * scale
    # NOTE: the batcher turns the deadline into integer nanoseconds, which NaN and infinity have not.
    if not (math.isfinite(seconds) and seconds > 0):
        raise InvalidInput(f"the request timeout must be a finite number > 0, not {value!r}")
    return seconds


# -- repository extension ---------------------------------------------------------------
@router.post("/v2/repository/index", summary="Pipelines that can be served, and their state")
async def repository_index(request: Request) -> list[dict[str, Any]]:
    engine = _engine(request)
    index = []
    for name in engine.names():
        stage = _versioned(engine.deployment(name))
        index.append({"name": name, "version": stage.variant if stage else "1",
                      "state": "READY" if engine.ready(name) else "UNAVAILABLE", "reason": ""})
    for name in sorted(set(request.app.state.loadable()) - set(engine.names())):
        index.append({"name": name, "state": "UNAVAILABLE", "reason": "not loaded"})
    return index


@router.post("/v2/repository/models/{name}/load", summary="Deploy a known pipeline (file or demo) by name")
async def repository_load(request: Request, name: str) -> dict[str, Any]:
    engine = _engine(request)
    if name in engine:
        return {"name": name, "state": "READY"}
    target = request.app.state.loadable().get(name)
    if target is None:
        raise NotDeployed(f"no pipeline file or demo named {name!r}")
    await engine.deploy(target, name=name)
    return {"name": name, "state": "READY"}


@router.post("/v2/repository/models/{name}/unload", summary="Undeploy a pipeline")
async def repository_unload(request: Request, name: str) -> dict[str, Any]:
    await _engine(request).undeploy(name)
    return {"name": name, "state": "UNAVAILABLE"}


# NOTE: FastAPI tries the routes in order, at about 1.5 µs each per request: the infer routes, the hot
# path, go first. No other route's method and path can match theirs, so the order changes nothing else.
router.routes.sort(key=lambda route: not getattr(route, "path", "").endswith("/infer"))
