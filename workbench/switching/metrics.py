"""Prometheus gauges of model switching and shadow traffic, read when scraped::

    workbench_switches_total{pipeline}                        switches the policy made
    workbench_switching_predicted_p99_ms{pipeline,variant}    each candidate's p99 predicted at the current load
    workbench_shadow_compared_total{pipeline,variant}         mirrored requests the candidate answered
    workbench_shadow_dropped_total{pipeline,variant}          mirrored requests dropped (the candidate fell behind)
    workbench_shadow_agreement_ratio{pipeline,variant}        share of rows where the candidate agreed
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from workbench.switching.controller import SwitchingController
from workbench.switching.shadow import ShadowTraffic

__all__ = ["SwitchingCollector"]


class SwitchingCollector(Collector):
    """Reads the switching controllers and shadows among the observers that ``read`` returns by pipeline name."""

    def __init__(self, read: Callable[[], Mapping[str, Mapping[str, Any]]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        switches = CounterMetricFamily("workbench_switches", "Variant switches made by the switching policy.",
                                       labels=["pipeline"])
        predicted = GaugeMetricFamily("workbench_switching_predicted_p99_ms", "p99 latency predicted for each "
                                      "candidate variant at the current load (absent: cannot keep up).",
                                      labels=["pipeline", "variant"])
        compared = CounterMetricFamily("workbench_shadow_compared", "Mirrored requests the shadow variant answered.",
                                       labels=["pipeline", "variant"])
        dropped = CounterMetricFamily("workbench_shadow_dropped", "Mirrored requests dropped because the shadow "
                                      "variant fell behind.", labels=["pipeline", "variant"])
        agreement = GaugeMetricFamily("workbench_shadow_agreement_ratio", "Share of mirrored rows where the shadow "
                                      "variant's label agreed with the active variant's.",
                                      labels=["pipeline", "variant"])
        for name, observers in self._read().items():
            controller, shadow = observers.get("switching"), observers.get("shadow")
            if isinstance(controller, SwitchingController):
                switches.add_metric([name], float(controller.switches))
                for candidate in controller.last_candidates:
                    p99 = candidate.as_dict()["predicted_p99_ms"]
                    if p99 is not None:
                        predicted.add_metric([name, candidate.variant], p99)
            if isinstance(shadow, ShadowTraffic):
                compared.add_metric([name, shadow.variant], float(shadow.compared))
                dropped.add_metric([name, shadow.variant], float(shadow.dropped))
                if shadow.rows:
                    agreement.add_metric([name, shadow.variant], shadow.agreed / shadow.rows)
        yield from (switches, predicted, compared, dropped, agreement)
