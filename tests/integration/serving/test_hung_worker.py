"""A worker that goes silent under load (SIGSTOP) on a separately started cluster: nothing waits for it.

Its batches are sent again to the other worker once they pass the hang
deadline (``max(10 x p99 of recent calls, 2 s)`` by default), it is cordoned,
and it comes back into service once it answers a heartbeat (SIGCONT).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from loopback import Answer, LiveServer, client, live_server, post, tabular_request
from processes import DaskProcesses
from waiting import eventually, free_port

from workbench.demo.tabular import load_tabular_data
from workbench.serving.app import ServeConfig
from workbench.serving.server import engine_factory

ROWS = load_tabular_data().x_train[-32:]
#: Requests sent at once, closed loop, and how many each sender sends.
SENDERS, EACH = 8, 40
#: What a request's HTTP round trip may add to the batch that answered it (loopback, a loaded machine).
SLACK_S = 1.0




def _stats(live: LiveServer) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        return live.engine.stats("tabular")

    return live.call(read)


async def _stream(http: httpx.AsyncClient, url: str, sender: int) -> list[tuple[Answer, float]]:
    """``EACH`` requests one after another; each with the seconds it took."""
    answers = []
    for i in range(EACH):
        began = time.monotonic()
        row = (sender * EACH + i) % len(ROWS)
        answer = await post(http, url, tabular_request(ROWS[row:row + 1]))
        answers.append((answer, time.monotonic() - began))
    return answers


async def test_a_stopped_worker_is_cordoned_its_batches_resent_and_it_returns_after_a_heartbeat(
    cluster: DaskProcesses, demo_home: Path
) -> None:
    address = cluster.start_scheduler()
    ports = {name: free_port() for name in ("a", "b")}
    workers = {name: cluster.start_worker(name, "--worker-port", str(port)) for name, port in ports.items()}
    victim = f"tcp://127.0.0.1:{ports['b']}"
    config = ServeConfig(targets=[demo_home / "pipelines" / "tabular.yaml"], dashboard=False,
                         batching={"max_batch_size": 4, "max_delay_ms": 2})
    with live_server(engine_factory(address, workers=0), config) as live:
        url = f"{live.url}/v2/models/tabular/infer"

        def held() -> dict[str, dict[str, Any]]:
            return {w["address"]: w for w in _stats(live)["workers"]}

        eventually(lambda: len(held()) == 2, 120, "both workers holding tabular")
        async with client(connections=SENDERS + 4) as http:
            # NOTE: on the workers whatever the measured costs say: the batches must meet the stopped worker.
            moved = await http.put(f"{live.url}/api/pipelines/tabular/placement", json={"placement": "fused"})
            assert moved.status_code == 200, moved.text
            warm = await asyncio.gather(*(_stream(http, url, s) for s in range(SENDERS)))
            assert all(a.status == 200 for stream in warm for a, _ in stream)
            deadline_s = _stats(live)["hang_deadline_s"]
            assert deadline_s == pytest.approx(2.0), "the floor: tabular's batches take milliseconds"

            assert victim in held()
            load = [asyncio.ensure_future(_stream(http, url, s)) for s in range(SENDERS)]
            await asyncio.sleep(0.3)
            os.kill(workers["b"].pid, signal.SIGSTOP)
            answers = [item for stream in await asyncio.wait_for(asyncio.gather(*load), 120) for item in stream]
            stats = _stats(live)

            failed = [(a.status, a.error or a.body) for a, _ in answers if a.status != 200]
            assert not failed, f"{len(failed)} requests not answered: {failed[:3]}"
            slowest_batch_s = stats["batch_run_ms"]["p100"] / 1e3
            longest_s = max(seconds for _, seconds in answers)
            print(f"\nSIGSTOP under load: {len(answers)} answered, the longest in {longest_s:.2f} s "
                  f"(deadline {deadline_s:.2f} s), {stats['hung']} calls hung, {stats['redispatched']} sent again")
            assert longest_s <= deadline_s + slowest_batch_s + SLACK_S
            assert stats["hung"] >= 1 and stats["redispatched"] >= stats["hung"]
            assert held()[victim]["cordoned"]["reason"].startswith("no answer to a batch of 'tabular' within 2.00 s")
            cordoned = [e for e in stats["events"] if e["event"] == "worker_cordoned"]
            assert [e["worker"] for e in cordoned] == [victim]

            # NOTE: a stopped worker still holds its connections: only a heartbeat tells it is back.
            os.kill(workers["b"].pid, signal.SIGCONT)
            eventually(lambda: held()[victim]["cordoned"] is None, 60, "the worker back in service")
            back = [e for e in _stats(live)["events"] if e["event"] == "worker_uncordoned"]
            assert [e["worker"] for e in back] == [victim] and back[0]["silent_s"] > 0
            ran_before = sum(held()[victim]["ran"].values())
            again = await asyncio.gather(*(_stream(http, url, s) for s in range(SENDERS)))
            assert all(a.status == 200 for stream in again for a, _ in stream)
            assert sum(held()[victim]["ran"].values()) > ran_before, "batches reach the worker again"
