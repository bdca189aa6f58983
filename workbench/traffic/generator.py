"""An open-loop load generator: requests leave on schedule, whether or not earlier ones came back.

Open loop is what real traffic does (users do not wait for each other), so
queueing and batching show as they would in production; a closed loop of N
clients would hide them. The rate follows a pattern over time:

- ``steady``: the same rate throughout;
- ``poisson``: the same mean rate with exponential gaps (bursty);
- ``surge``: the base rate, then four times it for the middle third of each period;
- ``diurnal``: a sine wave between 20% and 100% of the rate over each period (a compressed day).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PATTERNS", "LoadGenerator", "LoadReport", "rate_at"]

PATTERNS = ("steady", "poisson", "surge", "diurnal")


def rate_at(pattern: str, rate_rps: float, elapsed_s: float, period_s: float) -> float:
    """Requests per second that ``pattern`` asks for ``elapsed_s`` into the run."""
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, not {pattern!r}")
    phase = (elapsed_s % period_s) / period_s
    if pattern == "surge":
        return rate_rps * (4.0 if 1 / 3 <= phase < 2 / 3 else 1.0)
    if pattern == "diurnal":
        return rate_rps * (0.6 - 0.4 * math.cos(2 * math.pi * phase))
    return rate_rps


@dataclass
class LoadReport:
    """What a load run did: requests sent, answered, failed (by error kind), latencies in ms."""

    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)

        def pick(q: float) -> float:
            return ordered[min(int(q * len(ordered)), len(ordered) - 1)] if ordered else float("nan")

        return {"sent": self.sent, "ok": self.ok, "failed": self.failed, "errors": dict(self.errors),
                "seconds": round(self.seconds, 3), "throughput_rps": self.ok / self.seconds if self.seconds else 0.0,
                "p50_ms": pick(0.5), "p99_ms": pick(0.99)}


class LoadGenerator:
    """Send ``make_request()`` to ``send`` at a patterned rate until stopped or ``duration_s`` passes.

    Parameters
    ----------
    send
        Coroutine function sending one request (e.g. ``lambda r: engine.predict("text", r)``).
    make_request
        Returns the next request's inputs.
    pattern, rate_rps, period_s
        The shape of the traffic (see the module docstring).
    max_outstanding
        Requests in flight at most; beyond it new ones are counted as ``"shed"``
        instead of piling up without bound in the generator itself.
    latency_window
        Keep the latencies of the last ``latency_window`` answers only (a generator
        that runs for days stays small); ``None`` keeps them all.
    """

    def __init__(self, send: Callable[[Any], Awaitable[Any]], make_request: Callable[[], Any], *,
                 pattern: str = "steady", rate_rps: float = 50.0, period_s: float = 30.0,
                 max_outstanding: int = 10_000, seed: int = 0, latency_window: int | None = None) -> None:
        rate_at(pattern, rate_rps, 0.0, period_s)  # checks the pattern
        if rate_rps <= 0:
            raise ValueError("rate_rps must be > 0")
        self.send = send
        self.make_request = make_request
        self.pattern = pattern
        self.rate_rps = rate_rps
        self.period_s = period_s
        self.max_outstanding = max_outstanding
        self.latency_window = latency_window
        self.report = LoadReport()
        self._random = random.Random(seed)
        self._stop = asyncio.Event()
        self._outstanding: set[asyncio.Task[None]] = set()

    def stop(self) -> None:
        self._stop.set()

    async def run(self, duration_s: float | None = None) -> LoadReport:
        """Send until stopped (or for ``duration_s``), then wait for the answers still due."""
        began = time.monotonic()
        next_at = began
        while not self._stop.is_set():
            now = time.monotonic()
            if duration_s is not None and now - began >= duration_s:
                break
            if now < next_at:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), next_at - now)
                continue
            self._launch()
            rate = rate_at(self.pattern, self.rate_rps, now - began, self.period_s)
            gap = self._random.expovariate(rate) if self.pattern == "poisson" else 1.0 / rate
            next_at = max(next_at + gap, now - 0.1)  # NOTE: catch up after a stall, but not in one burst
        if self._outstanding:
            await asyncio.gather(*self._outstanding, return_exceptions=True)
        self.report.seconds = time.monotonic() - began
        return self.report

    def _launch(self) -> None:
        self.report.sent += 1
        if len(self._outstanding) >= self.max_outstanding:
            self.report.errors["shed"] = self.report.errors.get("shed", 0) + 1
            return
        task = asyncio.get_running_loop().create_task(self._one(self.make_request()))
        self._outstanding.add(task)
        task.add_done_callback(self._outstanding.discard)

    async def _one(self, request: Any) -> None:
        began = time.perf_counter()
        try:
            await self.send(request)
        except Exception as exc:
            kind = type(exc).__name__
            self.report.errors[kind] = self.report.errors.get(kind, 0) + 1
        else:
            self.report.ok += 1
            latencies = self.report.latencies_ms
            latencies.append((time.perf_counter() - began) * 1e3)
            if self.latency_window is not None and len(latencies) >= 2 * self.latency_window:
                del latencies[:-self.latency_window]  # NOTE: trimmed in halves, so appending stays O(1) on average
