"""The traffic lab: load with a chosen pattern against a deployed pipeline."""

from __future__ import annotations

from workbench.traffic.generator import PATTERNS, LoadGenerator, LoadReport, rate_at

__all__ = ["PATTERNS", "LoadGenerator", "LoadReport", "rate_at"]
