"""The view-model of one dashboard view: which pipeline it shows, and its knobs, mirrored from the engine.

The engine owns every knob; this object mirrors them. A change made here
(a slider, a selector) is sent at once to the engine's own methods, the core
the control API calls too; each refresh then writes back what the engine says,
so a change made elsewhere (the REST API, a notebook, the auto-tuner) shows
here within a refresh. A value the user has just changed is not overwritten
by a sample taken before the change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import panel as pn
import param

from workbench.backend.placement import PLACEMENTS
from workbench.traffic.generator import PATTERNS
from workbench.ui.feed import Sample

if TYPE_CHECKING:
    from workbench.ui.hub import Hub
    from workbench.ui.link import Pending

__all__ = ["DashboardState"]

log = logging.getLogger(__name__)

Listener = Callable[[Sample, bool], None]


class DashboardState(param.Parameterized):
    """Pipeline shown, knobs, autoscaling and traffic settings of one view; each change calls the engine.

    Parameters
    ----------
    hub
        The engine's shared side (link, feed, traffic lab).
    pipeline
        The deployment to show first (default: the first deployed).

    Examples
    --------
    >>> state = DashboardState(hub, pipeline="tabular")      # doctest: +SKIP
    >>> state.max_batch_size = 8       # the engine's set_batching("tabular", max_batch_size=8)
    """

    pipeline: param.Selector[str | None] = param.Selector(default=None, objects=[], allow_None=True,
                                                          doc="The deployment shown and driven.")
    variant: param.Selector[str | None] = param.Selector(
        default=None, objects=[], allow_None=True,
        doc="Active variant, as 'stage: variant'; choosing another swaps to it with no request dropped.")
    placement: param.Selector[str] = param.Selector(
        default="auto", objects=list(PLACEMENTS), label="Placement",
        doc="Where batches run: auto (in this process when a batch costs less than a trip to a worker, else on "
            "the workers), inprocess, fused or by-resource; a change drops no request.")
    placed = param.String(default="", doc="Where batches run now, and why (read only).")
    max_batch_size = param.Integer(default=32, bounds=(1, None), softbounds=(1, 256),
                                   doc="Most rows in one batch.")
    max_delay_ms = param.Number(default=5.0, bounds=(0, 10_000), softbounds=(0, 50), step=0.5,
                                doc="Longest wait for company, in ms.")
    target_p99_ms = param.Number(default=None, allow_None=True, bounds=(0, None), inclusive_bounds=(False, True),
                                 label="Latency target (p99 ms)", doc="p99 latency to meet; empty clears it.")
    auto_tune = param.Boolean(default=False, label="Auto-tune batching",
                              doc="Let the auto-tuner move the two knobs above towards the latency target.")
    autoscaling = param.Boolean(default=False, label="Autoscale workers",
                                doc="Let the number of Dask workers follow the traffic.")
    min_workers = param.Integer(default=1, bounds=(0, 256), label="Min workers")
    max_workers = param.Integer(default=4, bounds=(1, 256), label="Max workers")
    traffic_pattern: param.Selector[str] = param.Selector(default="poisson", objects=list(PATTERNS), label="Pattern")
    traffic_rate = param.Number(default=100.0, bounds=(1, 100_000), softbounds=(1, 2000), step=1,
                                label="Rate (requests/s)")
    start_traffic = param.Event(label="Start traffic", doc="Start the load against the pipeline shown.")
    stop_traffic = param.Event(label="Stop traffic", doc="Stop the load against the pipeline shown.")
    message = param.String(default="", doc="What the last action did, or why it failed.")
    failed = param.Boolean(default=False, doc="Whether the message reports a failure.")

    def __init__(self, hub: Hub, pipeline: str | None = None, **params: Any) -> None:
        super().__init__(**params)
        self.hub = hub
        self.sample: Sample | None = None
        self._wanted = pipeline
        self._listeners: list[Listener] = []
        self._syncing = False
        self._force = False
        self._changed_at: dict[str, float] = {}
        self._variants: dict[str, tuple[str, str]] = {}
        self._pending: list[tuple[str, Pending]] = []
        self._callback: Any = None
        self._run_seen: tuple[Any, ...] | None = None

    # -- views -------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(sample, fresh)`` at each refresh; ``fresh`` when the pipeline shown changed."""
        self._listeners.append(listener)
        if self.sample is not None:
            listener(self.sample, True)

    def start(self) -> None:
        """Refresh now, then every ``hub.refresh_s`` from a periodic callback of this session (or kernel)."""
        self.refresh()
        if self._callback is None:
            self._callback = pn.state.add_periodic_callback(self.refresh, period=int(self.hub.refresh_s * 1000))

    def stop(self) -> None:
        """Stop refreshing (a notebook view that is no longer needed)."""
        if self._callback is not None:
            self._callback.stop()
            self._callback = None

    def refresh(self, *, force: bool = False) -> None:
        """Take the latest sample, mirror the engine's knobs, report finished actions, update every view.

        The feed's sample is reused while it is recent, unless ``force`` (or an action just ran).
        """
        try:
            sample = self.hub.feed.poll(force=force or self._force)
        except Exception as exc:
            self._say(f"cannot read the engine: {exc}", failed=True)
            return
        self._force = False
        fresh = self._mirror(sample)
        self._report_pending()
        self._notify(sample, fresh)

    def _notify(self, sample: Sample, fresh: bool) -> None:
        for listener in self._listeners:
            try:
                listener(sample, fresh)
            except Exception:
                # NOTE: one broken view must not stop the others from refreshing.
                log.exception("a dashboard view failed to refresh")

    # -- mirroring the engine ----------------------------------------------------------
    def _mirror(self, sample: Sample) -> bool:
        """Write what the engine says into the parameters (without calling the engine back)."""
        self.sample = sample
        names = sorted(sample.stats)
        previous = self.pipeline
        chosen = previous if previous in names else self._wanted if self._wanted in names else (
            names[0] if names else None)
        values: dict[str, Any] = {}
        stats = sample.stats.get(chosen) if chosen is not None else None
        if stats is not None:
            config = stats["config"]
            target = (stats.get("autoscaling") or {}).get("latency_target_ms")
            values.update(max_batch_size=int(config["max_batch_size"]), max_delay_ms=float(config["max_delay_ms"]),
                          target_p99_ms=target, auto_tune=config["mode"] == "auto")
            if stats.get("placement") in PLACEMENTS:
                values["placement"] = stats["placement"]
            values["placed"] = placed_text(stats.get("placed") or {})
            if not self._swapping() and (chosen != previous or not self._variants):
                self._variants = self._variant_options(str(chosen), stats)
            active = self._active_variant(stats)
            if active is not None and not self._swapping():
                values["variant"] = active
        run = sample.traffic.get(chosen) if chosen is not None else None
        if run is not None and run["running"] and self._run_seen != (chosen, run["started"]):
            # NOTE: a run started elsewhere (another view, the demo) shows its settings once; later edits stay.
            self._run_seen = (chosen, run["started"])
            values.update(traffic_pattern=run["pattern"], traffic_rate=min(max(float(run["rate_rps"]), 1.0), 1e5))
        scaling = sample.autoscaling
        values["autoscaling"] = bool(scaling.get("enabled"))
        if scaling.get("enabled"):
            values.update(min_workers=int(scaling.get("minimum", 0)), max_workers=int(scaling.get("maximum", 1)))
        values = {k: v for k, v in values.items() if self._changed_at.get(k, 0.0) < sample.at}
        with self._quiet():
            self.param.pipeline.objects = names
            self.param.variant.objects = list(self._variants)
            self.param.update(pipeline=chosen, **values)
        return bool(chosen != previous)

    def _variant_options(self, name: str, stats: dict[str, Any]) -> dict[str, tuple[str, str]]:
        """``{"stage: variant": (stage, variant)}`` for every variant of every inference stage."""
        def listed() -> dict[str, list[str]]:
            pipeline = self.hub.engine.deployment(name).pipeline
            repository = pipeline.repository
            return {s.name: repository.variants(s.model) if repository is not None else [s.variant]
                    for s in pipeline.inference_stages}

        try:
            by_stage = self.hub.link.call(listed)
        except Exception:
            by_stage = {}
        options: dict[str, tuple[str, str]] = {}
        for stage, active in stats["variants"].items():
            for variant in by_stage.get(stage) or [active]:
                options[f"{stage}: {variant}"] = (stage, variant)
        return options

    def _active_variant(self, stats: dict[str, Any]) -> str | None:
        """The option of the first stage that has a choice of variants (else of the first stage)."""
        active = [f"{stage}: {variant}" for stage, variant in stats["variants"].items()]
        stages = [stage for stage, _ in self._variants.values()]
        choices = [option for option, stage in zip(active, stats["variants"]) if stages.count(stage) > 1]
        return next((option for option in choices + active if option in self._variants), None)

    def _quiet(self) -> _Quiet:
        return _Quiet(self)

    # -- driving the engine ------------------------------------------------------------
    def _apply(self, what: str, fn: Callable[..., Any], *args: Any, changed: str | None = None,
               **kwargs: Any) -> None:
        """Call ``fn`` on the engine's loop and say how it went; ``changed`` names the parameter it follows."""
        if self._syncing:
            return
        if changed is not None:
            self._changed_at[changed] = time.time()
        # NOTE: the next refresh takes a new sample, so the effect shows at once.
        self._force = True
        try:
            self.hub.link.call(fn, *args, **kwargs)
        except Exception as exc:
            self._say(f"{what}: {exc}", failed=True)
        else:
            self._say(what)

    @param.depends("pipeline", watch=True)
    def _pipeline_chosen(self) -> None:
        if self._syncing or self.sample is None:
            return
        self._wanted = self.pipeline
        self._variants = {}
        self._mirror(self.sample)
        self._notify(self.sample, True)

    @param.depends("max_batch_size", watch=True)
    def _max_batch_size_changed(self) -> None:
        if self.pipeline is not None:
            self._apply(f"{self.pipeline}: max_batch_size {self.max_batch_size}", self.hub.engine.set_batching,
                        self.pipeline, max_batch_size=self.max_batch_size, changed="max_batch_size")

    @param.depends("max_delay_ms", watch=True)
    def _max_delay_changed(self) -> None:
        if self.pipeline is not None:
            self._apply(f"{self.pipeline}: max_delay_ms {self.max_delay_ms:g}", self.hub.engine.set_batching,
                        self.pipeline, max_delay_ms=self.max_delay_ms, changed="max_delay_ms")

    @param.depends("target_p99_ms", watch=True)
    def _target_changed(self) -> None:
        if self.pipeline is not None:
            target = self.target_p99_ms or None
            self._apply(f"{self.pipeline}: latency target " + (f"{target:g} ms" if target else "cleared"),
                        self.hub.engine.set_latency_target, self.pipeline, target, changed="target_p99_ms")

    @param.depends("auto_tune", watch=True)
    def _auto_tune_changed(self) -> None:
        if self.pipeline is not None:
            mode = "auto" if self.auto_tune else "dynamic"
            self._apply(f"{self.pipeline}: mode {mode}", self.hub.engine.set_batching, self.pipeline, mode=mode,
                        changed="auto_tune")

    @param.depends("autoscaling", "min_workers", "max_workers", watch=True)
    def _autoscaling_changed(self) -> None:
        if self._syncing:
            return
        for name in ("autoscaling", "min_workers", "max_workers"):
            self._changed_at[name] = time.time()
        if self.autoscaling:
            self._apply(f"autoscaling between {self.min_workers} and {self.max_workers} workers",
                        self.hub.engine.autoscale, self.min_workers, self.max_workers)
        else:
            self._apply("autoscaling off", self.hub.engine.stop_autoscaling)

    @param.depends("variant", watch=True)
    def _variant_chosen(self) -> None:
        if self._syncing or self.pipeline is None or self.variant not in self._variants:
            return
        stage, variant = self._variants[self.variant]
        self._changed_at["variant"] = time.time()
        self._pending.append((f"swap of {self.pipeline} to {variant}",
                              self.hub.link.start(self.hub.engine.swap, self.pipeline, variant, stage)))
        self._say(f"swapping {self.pipeline} to {variant}: loading and warming it on every worker...")

    @param.depends("placement", watch=True)
    def _placement_chosen(self) -> None:
        if self._syncing or self.pipeline is None:
            return
        self._changed_at["placement"] = time.time()
        self._pending.append((f"placement of {self.pipeline}: {self.placement}",
                              self.hub.link.start(self.hub.engine.set_placement, self.pipeline, self.placement)))
        self._say(f"moving {self.pipeline} to placement {self.placement}...")

    @param.depends("start_traffic", watch=True)
    def start_lab(self) -> None:
        """Start the traffic lab's load against the pipeline shown, with the pattern and rate set."""
        if self.pipeline is None:
            self._say("no pipeline is deployed", failed=True)
            return
        self._apply(f"traffic: {self.traffic_pattern} at {self.traffic_rate:g} requests/s to {self.pipeline}",
                    self.hub.lab.start, self.pipeline, self.traffic_pattern, self.traffic_rate)

    @param.depends("stop_traffic", watch=True)
    def stop_lab(self) -> None:
        """Stop the traffic lab's load against the pipeline shown."""
        if self.pipeline is not None:
            self._apply(f"traffic to {self.pipeline} stopped", self.hub.lab.stop, self.pipeline)

    def _swapping(self) -> bool:
        return any(not bool(pending.done()) for _, pending in self._pending)

    def _report_pending(self) -> None:
        for entry in [entry for entry in self._pending if entry[1].done()]:
            self._pending.remove(entry)
            what, pending = entry
            error = pending.exception()
            if error is not None:
                self._say(f"{what} failed: {error}", failed=True)
                self._variants = {}
            else:
                seconds = (pending.result() or {}).get("seconds")
                self._say(f"{what} done" + (f" in {seconds:g} s" if seconds is not None else ""))
            self._force = True

    def _say(self, message: str, *, failed: bool = False) -> None:
        with self._quiet():
            self.param.update(message=message, failed=failed)


def placed_text(placed: dict[str, Any]) -> str:
    """One line: where batches run, why, and the costs it is judged on (``stats["placed"]``)."""
    where = placed.get("where")
    if not where:
        return ""
    line = f"runs {'in this process' if where == 'embedded' else 'on the workers'}"
    reason = (placed.get("decision") or {}).get("reason")
    if reason:
        line += f": {reason}"
    compute, trip = placed.get("compute_ms"), placed.get("trip_ms")
    if compute is not None and trip is not None:
        line += f" (now {compute:.2f} ms a batch, {trip:.2f} ms a trip)"
    return line


class _Quiet:
    """Within it, parameter changes only mirror the engine: the watchers that call the engine stand still."""

    def __init__(self, state: DashboardState) -> None:
        self.state = state
        self.outer = False

    def __enter__(self) -> None:
        self.outer = self.state._syncing
        self.state._syncing = True

    def __exit__(self, *exc: object) -> None:
        self.state._syncing = self.outer
