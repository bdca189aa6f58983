"""Notebook widgets: ``wb.controls(name)`` moves a deployment's knobs, ``wb.live(name)`` shows its latency live.

Both are thin adapters over the :class:`~workbench.api.Workbench` façade, so every
change goes through the engine, the same core the control API and the dashboard
call, and both read back only what :meth:`~workbench.api.Workbench.stats` says.
Changes made elsewhere (the dashboard, the REST control API, the auto-tuner, a
script) therefore show in the widgets at their next refresh.

Refreshing: each view owns one daemon thread that wakes every ``interval_s``
(``WORKBENCH_UI_REFRESH_S``, 1 s by default), takes one statistics snapshot
through the Workbench's portal and updates its widgets. Why a thread, and not a
task on one of the two event loops:

- the Workbench's own loop runs the batchers (and, in-process, hands the batches
  out): drawing charts and serialising widget state there would sit on the
  request path; the thread only makes one short call onto that loop per refresh;
- the kernel's loop stops while a cell runs, so a task there would freeze the
  view exactly while a long cell (a load test, ``time.sleep``, ``wb.batch``) runs;
- ipykernel sends widget updates through its IOPub thread, which accepts them
  from any thread (as progress bars updated from worker threads rely on).

A change from a widget runs on the kernel's thread and takes a lock that the
refresh also takes, so a refresh never undoes a change half-way; the values a
refresh writes do not call back into the engine.
"""

from __future__ import annotations

import html
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workbench.config import WorkbenchSettings

try:
    import ipywidgets as widgets  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - ipywidgets is a dependency of the package
    raise ImportError("the notebook widgets need ipywidgets: pip install 'ipywidgets>=8.1'") from exc

if TYPE_CHECKING:
    from workbench.api import Workbench

__all__ = ["Controls", "LiveView"]

#: Colours of the latency quantiles, throughput and the target line.
_COLOURS = {"p50": "#2a9d8f", "p95": "#e9c46a", "p99": "#e76f51", "throughput": "#264653", "target": "#d62828"}


class _Poller:
    """Call ``tick`` every ``interval_s`` from a daemon thread, until stopped or the Workbench is closed."""

    def __init__(self, wb: Workbench, tick: Callable[[], None], on_error: Callable[[Exception], None],
                 interval_s: float, name: str) -> None:
        self.wb = wb
        self.tick = tick
        self.on_error = on_error
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s) and not self.wb.closed:
            try:
                self.tick()
            except Exception as exc:
                if self.wb.closed:
                    break
                # NOTE: one failed refresh (an undeployed name, a cluster hiccup) is shown, and the next one retried.
                self.on_error(exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval_s + 5)


def _interval(interval_s: float | None) -> float:
    interval = WorkbenchSettings().ui_refresh_s if interval_s is None else interval_s
    if not interval > 0:
        raise ValueError("interval_s must be > 0")
    return interval


def _message(exc: BaseException) -> str:
    return html.escape(f"{type(exc).__name__}: {exc}")


class Controls:
    """The knobs of one deployment as ipywidgets, each change applied through the engine.

    Shown by :meth:`Workbench.controls <workbench.api.Workbench.controls>`: one
    variant selector per inference stage (a swap), ``max_batch_size`` and
    ``max_delay_ms`` sliders, the p99 latency target (``0``: none), auto-tune
    on/off (off returns to mode ``"dynamic"``, the knobs where the tuner left them),
    and autoscaling on/off with its worker range (Dask backends only). A refused
    change springs back and the status line says why.

    Parameters
    ----------
    wb
        The Workbench the deployment runs on.
    name
        The deployment.
    interval_s
        Seconds between two refreshes from the engine (default ``WORKBENCH_UI_REFRESH_S``).

    Examples
    --------
    >>> controls = wb.controls("text")              # doctest: +SKIP
    >>> controls                                    # doctest: +SKIP
    >>> controls.max_batch_size.value = 8           # doctest: +SKIP
    >>> controls.close()                            # doctest: +SKIP
    """

    def __init__(self, wb: Workbench, name: str, *, interval_s: float | None = None) -> None:
        self.wb = wb
        self.name = name
        stats = wb.stats(name)
        self._lock = threading.RLock()
        self._syncing = False
        self._swapping: set[str] = set()
        self._swap_threads: list[threading.Thread] = []
        look = {"style": {"description_width": "110px"}, "layout": widgets.Layout(width="420px")}
        # NOTE: a slider applies when released, not at every step of a drag.
        knob = {**look, "continuous_update": False}
        active = stats["variants"]
        self.variants: dict[str, Any] = {
            stage: widgets.Dropdown(options=sorted({*choices, active[stage]}), value=active[stage],
                                    description=f"{stage} variant", disabled=len(choices) < 2, **look)
            for stage, choices in wb.variants(name).items()
        }
        self.max_batch_size = widgets.IntSlider(min=1, max=256, description="max_batch_size", **knob)
        self.max_delay_ms = widgets.FloatSlider(min=0.0, max=50.0, step=0.5, description="max_delay_ms", **knob)
        self.latency_target_ms = widgets.BoundedFloatText(min=0.0, max=60_000.0, step=1.0, description="p99 target ms",
                                                          tooltip="0: no target", **knob)
        self.autotune = widgets.ToggleButton(description="auto-tune", icon="magic",
                                             tooltip="let the auto-tuner move the batching knobs towards the target")
        self.workers = widgets.IntRangeSlider(min=0, max=16, value=(1, 4), description="workers", **knob)
        self.autoscale = widgets.ToggleButton(description="autoscale", icon="arrows-v",
                                              tooltip="let the number of workers follow the traffic in this range")
        self.header = widgets.HTML()
        self.status = widgets.HTML()
        self.widget = widgets.VBox([
            self.header, *self.variants.values(), self.max_batch_size, self.max_delay_ms,
            widgets.HBox([self.latency_target_ms, self.autotune]), widgets.HBox([self.workers, self.autoscale]),
            self.status,
        ])
        for stage, dropdown in self.variants.items():
            dropdown.observe(lambda change, stage=stage: self._on_variant(stage, change["new"]), names="value")
        self.max_batch_size.observe(lambda change: self._on_knob("max_batch_size", change["new"]), names="value")
        self.max_delay_ms.observe(lambda change: self._on_knob("max_delay_ms", change["new"]), names="value")
        self.latency_target_ms.observe(lambda change: self._on_target(change["new"]), names="value")
        self.autotune.observe(lambda change: self._on_autotune(change["new"]), names="value")
        self.autoscale.observe(lambda _: self._on_autoscale(), names="value")
        self.workers.observe(lambda _: self._on_autoscale(only_when_on=True), names="value")
        self.refresh(stats)
        self._poller = _Poller(wb, self.refresh, self._show_error, _interval(interval_s), f"workbench-controls-{name}")

    # -- reading the engine ------------------------------------------------------------
    def refresh(self, stats: dict[str, Any] | None = None) -> None:
        """Show what the engine says now (done every ``interval_s`` on its own)."""
        stats = self.wb.stats(self.name) if stats is None else stats
        config, scaling = stats["config"], stats["autoscaling"]
        target = scaling.get("latency_target_ms")
        with self._lock:
            self._syncing = True
            try:
                for stage, dropdown in self.variants.items():
                    if stage not in self._swapping:
                        dropdown.value = stats["variants"][stage]
                self.max_batch_size.max = max(self.max_batch_size.max, config["max_batch_size"])
                self.max_batch_size.value = config["max_batch_size"]
                self.max_delay_ms.max = max(self.max_delay_ms.max, config["max_delay_ms"])
                self.max_delay_ms.value = config["max_delay_ms"]
                self.latency_target_ms.value = target or 0.0
                auto = config["mode"] == "auto"
                self.autotune.value = auto
                # NOTE: while the tuner moves the knobs, a hand on them would be overruled at its next decision.
                self.max_batch_size.disabled = self.max_delay_ms.disabled = auto
                scalable = stats["backend"] != "inprocess"
                self.autoscale.disabled = self.workers.disabled = not scalable
                self.autoscale.value = bool(scaling.get("enabled"))
                if scaling.get("enabled"):
                    self.workers.max = max(self.workers.max, scaling["maximum"])
                    self.workers.value = (scaling["minimum"], scaling["maximum"])
                tuner = stats["autotune"]
                self.header.value = (
                    f"<b>{html.escape(self.name)}</b> &middot; {html.escape(stats['backend'])} &middot; "
                    f"generation {stats['generation']} &middot; mode <code>{html.escape(config['mode'])}</code>"
                    + (f" &middot; <i>{html.escape(str(tuner.get('reason', '')))}</i>" if auto else "")
                    + ("" if scalable else " &middot; <i>in-process: no workers to scale</i>"))
            finally:
                self._syncing = False

    def _show_error(self, exc: Exception) -> None:
        self.status.value = f"<span style='color:{_COLOURS['target']}'>refresh: {_message(exc)}</span>"

    # -- changing the engine -----------------------------------------------------------
    def _apply(self, what: str, change: Callable[[], object]) -> None:
        with self._lock:
            if self._syncing:
                return
            try:
                change()
            except Exception as exc:
                self.status.value = f"<span style='color:{_COLOURS['target']}'>{what}: {_message(exc)}</span>"
            else:
                self.status.value = f"&#10003; {html.escape(what)}"
            # NOTE: read back at once: a refused change springs back, an accepted one shows its effect.
            self._refresh_or_show()

    def _refresh_or_show(self) -> None:
        try:
            self.refresh()
        except Exception as exc:
            if not self.wb.closed:
                self._show_error(exc)

    def _on_knob(self, knob: str, value: float) -> None:
        self._apply(f"{knob} = {value:g}", lambda: self.wb.set_batching(self.name, **{knob: value}))

    def _on_target(self, value: float) -> None:
        target = value if value > 0 else None
        self._apply(f"p99 target = {'none' if target is None else f'{target:g} ms'}",
                    lambda: self.wb.set_latency_target(self.name, target))

    def _on_autotune(self, on: bool) -> None:
        mode = "auto" if on else "dynamic"
        self._apply(f"mode = {mode}", lambda: self.wb.set_batching(self.name, mode=mode))

    def _on_autoscale(self, *, only_when_on: bool = False) -> None:
        if only_when_on and not self.autoscale.value:
            return
        low, high = self.workers.value
        on = self.autoscale.value
        self._apply(f"autoscale {low}-{high} workers" if on else "autoscale off",
                    lambda: self.wb.autoscale(low, high) if on else self.wb.autoscale(None))

    def _on_variant(self, stage: str, variant: str) -> None:
        with self._lock:
            if self._syncing:
                return
            # NOTE: a swap loads and warms the variant on every worker (seconds): it runs on its own
            # thread so that the kernel stays free, and this selector stays put until it is done.
            self._swapping.add(stage)
            self.variants[stage].disabled = True
            self.status.value = f"swapping {html.escape(stage)} to {html.escape(variant)}&hellip;"
        thread = threading.Thread(target=self._swap, args=(stage, variant), name=f"workbench-swap-{self.name}",
                                  daemon=True)
        self._swap_threads.append(thread)
        thread.start()

    def _swap(self, stage: str, variant: str) -> None:
        try:
            event = self.wb.swap(self.name, variant, stage)
        except Exception as exc:
            message = f"<span style='color:{_COLOURS['target']}'>swap: {_message(exc)}</span>"
        else:
            message = f"&#10003; {html.escape(stage)} swapped to {html.escape(variant)} in {event['seconds']:g} s"
        with self._lock:
            self._swapping.discard(stage)
            self.variants[stage].disabled = len(self.variants[stage].options) < 2
            self.status.value = message
        self._refresh_or_show()

    def wait(self, timeout_s: float = 60.0) -> None:
        """Wait for the swaps started from the selectors to finish (for scripts and tests)."""
        deadline = time.monotonic() + timeout_s
        for thread in list(self._swap_threads):
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                raise TimeoutError(f"a swap of {self.name!r} is still running after {timeout_s:g} s")
        self._swap_threads = [t for t in self._swap_threads if t.is_alive()]

    # -- lifetime ----------------------------------------------------------------------
    @property
    def refreshing(self) -> bool:
        """Whether the background refresh still runs (it stops with :meth:`close` or the Workbench)."""
        return self._poller.running

    def close(self) -> None:
        """Stop refreshing and remove the widgets from the page."""
        self._poller.stop()
        _close(self.widget)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float
    p50: float
    p95: float
    p99: float
    throughput_rps: float
    target_ms: float | None


class LiveView:
    """Latency (p50/p95/p99, with the target) and throughput of one deployment, redrawn in place.

    Shown by :meth:`Workbench.live <workbench.api.Workbench.live>`. A background thread
    takes a statistics snapshot every ``interval_s`` and redraws two small SVG charts over
    the last ``window_s`` seconds, with the current figures above them; the kernel stays free.
    Each point covers the ``recent_s`` seconds before it, so a change shows within seconds.

    Parameters
    ----------
    wb
        The Workbench the deployment runs on.
    name
        The deployment.
    interval_s
        Seconds between two snapshots (default ``WORKBENCH_UI_REFRESH_S``).
    window_s
        How much of the past the charts show.
    recent_s
        How far back the percentiles and the throughput of each point look.

    Examples
    --------
    >>> view = wb.live("text")      # doctest: +SKIP
    >>> view                        # doctest: +SKIP
    >>> view.close()                # doctest: +SKIP
    """

    def __init__(self, wb: Workbench, name: str, *, interval_s: float | None = None, window_s: float = 60.0,
                 recent_s: float = 3.0) -> None:
        if not window_s > 0:
            raise ValueError("window_s must be > 0")
        if not recent_s > 0:
            raise ValueError("recent_s must be > 0")
        self.wb = wb
        self.name = name
        self.window_s = window_s
        self.recent_s = recent_s
        interval = _interval(interval_s)
        self.samples: deque[_Sample] = deque(maxlen=max(2, math.ceil(window_s / interval) + 1))
        self.widget = widgets.HTML(layout=widgets.Layout(width="100%"))
        self._error = ""
        self.refresh()
        self._poller = _Poller(wb, self.refresh, self._show_error, interval, f"workbench-live-{name}")

    def refresh(self) -> None:
        """Take a snapshot and redraw (done every ``interval_s`` on its own)."""
        stats = self.wb.stats(self.name, recent_s=self.recent_s)
        recent = stats["recent"]
        latency = recent["latency_ms"]
        self.samples.append(_Sample(time.monotonic(), latency["p50"], latency["p95"], latency["p99"],
                                    recent["throughput_rps"], stats["autoscaling"].get("latency_target_ms")))
        self._error = ""
        self.widget.value = self._render(stats)

    def _show_error(self, exc: Exception) -> None:
        self._error = _message(exc)
        self.widget.value = self._render(None)

    def _render(self, stats: dict[str, Any] | None) -> str:
        now = time.monotonic()
        samples = [s for s in self.samples if now - s.at <= self.window_s]
        last = samples[-1] if samples else None
        figures = ""
        if last is not None:
            cells = [(q, _ms(getattr(last, q)), _COLOURS[q]) for q in ("p50", "p95", "p99")]
            cells.append(("throughput", f"{last.throughput_rps:.0f} req/s", _COLOURS["throughput"]))
            if last.target_ms is not None:
                cells.append(("p99 target", _ms(last.target_ms), _COLOURS["target"]))
            figures = "".join(f"<span style='margin-right:1.4em'><span style='color:{colour}'>&#9632;</span> "
                              f"{label} <b>{value}</b></span>" for label, value, colour in cells)
        detail = ""
        if stats is not None:
            config = stats["config"]
            variants = ", ".join(f"{k}={v}" for k, v in stats["variants"].items())
            detail = (f"batch {stats['batch_size']['mean']:.1f} of {config['max_batch_size']} &middot; wait "
                      f"{config['max_delay_ms']:g} ms &middot; mode {html.escape(config['mode'])} &middot; queue "
                      f"{stats['queue_depth']} &middot; errors {stats['errors_total']} &middot; rejected "
                      f"{stats.get('rejected_total', 0)} &middot; {html.escape(variants)}")
        error = f"<div style='color:{_COLOURS['target']}'>{self._error}</div>" if self._error else ""
        latency = _chart([(q, _COLOURS[q], [(s.at, getattr(s, q)) for s in samples]) for q in ("p50", "p95", "p99")],
                         now, self.window_s, "ms",
                         target=last.target_ms if last is not None else None)
        throughput = _chart([("throughput", _COLOURS["throughput"], [(s.at, s.throughput_rps) for s in samples])],
                            now, self.window_s, "req/s")
        return (f"<div style='font-family:var(--jp-ui-font-family, sans-serif);font-size:12px'>"
                f"<div><b>{html.escape(self.name)}</b> &middot; last {self.window_s:g} s, each point over "
                f"{self.recent_s:g} s</div>"
                f"<div style='margin:4px 0'>{figures}</div>"
                f"<div style='display:flex;gap:12px;flex-wrap:wrap'>{latency}{throughput}</div>"
                f"<div style='color:#555'>{detail}</div>{error}</div>")

    @property
    def refreshing(self) -> bool:
        """Whether the background refresh still runs (it stops with :meth:`close` or the Workbench)."""
        return self._poller.running

    def close(self) -> None:
        """Stop refreshing and remove the view from the page."""
        self._poller.stop()
        self.widget.close()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def _close(widget: Any) -> None:
    for child in getattr(widget, "children", ()):
        _close(child)
    widget.close()


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"


def _chart(series: Sequence[tuple[str, str, Sequence[tuple[float, float]]]], now: float, window_s: float, unit: str,
           *, target: float | None = None, width: int = 360, height: int = 150) -> str:
    """A small SVG line chart of ``series`` (label, colour, points of (time, value)) over the last ``window_s``."""
    left, right, top, bottom = 44, 8, 8, 18
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for _, _, points in series for _, v in points if not math.isnan(v)]
    peak = max([*values, target or 0.0, 1e-9]) * 1.15
    scale = _nice(peak)

    def x(at: float) -> float:
        return left + plot_w * (1 - (now - at) / window_s)

    def y(value: float) -> float:
        return top + plot_h * (1 - value / scale)

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
             f"style='background:#fafafa;border:1px solid #ddd'>"]
    for fraction in (0.0, 0.5, 1.0):
        level = y(scale * fraction)
        parts.append(f"<line x1='{left}' x2='{width - right}' y1='{level:.1f}' y2='{level:.1f}' stroke='#e3e3e3'/>"
                     f"<text x='{left - 4}' y='{level + 4:.1f}' font-size='10' text-anchor='end' fill='#666'>"
                     f"{scale * fraction:g}</text>")
    parts.append(f"<text x='{left}' y='{height - 4}' font-size='10' fill='#666'>-{window_s:g} s</text>"
                 f"<text x='{width - right}' y='{height - 4}' font-size='10' text-anchor='end' fill='#666'>now</text>"
                 f"<text x='{left + plot_w / 2:.0f}' y='{height - 4}' font-size='10' text-anchor='middle' "
                 f"fill='#666'>{html.escape(unit)}</text>")
    if target is not None:
        parts.append(f"<line x1='{left}' x2='{width - right}' y1='{y(target):.1f}' y2='{y(target):.1f}' "
                     f"stroke='{_COLOURS['target']}' stroke-dasharray='5 3'/>")
    for _, colour, points in series:
        path = " ".join(f"{x(at):.1f},{y(v):.1f}" for at, v in points if not math.isnan(v))
        if path:
            parts.append(f"<polyline points='{path}' fill='none' stroke='{colour}' stroke-width='2'/>")
    parts.append("</svg>")
    return "".join(parts)


def _nice(peak: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above ``peak``."""
    power = 10.0 ** math.floor(math.log10(peak))
    return next(step * power for step in (1.0, 2.0, 5.0, 10.0) if step * power >= peak)
