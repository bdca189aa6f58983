"""Monitoring: rolling statistics of what the serving path does."""

from __future__ import annotations

from workbench.monitor.stats import BatcherStats, RollingWindow

__all__ = ["BatcherStats", "RollingWindow"]
