"""The traffic lab of one engine: a load generator per deployed pipeline, started and stopped at will.

The dashboard and ``workbench demo`` share one lab per engine, so traffic
started from one shows in the other. Requests go through
:meth:`~workbench.engine.Engine.predict`, the same batcher and workers as the
REST front's requests, without an HTTP hop of their own (the load a lab can
make is not bounded by a client, and it costs the server no parsing).
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from workbench.traffic.generator import LoadGenerator, rate_at
from workbench.traffic.requests import request_maker

if TYPE_CHECKING:
    from workbench.engine import Engine

__all__ = ["TrafficLab"]

#: Latencies kept per run for its percentiles (the recent answers).
_LATENCY_WINDOW = 100_000


@dataclass
class _Run:
    generator: LoadGenerator
    task: asyncio.Task[Any]
    started: float = field(default_factory=time.time)
    started_monotonic: float = field(default_factory=time.monotonic)


class TrafficLab:
    """Load generators against the deployments of ``engine``; use it on the engine's event loop.

    Parameters
    ----------
    engine
        Whose deployments receive the traffic.

    Examples
    --------
    >>> lab = TrafficLab(engine)                                     # doctest: +SKIP
    >>> lab.start("tabular", "poisson", rate_rps=200)               # doctest: +SKIP
    >>> lab.status()["tabular"]["ok"]                                # doctest: +SKIP
    >>> lab.stop("tabular")                                          # doctest: +SKIP
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._runs: dict[str, _Run] = {}

    def start(self, name: str, pattern: str = "poisson", rate_rps: float = 100.0, *, period_s: float = 60.0,
              duration_s: float | None = None, seed: int = 0) -> dict[str, Any]:
        """Send ``pattern`` traffic at ``rate_rps`` to deployment ``name``, replacing what the lab sent it before.

        ``period_s`` is the period of the surge and diurnal patterns; ``duration_s``
        stops the run by itself. Returns the run's :meth:`status`.
        """
        rate_at(pattern, rate_rps, 0.0, period_s)  # NOTE: checks the pattern before anything changes
        if not rate_rps > 0:
            raise ValueError("rate_rps must be > 0")
        if not period_s > 0:
            raise ValueError("period_s must be > 0")
        make = request_maker(self.engine.deployment(name).pipeline, seed=seed)
        self.stop(name)
        generator = LoadGenerator(functools.partial(self.engine.predict, name), functools.partial(make, 1),
                                  pattern=pattern, rate_rps=float(rate_rps), period_s=period_s,
                                  max_outstanding=max(100, int(rate_rps * 10)), seed=seed,
                                  latency_window=_LATENCY_WINDOW)
        task = asyncio.get_running_loop().create_task(generator.run(duration_s), name=f"traffic-{name}")
        self._runs[name] = _Run(generator, task)
        return self._status(name, self._runs[name])

    def stop(self, name: str) -> dict[str, Any] | None:
        """Stop sending to ``name`` (answers still due are awaited by the run); ``None`` if nothing was sent."""
        run = self._runs.get(name)
        if run is None:
            return None
        run.generator.stop()
        return self._status(name, run)

    def stop_all(self) -> None:
        for name in list(self._runs):
            self.stop(name)

    def running(self, name: str) -> bool:
        run = self._runs.get(name)
        return run is not None and not run.task.done()

    def report(self, name: str) -> dict[str, Any] | None:
        """The last run's full summary (with client-side p50/p99), or ``None``."""
        run = self._runs.get(name)
        return None if run is None else {**self._status(name, run), **run.generator.report.summary()}

    def status(self) -> dict[str, dict[str, Any]]:
        """Each pipeline's latest run: pattern, rate, whether it runs, what it sent and how that went.

        Runs against a pipeline that is no longer deployed are stopped here.
        """
        deployed = set(self.engine.names())
        for name in self._runs.keys() - deployed:
            self.stop(name)
        return {name: self._status(name, run) for name, run in self._runs.items()}

    async def close(self) -> None:
        """Stop every run and wait for the answers still due."""
        self.stop_all()
        runs = [run.task for run in self._runs.values()]
        if runs:
            await asyncio.wait(runs, timeout=10)

    @staticmethod
    def _status(name: str, run: _Run) -> dict[str, Any]:
        generator, report = run.generator, run.generator.report
        seconds = report.seconds or time.monotonic() - run.started_monotonic
        return {"pipeline": name, "pattern": generator.pattern, "rate_rps": generator.rate_rps,
                "running": not run.task.done(), "started": run.started, "seconds": round(seconds, 1),
                "sent": report.sent, "ok": report.ok, "failed": report.failed, "errors": dict(report.errors)}
