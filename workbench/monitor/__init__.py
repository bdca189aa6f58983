"""Monitoring: rolling statistics of what the serving path does, drift, and its Prometheus metrics."""

from __future__ import annotations

from workbench.monitor.drift import DriftCollector, DriftMonitor, DriftThresholds
from workbench.monitor.metrics import DeploymentGauges, EngineGauges, Metrics, PipelineObserver
from workbench.monitor.stats import BatcherStats, RollingWindow, StatsObserver

__all__ = ["BatcherStats", "DeploymentGauges", "DriftCollector", "DriftMonitor", "DriftThresholds", "EngineGauges",
           "Metrics", "PipelineObserver", "RollingWindow", "StatsObserver"]
