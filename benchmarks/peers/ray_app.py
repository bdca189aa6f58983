"""Ray Serve (2.60) serving the workbench's tabular and text models (``peer_models``) over V2-shaped JSON.

``python ray_app.py PORT SPEC`` in ``benchmarks/peers/.venv-ray`` (with this folder on
``PYTHONPATH``): a local Ray instance on loopback (no dashboard, no usage report), Serve's HTTP
proxy on ``PORT``, one application per model, each one replica of a FastAPI-ingress deployment
whose requests meet in ``@serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)``, and
``/v2/health/ready`` for the benchmark to wait on. Runs until SIGINT or SIGTERM, then shuts
Serve and Ray down.
"""

# NOTE: no `from __future__ import annotations`: FastAPI must see the routes' Request type itself under Serve.
import json
import os
import signal
import sys
import time
from typing import Any

import numpy as np
import ray
from fastapi import FastAPI, Request, Response
from peer_models import Outputs, Tabular, Text, split, v2_outputs
from ray import serve

tabular_api, text_api, health_api = FastAPI(), FastAPI(), FastAPI()


def _answer(name: str, outputs: Outputs) -> Response:
    return Response(json.dumps({"model_name": name, "outputs": v2_outputs(outputs)}), media_type="application/json")


# NOTE: no CPU reserved per replica: Ray would refuse to place three on two cores; ONNX Runtime's threads are its own.
@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(tabular_api)
class TabularV2:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.model = Tabular(spec)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def predict(self, batches: list[np.ndarray]) -> list[Outputs]:
        return split(self.model.predict(np.concatenate(batches)), [len(rows) for rows in batches])

    @tabular_api.post("/infer")
    async def infer(self, request: Request) -> Response:
        first = json.loads(await request.body())["inputs"][0]
        return _answer("tabular", await self.predict(np.asarray(first["data"], np.float32).reshape(first["shape"])))


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(text_api)
class TextV2:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.model = Text(spec)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def predict(self, batches: list[list[str]]) -> list[Outputs]:
        return split(self.model.predict([s for sentences in batches for s in sentences]), [len(s) for s in batches])

    @text_api.post("/infer")
    async def infer(self, request: Request) -> Response:
        return _answer("text", await self.predict(list(json.loads(await request.body())["inputs"][0]["data"])))


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(health_api)
class Health:
    @health_api.get("/ready")
    async def ready(self) -> dict[str, bool]:
        return {"ready": True}


def main() -> None:
    port, spec_file = int(sys.argv[1]), sys.argv[2]
    with open(spec_file) as file:
        spec = json.load(file)

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}})
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(TabularV2.bind(spec["tabular"]), name="tabular", route_prefix="/v2/models/tabular")
        serve.run(TextV2.bind(spec["text"]), name="text", route_prefix="/v2/models/text")
        # NOTE: last, so that ready means every model is.
        serve.run(Health.bind(), name="health", route_prefix="/v2/health")
        print("ray serve ready", flush=True)
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
