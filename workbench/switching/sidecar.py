"""A variant deployed beside a deployment's active one: for calibration runs and shadow traffic.

It is a deployment of its own on the backend (``<name>@<purpose>``), with
generations of its own, so that it never clashes with the generations of the
deployment it stands beside: a swap of that deployment neither sees nor
retires it. It is not published with the cluster state, nor served by any batcher
of the engine's.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from workbench._sync import aclose
from workbench.batching.batcher import RunBatch
from workbench.errors import WorkbenchError
from workbench.pipeline.graph import Pipeline
from workbench.pipeline.inference import OnnxStage

if TYPE_CHECKING:
    from workbench.engine import Backend, Deployment

__all__ = ["Sidecar", "deploy_sidecar", "variant_stage"]

# NOTE: a process-wide counter: two sidecars of one purpose (a shadow stopped and started again while the
# first retires) never share a generation.
_generations = itertools.count(1)


@dataclass(slots=True)
class Sidecar:
    """One side deployment on the backend, and its runner."""

    backend: Backend
    name: str
    generation: int
    pipeline: Pipeline
    runner: RunBatch

    async def retire(self) -> None:
        await aclose(self.runner)  # NOTE: its own threads, here (an in-process or embedded runner)
        await self.backend.retire(self.name, self.generation)


async def deploy_sidecar(backend: Backend, deployment: str, purpose: str, pipeline: Pipeline,
                         placement: str = "fused") -> Sidecar:
    """Load and warm ``pipeline`` on the backend as ``<deployment>@<purpose>``, a deployment of its own."""
    name, generation = f"{deployment}@{purpose}", next(_generations)
    runner = await backend.deploy(name, generation, pipeline, placement)
    return Sidecar(backend, name, generation, pipeline, runner)


def variant_stage(deployment: Deployment, stage: str | None) -> OnnxStage:
    """``stage``, or the first inference stage whose model has several variants."""
    stages = deployment.pipeline.inference_stages
    if stage is not None:
        found = next((s for s in stages if s.name == stage), None)
        if found is None:
            raise WorkbenchError(f"{deployment.name!r} has no inference stage {stage!r}; inference stages: "
                                 f"{[s.name for s in stages]}", 404)
        return found
    repository = deployment.pipeline.repository
    for candidate in stages:
        if repository is not None and len(repository.variants(candidate.model)) > 1:
            return candidate
    if not stages:
        raise WorkbenchError(f"{deployment.name!r} has no inference stage to switch", 409)
    return stages[0]
