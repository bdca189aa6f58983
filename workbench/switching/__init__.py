"""Model switching and shadow traffic: which variant serves, and how a candidate compares.

- :mod:`~workbench.switching.profile`: what each variant costs, by batch size, learnt from served batches;
- :mod:`~workbench.switching.policy`: the decision (pure): best quality within the latency target, with hysteresis;
- :mod:`~workbench.switching.controller`: the loop that follows a policy and swaps variants;
- :mod:`~workbench.switching.shadow`: live requests mirrored to a candidate, compared side by side;
- :mod:`~workbench.switching.sidecar`: a variant deployed beside the active one (calibration, shadow).
"""

from __future__ import annotations

from workbench.switching.controller import SwitchingController, set_policy
from workbench.switching.policy import (
           POLICIES,
           Candidate,
           Estimate,
           Load,
           SwitchDecision,
           SwitchingPolicy,
           SwitchingRules,
)
from workbench.switching.profile import BatchGrouper, LatencyProfile
from workbench.switching.shadow import ShadowTraffic, start_shadow, stop_shadow

__all__ = ["POLICIES", "BatchGrouper", "Candidate", "Estimate", "LatencyProfile", "Load", "ShadowTraffic",
           "SwitchDecision", "SwitchingController", "SwitchingPolicy", "SwitchingRules", "set_policy", "start_shadow",
           "stop_shadow"]
