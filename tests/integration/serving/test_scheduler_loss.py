"""The scheduler of a separately started cluster killed under a server, then started again on the same address.

Batches go straight to the workers over the server's own connections, so warm
workers serve while no scheduler answers; but Dask workers close once their
scheduler is gone, and then a request gets a 503 saying so at once, not after
a wait. Once a scheduler answers again at the same address (it knows nothing),
the server gives it the deployments back (their state, and the plugin, which
the workers that join it build) without a restart.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from distributed import Client
from loopback import LiveServer, live_server, tabular_request
from processes import DaskProcesses
from waiting import eventually, free_port

from workbench.backend.worker import plugin_name
from workbench.demo.tabular import load_tabular_data
from workbench.serving.app import ServeConfig
from workbench.serving.server import engine_factory

ROWS = load_tabular_data().x_train[-4:]
#: An answer slower than this, with no worker to wait for, would be a hang.
HANG_S = 5.0




def _held(live: LiveServer) -> set[str]:
    async def read() -> set[str]:
        return {w["address"] for w in live.engine.stats("tabular")["workers"]}

    return live.call(read)


def _on_the_scheduler(address: str) -> tuple[dict[str, Any], list[str]]:
    def plugins(dask_scheduler: Any) -> list[str]:
        return sorted(dask_scheduler.worker_plugins)

    with Client(address, timeout=10) as client:
        return client.get_metadata("workbench-deployments", default={}), client.run_on_scheduler(plugins)


def test_without_the_scheduler_requests_get_an_answer_at_once_and_a_restarted_one_gets_the_deployments_back(
    cluster: DaskProcesses, demo_home: Path
) -> None:
    port = free_port()
    address = cluster.start_scheduler(port)
    for name in ("a", "b"):
        cluster.start_worker(name)
    config = ServeConfig(targets=[demo_home / "pipelines" / "tabular.yaml"], dashboard=False)
    with live_server(engine_factory(address, workers=0), config) as live, \
            httpx.Client(base_url=live.url, timeout=30) as http:
        eventually(lambda: len(_held(live)) == 2, 120, "both workers holding tabular")
        moved = http.put("/api/pipelines/tabular/placement", json={"placement": "fused"})
        assert moved.status_code == 200 and moved.json()["where"] == "remote", moved.text

        # NOTE: Dask workers close once their scheduler is gone: what is left is to say so at once.
        cluster.processes["scheduler"].kill()
        cluster.processes["scheduler"].wait(30)
        eventually(lambda: live.engine.backend.scheduler_lost_at, 30, "the loss of the scheduler noticed")
        answers = []
        for _ in range(10):
            began = time.monotonic()
            answer = http.post("/v2/models/tabular/infer", json=tabular_request(ROWS))
            answers.append((answer.status_code, round(time.monotonic() - began, 2), answer.text[:160]))
        print(f"\nwithout a scheduler: {answers[-3:]}")
        assert all(status in (200, 503) for status, _, _ in answers), answers
        assert all(seconds < HANG_S for _, seconds, _ in answers), answers
        assert all("does not answer" in text for status, _, text in answers if status == 503), answers

        assert cluster.start_scheduler(port) == address
        for name in ("c", "d"):
            cluster.start_worker(name)
        published, plugins = eventually(lambda: (lambda found: found if "tabular" in found[0] else None)(
            _on_the_scheduler(address)), 90, "the deployment given back to the new scheduler")
        assert published["tabular"]["generation"] == 1 and published["tabular"]["placement"] == "fused"
        assert plugin_name("tabular", 1) in plugins
        eventually(lambda: len(_held(live)) == 2, 120, "the new workers holding tabular")
        assert live.engine.backend.scheduler_lost_at is None
        assert "scheduler_restored" in [e["event"] for e in live.engine.deployment("tabular").events]
        answer = http.post("/v2/models/tabular/infer", json=tabular_request(ROWS))
        assert answer.status_code == 200, answer.text
        assert http.get("/v2/health/ready").status_code == 200
