"""Autoscaling on a real LocalCluster: workers follow the load, and no request is lost on the way."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from workbench.api import Workbench
from workbench.demo.tabular import load_tabular_data

#: Rows per request: big enough that the workers, not this process, are the busy part.
ROWS = 256
CALLERS = 8
#: Checks every 0.2 s, two in a row to remove a worker, figures over 2 s at most. The busy
#: threshold is lowered so that a loaded test machine, where this process also competes for
#: the cores, still counts as busy.
SETTINGS: dict[str, Any] = {"interval_s": 0.2, "wait_count": 2, "window_s": 2.0,
                            "policy": {"busy_utilisation": 0.5, "target_utilisation": 0.5, "idle_utilisation": 0.2}}


class Load:
    """Concurrent ``apredict`` calls from an asyncio loop in a thread, until the ``with`` block ends."""

    def __init__(self, wb: Workbench, rows: np.ndarray) -> None:
        self.wb, self.rows = wb, rows
        self.answered = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), name="load")

    async def _caller(self, offset: int) -> None:
        while not self._stop.is_set():
            try:
                prediction = await self.wb.apredict("tabular", {"features": self.rows[offset:offset + ROWS]})
                assert len(prediction["label"]) == ROWS
                self.answered += 1
            except BaseException as exc:  # NOTE: collected, so the test names every failure
                self.errors.append(exc)

    async def _run(self) -> None:
        await asyncio.gather(*(self._caller(i) for i in range(CALLERS)))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def workers(wb: Workbench) -> tuple[int, int]:
    """(planned, serving): workers the cluster was asked for, and those that hold the deployment warm."""
    return wb.autoscaling()["workers"]["planned"], len(wb.stats("tabular")["workers"])


@pytest.mark.timeout(180)
def test_workers_follow_the_load_and_no_request_is_lost(demo_home: Path) -> None:
    rows = np.resize(load_tabular_data().x_test, (ROWS + CALLERS, 30)).astype(np.float32)
    with Workbench.local(workers=1) as wb:
        wb.deploy("tabular", batching={"max_batch_size": 4 * ROWS})
        # NOTE: below one Dask round trip, so busy workers always miss it and ask for help.
        wb.set_latency_target("tabular", 1.0)
        wb.autoscale(1, 2, **SETTINGS)
        assert workers(wb) == (1, 1)
        with Load(wb, rows) as load:
            wait_for(lambda: workers(wb) == (2, 2), "a second worker under load")
            served = load.answered
            wait_for(lambda: load.answered > served + 20, "requests answered by two workers")
            # NOTE: a lower maximum under load removes a worker that is running batches.
            wb.autoscale(1, 1, **SETTINGS)
            wait_for(lambda: workers(wb) == (1, 1), "back to one worker under load")
            served = load.answered
            wait_for(lambda: load.answered > served + 20, "requests answered after the removal")
            wb.autoscale(1, 2, **SETTINGS)
            wait_for(lambda: workers(wb) == (2, 2), "a second worker again")
        answered = load.answered
        wait_for(lambda: workers(wb) == (1, 1), "one worker once the load stopped")

        assert load.errors == [], f"{len(load.errors)} requests failed, first: {load.errors[:1]!r}"
        assert answered > 0 and wb.stats("tabular")["errors_total"] == 0
        view = wb.stats("tabular")["autoscaling"]
        assert view["enabled"] and view["latency_target_ms"] == 1.0
        assert (view["minimum"], view["maximum"]) == (1, 2)
        scaled = [d for d in view["decisions"] if d["action"] in ("up", "down")]
        assert [(d["action"], d["from"], d["to"]) for d in scaled] == [("up", 1, 2), ("down", 2, 1),
                                                                       ("up", 1, 2), ("down", 2, 1)]
        assert "p99" in scaled[0]["reason"] and "> target 1 ms" in scaled[0]["reason"]
        assert "outside [1, 1]" in scaled[1]["reason"]
        assert "utilisation" in scaled[3]["reason"] and "nothing queued" in scaled[3]["reason"]
        assert scaled[0]["figures"]["utilisation"] >= 0.5
        assert scaled[0]["figures"]["deployments"]["tabular"]["p99_ms"] > 1.0

        wb.autoscale(None)
        assert not wb.autoscaling()["enabled"]
        assert wb.autoscaling()["decisions"][-1]["action"] == "stop"
