"""``workbench demo``: the demo pipelines served with traffic flowing, live latency printed, a summary at the end.

The server is ``workbench serve``'s (REST API, metrics and dashboard on one
port, a LocalCluster behind). Once it is up, the run gives the tabular pipeline
its training rows as the reference that drift is scored against, prints a few predictions,
starts the traffic lab against every pipeline (through the engine, as the
dashboard's traffic lab does: no HTTP hop), prints one latency line per
pipeline every second, and stops the server after ``duration_s`` (or when
interrupted); the summary follows.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import uvicorn

    from workbench.engine import Engine
    from workbench.ui.hub import Hub

__all__ = ["DemoRun"]


class DemoRun:
    """What ``workbench demo`` does on the server's loop once it is ready (its ``on_ready`` hook).

    Parameters
    ----------
    pipelines
        The deployments to send traffic to.
    url
        Base URL of the server, for the lines printed.
    duration_s
        Stop the server after this long; ``None`` runs until interrupted.
    pattern, rate_rps, period_s
        The traffic of each pipeline (see :mod:`workbench.traffic.generator`).
    echo
        Where the lines go.
    """

    def __init__(self, pipelines: Sequence[str], url: str, *, duration_s: float | None, pattern: str,
                 rate_rps: float, period_s: float, echo: Callable[[str], None] = print,
                 token: str | None = None) -> None:
        self.pipelines = list(pipelines)
        self.url = url
        self.duration_s = duration_s
        self.pattern = pattern
        self.rate_rps = rate_rps
        self.period_s = period_s
        self.echo = echo
        self.token = token
        self.error: BaseException | None = None
        self.stats: dict[str, dict[str, Any]] = {}
        self.reports: dict[str, dict[str, Any]] = {}
        self._hub: Hub | None = None
        self._task: asyncio.Task[None] | None = None

    def on_ready(self, server: uvicorn.Server) -> None:
        """Start the run on the server's loop (called there by :func:`~workbench.serving.server.serve`)."""
        self._task = asyncio.get_running_loop().create_task(self._run(server))

    async def _run(self, server: uvicorn.Server) -> None:
        from workbench.ui.hub import Hub

        app: Any = server.config.app
        engine: Engine = app.state.engine
        self._hub = hub = Hub.of_app(app)
        try:
            self._introduce(engine)
            await self._set_references(engine)
            await self._predict_a_few(engine)
            for name in self.pipelines:
                hub.lab.start(name, self.pattern, self.rate_rps, period_s=self.period_s)
            self.echo(f"\n{self.pattern} traffic at {self.rate_rps:g} requests/s per pipeline"
                      + (f" for {self.duration_s:g} s:" if self.duration_s is not None else " (Ctrl-C stops):"))
            began = time.monotonic()
            while self.duration_s is None or time.monotonic() - began < self.duration_s:
                await asyncio.sleep(1.0 if self.duration_s is None else min(1.0, max(0.0, self.duration_s -
                                                                                      (time.monotonic() - began))))
                if server.should_exit:
                    # NOTE: interrupted: the app's shutdown stops the lab before it closes the engine, and
                    # the summary reads the lab's reports then; the last live figures stand for the rest.
                    return
                self._print_live(engine)
            await hub.lab.close()
            self._keep(engine)
        except Exception as exc:
            self.error = exc
            self.echo(f"the demo stopped: {type(exc).__name__}: {exc}")
        finally:
            if self.duration_s is not None or self.error is not None:
                server.should_exit = True

    def _introduce(self, engine: Engine) -> None:
        info = engine.describe()
        self.echo(f"\nDask cluster: {len(info.get('workers') or {})} workers, scheduler {info.get('scheduler')}")
        self.echo(f"Dask dashboard: {info.get('dashboard_link')}")
        self.echo(f"Dashboard: {self.url}/dashboard" + (f"?token={self.token}" if self.token else ""))

    async def _set_references(self, engine: Engine) -> None:
        """Score the tabular demo's drift out of the box, against the rows its models were trained on."""
        if "tabular" not in self.pipelines or engine.drift("tabular").get("level") != "no_reference":
            return  # NOTE: a deployment attached from the cluster may have its reference already
        from workbench.demo.tabular import inject_missing, load_tabular_data

        data = await asyncio.to_thread(load_tabular_data)
        # NOTE: the served rows have a tenth of their values missing (the demo's point about imputation), so the
        # reference has too. The traffic cycles through the 143 held-out rows: against 426 reference rows, ten
        # quantile bins read sampling noise as a moderate shift (PSI ~0.1); four do not, and still flag a real one.
        await engine.set_reference("tabular", {"features": inject_missing(data.x_train, seed=1)}, bins=4)
        self.echo(f"\ntabular: drift scored against the {len(data.x_train)} training rows")

    async def _predict_a_few(self, engine: Engine) -> None:
        from workbench.traffic.requests import request_maker

        for name in self.pipelines:
            make = request_maker(engine.deployment(name).pipeline)
            inputs = make(8 if name == "tabular" else 4)
            prediction = await engine.predict(name, inputs)
            self.echo(f"\n{name}: deployed, variants {engine.deployment(name).variants}")
            _print_predictions(self.echo, name, inputs, prediction.outputs)

    def _print_live(self, engine: Engine) -> None:
        for name in self.pipelines:
            stats = self.stats[name] = engine.stats(name, recent_s=2.0)
            latency = stats["recent"]["latency_ms"]
            self.echo(f"  {name:<8} p50 {_ms(latency['p50'])} ms  p95 {_ms(latency['p95'])}  "
                      f"p99 {_ms(latency['p99'])}  {stats['recent']['throughput_rps']:6.0f} req/s  "
                      f"batch {stats['batch_size']['mean']:5.1f}  queue {stats['queue_depth']:3d}")

    def _keep(self, engine: Engine) -> None:
        for name in self.pipelines:
            self.stats[name] = engine.stats(name)
            if self._hub is not None:
                self.reports[name] = self._hub.lab.report(name) or {}

    def summary(self) -> None:
        """Where the time went and what was served, per pipeline (after the server stopped)."""
        if self._hub is not None and not self.reports:
            # NOTE: interrupted: the server's shutdown stopped the lab; the last live figures stand for the rest.
            self.reports = {name: self._hub.lab.report(name) or {} for name in self.pipelines}
        for name in self.pipelines:
            stats = self.stats.get(name)
            if stats is not None:
                self.echo(f"\n{name}: where the time goes (p50 per request, ms)")
                for key, value in stats["timings_ms"].items():
                    self.echo(f"    {key:<16} {value['p50']:8.3f}")
                self.echo(f"    {'end to end':<16} {stats['latency_ms']['p50']:8.3f}  "
                          f"(p99 {stats['latency_ms']['p99']:.3f})")
                self.echo(f"    batch sizes: {stats['batch_size']['histogram']}")
                for line in _monitoring_lines(stats):
                    self.echo(f"    {line}")
        self.echo("\nSummary")
        for name in self.pipelines:
            report = self.reports.get(name) or {}
            errors = ", ".join(f"{kind} {count}" for kind, count in sorted((report.get("errors") or {}).items()))
            self.echo(f"  {name}: {report.get('ok', 0)} requests served in {report.get('seconds', 0):.1f} s, "
                      f"p50 {_ms(report.get('p50_ms')).strip()} ms, p99 {_ms(report.get('p99_ms')).strip()} ms, "
                      f"{report.get('failed', 0)} errors" + (f" ({errors})" if errors else "")
                      + f" of {report.get('sent', 0)} sent")


def _monitoring_lines(stats: dict[str, Any]) -> list[str]:
    """Drift and business metrics in a line each, where the pipeline has them."""
    lines = []
    drift = stats.get("drift") or {}
    if drift.get("level") not in (None, "no_reference"):
        worst = ", ".join(f"{w['feature']} {w['psi']:.2f}" for w in (drift.get("worst") or [])[:3])
        lines.append(f"drift: {drift['level']} over {drift.get('live_rows', 0)} rows (worst PSI: {worst or '-'})")
    business = stats.get("business") or {}
    for variant, report in (business.get("variants") or {}).items():
        if not report["rows"]:
            lines.append(f"business ({variant}): a new {business.get('window_s', 0):g} s window has just begun")
            continue
        shares = "; ".join(f"{name} " + ", ".join(f"{value} {share:.0%}" for value, share in entry["rates"].items())
                           + (" SHIFTED" if entry["shifted"] else "") for name, entry in report["signals"].items())
        lines.append(f"business ({variant}, last {report['rows']} rows): {shares}")
    for stage, cache in (stats.get("feature_cache") or {}).items():
        rate = cache["hit_rate"]
        lines.append(f"feature cache ({stage}, {cache['cache']}): hit rate {'-' if rate is None else f'{rate:.0%}'}, "
                     f"{cache['computed']} computed")
    return lines


def _ms(value: Any) -> str:
    return "    -" if not isinstance(value, int | float) or math.isnan(value) else f"{value:7.2f}"


def _print_predictions(echo: Callable[[str], None], name: str, inputs: dict[str, np.ndarray],
                       outputs: dict[str, np.ndarray]) -> None:
    if "ranking" in outputs and "candidates" in inputs:
        for i, query in enumerate(inputs.get("query", [])):
            best = int(outputs["ranking"][i][0])
            echo(f"  {str(query)[:60]!r:<64} top: {str(inputs['candidates'][i][best])[:50]!r} "
                 f"(score {float(outputs['scores'][i][0]):.3f})")
        return
    shown = [k for k, v in outputs.items() if v.ndim == 1]
    first = next(iter(inputs.values()))
    for i in range(len(first)):
        subject = (f"{str(first[i])[:60]!r}" if first.dtype == object
                   else f"row {i} ({int(np.isnan(first[i]).sum())} missing)")
        values = "  ".join(f"{k}={_fmt(outputs[k][i])}" for k in shown)
        echo(f"  {subject:<64} {values}")


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float | np.floating) else str(value)
