"""The traffic lab: load with a chosen pattern against a deployed pipeline."""

from __future__ import annotations

from workbench.traffic.generator import PATTERNS, LoadGenerator, LoadReport, rate_at
from workbench.traffic.lab import TrafficLab
from workbench.traffic.requests import request_maker

__all__ = ["PATTERNS", "LoadGenerator", "LoadReport", "TrafficLab", "rate_at", "request_maker"]
