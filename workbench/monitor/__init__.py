"""Monitoring: rolling statistics of what the serving path does, drift, business metrics, Prometheus metrics."""

from __future__ import annotations

from workbench.monitor.business import BusinessCollector, BusinessMonitor, ShiftRule
from workbench.monitor.drift import DriftCollector, DriftMonitor, DriftThresholds
from workbench.monitor.metrics import DeploymentGauges, EngineGauges, Metrics, PipelineObserver
from workbench.monitor.stats import BatcherStats, RollingWindow, StatsObserver

__all__ = ["BatcherStats", "BusinessCollector", "BusinessMonitor", "DeploymentGauges", "DriftCollector",
           "DriftMonitor", "DriftThresholds", "EngineGauges", "Metrics", "PipelineObserver", "RollingWindow",
           "ShiftRule", "StatsObserver"]
