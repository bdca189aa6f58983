"""The pipeline: a DAG of stages, checked when it is built and run in-process.

Stages are connected by tensor names. The build orders them (a stage runs after
every stage whose outputs it reads), checks every connection (that the tensor
exists, and that its dtype and shape are what the reader expects) and fails with
an error that names the stage and the tensor. A stage that several models read
from runs once per batch.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from workbench.errors import InvalidInput, PipelineWiringError, StageFailed, WorkbenchError
from workbench.models.repository import ModelRepository
from workbench.pipeline.inference import OnnxStage
from workbench.pipeline.signals import BusinessSignal, check_signals
from workbench.pipeline.stage import Stage
from workbench.tensor import TensorSpec

__all__ = ["Pipeline", "Prediction", "Segment"]


@dataclass(slots=True)
class Prediction:
    """Outputs of one batch and where the time went.

    ``timings_ms`` has one entry per stage that ran (by stage name), plus
    ``"validate"`` (checking the request) and ``"total"``. ``variants`` names the
    variant of each inference stage that computed the outputs, when the runner
    knows it: a swap may change the active variant while a batch runs.
    ``request_id`` is the request's id, which labels posted later refer to.
    """

    outputs: dict[str, np.ndarray]
    timings_ms: dict[str, float] = field(default_factory=dict)
    variants: dict[str, str] = field(default_factory=dict)
    request_id: str = ""
    """The id the request was logged under (:meth:`Engine.predict` sets it; a new one when the caller gave none)."""
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    """What counting stages did in the batch (``{stage: {"hits": ..., ...}}``; see :attr:`Stage.counts`)."""

    def __getitem__(self, name: str) -> np.ndarray:
        return self.outputs[name]


@dataclass(frozen=True, slots=True)
class Segment:
    """Consecutive stages that want the same resource: the unit placed on one worker.

    ``inputs`` are the tensors it reads from earlier segments or the request;
    ``outputs`` those that later segments or the caller need.
    """

    resource: str
    stages: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


class Pipeline:
    """A DAG of stages with named input and output tensors.

    Parameters
    ----------
    name
        The pipeline's name (what it is deployed and served as).
    inputs
        The request tensors: specs, or ``{name: "float32[-1,30]"}``.
    stages
        The stages, in any order; the build orders them by their tensors.
    outputs
        Tensors returned by :meth:`predict`; by default those no stage reads.
    repository
        The model repository (a path or a :class:`ModelRepository`) that
        inference stages and asset files come from.
    load
        Whether to create model sessions now; ``False`` only reads model
        signatures, which is enough to check the wiring and ship the pipeline.
    business
        Outputs watched as business signals once deployed (a label, a risk bucket, a
        score above a threshold; see :mod:`workbench.pipeline.signals`), checked here.
    instances
        Lanes per Dask worker: threads that run only this pipeline's batches there (Triton's
        instance groups), so it never queues behind another pipeline; ``instances`` batches
        of it run at once on each worker, and share the worker's cores for ONNX Runtime.
        ``None``: as many as the worker has threads (one on the embedded LocalCluster).
    reference
        A file of reference inputs (the training rows) that drift is scored against once deployed:
        Parquet or CSV (columns read as offline batch reads them), ``.npy`` (a one-input pipeline's
        array) or ``.npz`` (an array per input).

    Examples
    --------
    >>> pipeline = Pipeline(                                          # doctest: +SKIP
    ...     "tabular",
    ...     inputs={"features": "float32[-1,30]"},
    ...     stages=[Impute.fit(X, input="features", output="filled"),
    ...             OnnxStage("tabular", "gbt", inputs={"X": "filled"}),
    ...             LabelMap("probabilities", ["label"], labels=["malignant", "benign"])],
    ...     repository="models",
    ... )
    >>> pipeline.predict({"features": X[:2]}).outputs["label"]      # doctest: +SKIP
    """

    def __init__(
        self,
        name: str,
        inputs: Sequence[TensorSpec] | Mapping[str, str],
        stages: Sequence[Stage],
        *,
        outputs: Sequence[str] | None = None,
        repository: ModelRepository | str | Path | None = None,
        load: bool = True,
        description: str = "",
        business: Sequence[BusinessSignal] = (),
        instances: int | None = None,
        reference: str | Path | None = None,
    ) -> None:
        if instances is not None and not (isinstance(instances, int) and not isinstance(instances, bool)
                                          and instances >= 1):
            raise PipelineWiringError(f"pipeline {name!r}: instances must be an integer >= 1, not {instances!r}")
        self.name = name
        self.description = description
        self.instances = instances
        self.reference = Path(reference) if reference is not None else None
        if isinstance(repository, (str, Path)):
            repository = ModelRepository(repository)
        self.repository = repository
        self.input_specs = _input_specs(inputs)
        self.loaded = load
        for stage in stages:
            stage.bind(repository, load=load)
        self.stages, self.specs = _order_and_check(self.input_specs, stages)
        consumed = {n for stage in self.stages for n in stage.inputs}
        produced = [n for stage in self.stages for n in stage.outputs]
        self.output_names = tuple(outputs) if outputs is not None else tuple(n for n in produced if n not in consumed)
        for output in self.output_names:
            if output not in self.specs:
                raise PipelineWiringError(f"pipeline output {output!r} is produced by no stage", tensor=output)
        self.business = tuple(business)
        check_signals(name, self.business, self.output_specs)
        self._plans: dict[tuple[str, ...], list[Stage]] = {}
        self._segment_plans: dict[tuple[str, ...], list[Stage]] = {}
        self._default_plan = self._plan(self.output_names)

    # -- description ---------------------------------------------------------------------
    @property
    def output_specs(self) -> dict[str, TensorSpec]:
        return {n: self.specs[n] for n in self.output_names}

    @functools.cached_property
    def inference_stages(self) -> list[OnnxStage]:
        """The ONNX stages, in run order (read on every request: built once)."""
        return [s for s in self.stages if isinstance(s, OnnxStage)]

    def stage(self, name: str) -> Stage:
        """The stage called ``name``."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"pipeline {self.name!r} has no stage {name!r}; stages: {[s.name for s in self.stages]}")

    def describe(self) -> list[dict[str, Any]]:
        """One row per stage: kind, name, tensors in and out, resource, execution provider."""
        return [
            {
                "stage": s.name, "kind": s.kind.value, "type": s.type_name,
                "inputs": [self.specs[n].text() + " " + n for n in s.inputs],
                "outputs": [self.specs[n].text() + " " + n for n in s.outputs],
                "resource": s.resource,
                "provider": s.provider if isinstance(s, OnnxStage) else None,
            }
            for s in self.stages
        ]

    def __repr__(self) -> str:
        lines = [f"Pipeline({self.name!r})"]
        lines += [f"  in  {spec.text()} {n}" for n, spec in self.input_specs.items()]
        for s in self.stages:
            model = f" [{s.model}/{s.variant}]" if isinstance(s, OnnxStage) else ""
            lines.append(f"  {s.kind.value:<11} {s.name}{model}: {', '.join(s.inputs)} -> {', '.join(s.outputs)}")
        lines += [f"  out {self.specs[n].text()} {n}" for n in self.output_names]
        return "\n".join(lines)

    # -- variants ------------------------------------------------------------------------
    def with_variant(self, variant: str, stage: str | None = None, *, load: bool | None = None) -> Pipeline:
        """The same pipeline with an inference stage switched to another variant.

        ``stage`` defaults to the first inference stage whose model has ``variant``.
        """
        target = self._variant_stage(variant, stage)
        stages = [s.with_variant(variant) if s is target else _unbound_copy(s) for s in self.stages]
        return Pipeline(self.name, list(self.input_specs.values()), stages, outputs=self.output_names,
                        repository=self.repository, load=self.loaded if load is None else load,
                        description=self.description, business=self.business, instances=self.instances,
                        reference=self.reference)

    def _variant_stage(self, variant: str, stage: str | None) -> OnnxStage:
        candidates = self.inference_stages if stage is None else [self.stage(stage)]
        for candidate in candidates:
            if not isinstance(candidate, OnnxStage):
                raise PipelineWiringError(f"stage {candidate.name!r} is not an inference stage", candidate.name)
            if self.repository is None or variant in self.repository.variants(candidate.model):
                return candidate
        models = sorted({s.model for s in candidates if isinstance(s, OnnxStage)})
        raise PipelineWiringError(f"no inference stage of pipeline {self.name!r} has a variant {variant!r} "
                                  f"(models: {models})")

    # -- running -------------------------------------------------------------------------
    def validate(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Check request tensors against the input specs; return them as arrays.

        Raises :class:`~workbench.errors.InvalidInput` naming the tensor at fault.
        """
        # NOTE: this runs on every request, in-process right after a model run has left the caches cold: the
        # common case (a dict of the right names) takes the fewest steps; which name is wrong is found on error.
        if type(inputs) is not dict and not isinstance(inputs, Mapping):
            raise InvalidInput(f"inputs must be a mapping of tensor name to array, not {type(inputs).__name__}")
        if len(inputs) != len(self.input_specs):
            self._reject_names(inputs)
        tensors = {}
        batch = None
        for name, spec in self.input_specs.items():
            if name not in inputs:
                self._reject_names(inputs)
            array = spec.validate(inputs[name])
            if batch is None:
                batch = array.shape[0]
            elif array.shape[0] != batch:
                raise InvalidInput(f"tensor {name!r}: batch of {array.shape[0]} where the other inputs have {batch}",
                                   name)
            tensors[name] = array
        return tensors

    def _reject_names(self, inputs: Mapping[str, Any]) -> NoReturn:
        """Raise :class:`InvalidInput` for the first unknown input tensor, else for the first missing one."""
        unknown = [n for n in inputs if n not in self.input_specs]
        if unknown:
            raise InvalidInput(
                f"unknown input tensor {unknown[0]!r}; pipeline {self.name!r} expects {list(self.input_specs)}",
                unknown[0],
            )
        missing = next(n for n in self.input_specs if n not in inputs)
        raise InvalidInput(f"missing input tensor {missing!r} ({self.input_specs[missing].text()})", missing)

    def predict(self, inputs: Mapping[str, Any], outputs: Sequence[str] | None = None) -> Prediction:
        """Validate ``inputs`` and run the batch in this process.

        ``outputs`` may name any tensor of the pipeline (intermediates too);
        only the stages needed for them run.
        """
        start = time.perf_counter_ns()
        tensors = self.validate(inputs)
        validated = time.perf_counter_ns()
        prediction = self.execute(tensors, outputs)
        prediction.timings_ms["validate"] = (validated - start) / 1e6
        prediction.timings_ms["total"] = (time.perf_counter_ns() - start) / 1e6
        return prediction

    def execute(self, tensors: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> Prediction:
        """Run already validated tensors through the stages (the hot path, no checks)."""
        plan = self._default_plan if outputs is None else self._plan(tuple(outputs))
        return self._run(plan, tensors, self.output_names if outputs is None else outputs)

    def _run(self, plan: list[Stage], tensors: dict[str, np.ndarray], names: Sequence[str]) -> Prediction:
        env = dict(tensors)
        timings: dict[str, float] = {}
        counters: dict[str, dict[str, int]] = {}
        clock = time.perf_counter_ns
        for stage in plan:
            began = clock()
            try:
                if stage.counts:
                    results, counters[stage.name] = stage.run_counted(*[env[n] for n in stage.inputs])
                else:
                    results = stage.run(*[env[n] for n in stage.inputs])
            except WorkbenchError:
                raise
            except Exception as exc:
                raise StageFailed(f"stage {stage.name!r} failed: {type(exc).__name__}: {exc}", stage.name) from exc
            timings[stage.name] = (clock() - began) / 1e6
            for name, value in zip(stage.outputs, results):
                env[name] = value
        return Prediction({n: env[n] for n in names}, timings, counters=counters)

    def segments(self) -> list[Segment]:
        """The default plan cut where the wanted resource changes (``cpu`` / ``gpu``).

        Running the segments one after the other, each on a worker with its
        resource, gives the same outputs as :meth:`execute`.
        """
        runs: list[list[Stage]] = []
        for stage in self._default_plan:
            if runs and runs[-1][0].resource == stage.resource:
                runs[-1].append(stage)
            else:
                runs.append([stage])
        segments = []
        for index, run in enumerate(runs):
            produced = {n for s in run for n in s.outputs}
            later = {n for r in runs[index + 1:] for s in r for n in s.inputs} | set(self.output_names)
            inputs = dict.fromkeys(n for s in run for n in s.inputs if n not in produced)
            outputs = [n for s in run for n in s.outputs if n in later]
            segments.append(Segment(run[0].resource, tuple(s.name for s in run), tuple(inputs), tuple(outputs)))
        return segments

    def execute_segment(self, segment: Segment, tensors: dict[str, np.ndarray]) -> Prediction:
        """Run one of :meth:`segments` on its input tensors; returns its output tensors."""
        plan = self._segment_plans.get(segment.stages)
        if plan is None:
            plan = self._segment_plans[segment.stages] = [self.stage(n) for n in segment.stages]
        return self._run(plan, tensors, segment.outputs)

    def _plan(self, outputs: tuple[str, ...]) -> list[Stage]:
        plan = self._plans.get(outputs)
        if plan is not None:
            return plan
        producer = {n: s for s in self.stages for n in s.outputs}
        needed: set[str] = set()
        pending = list(outputs)
        while pending:
            name = pending.pop()
            if name in self.input_specs:
                continue
            if name not in producer:
                raise InvalidInput(f"unknown output tensor {name!r}; pipeline {self.name!r} has {sorted(self.specs)}",
                                   name)
            stage = producer[name]
            if stage.name not in needed:
                needed.add(stage.name)
                pending.extend(stage.inputs)
        plan = [s for s in self.stages if s.name in needed]
        self._plans[outputs] = plan
        return plan

    # -- files ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The pipeline as plain data (what a pipeline file holds)."""
        from workbench.pipeline.spec import pipeline_to_dict

        return pipeline_to_dict(self)

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The pipeline file's text; written to ``path`` when given."""
        from workbench.pipeline.spec import dump_yaml

        return dump_yaml(self, path)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, repository: ModelRepository | str | Path | None = None,
                  load: bool = True) -> Pipeline:
        from workbench.pipeline.spec import pipeline_from_dict

        return pipeline_from_dict(data, repository=repository, load=load)

    @classmethod
    def from_yaml(cls, path: str | Path, *, repository: ModelRepository | str | Path | None = None,
                  load: bool = True) -> Pipeline:
        """Read a pipeline file; a relative ``repository:`` in it is taken from the file's folder."""
        from workbench.pipeline.spec import load_yaml

        return load_yaml(path, repository=repository, load=load)


def _input_specs(inputs: Sequence[TensorSpec] | Mapping[str, str]) -> dict[str, TensorSpec]:
    specs = [TensorSpec.parse(n, t) for n, t in inputs.items()] if isinstance(inputs, Mapping) else list(inputs)
    if not specs:
        raise PipelineWiringError("a pipeline needs at least one input tensor")
    by_name = {}
    for spec in specs:
        if spec.name in by_name:
            raise PipelineWiringError(f"input tensor {spec.name!r} is declared twice", tensor=spec.name)
        by_name[spec.name] = spec
    return by_name


def _order_and_check(
    input_specs: dict[str, TensorSpec], stages: Iterable[Stage]
) -> tuple[list[Stage], dict[str, TensorSpec]]:
    """Order stages so each runs after its producers, and check every connection."""
    stages = list(stages)
    if not stages:
        raise PipelineWiringError("a pipeline needs at least one stage")
    names = [s.name for s in stages]
    for name in names:
        if names.count(name) > 1:
            raise PipelineWiringError(f"two stages are named {name!r}; stage names must be unique", name)
    producer: dict[str, str] = {n: "input" for n in input_specs}
    for stage in stages:
        for tensor in stage.outputs:
            if tensor in producer:
                raise PipelineWiringError(
                    f"stage {stage.name!r}, tensor {tensor!r}: already produced by "
                    f"{'the pipeline inputs' if producer[tensor] == 'input' else 'stage ' + repr(producer[tensor])}",
                    stage.name, tensor,
                )
            producer[tensor] = stage.name
    for stage in stages:
        for tensor in stage.inputs:
            if tensor not in producer:
                raise PipelineWiringError(
                    f"stage {stage.name!r}, tensor {tensor!r}: produced by no input or stage; "
                    f"known tensors: {sorted(producer)}",
                    stage.name, tensor,
                )
    specs = dict(input_specs)
    ordered: list[Stage] = []
    remaining = list(stages)
    while remaining:
        ready = [s for s in remaining if all(n in specs for n in s.inputs)]
        if not ready:
            cycle = ", ".join(repr(s.name) for s in remaining)
            raise PipelineWiringError(f"stages {cycle} wait on each other's outputs (a cycle)", remaining[0].name)
        for stage in ready:
            produced = stage.output_specs([specs[n] for n in stage.inputs])
            if [p.name for p in produced] != list(stage.outputs):
                raise PipelineWiringError(f"stage {stage.name!r} described outputs that it does not name", stage.name)
            specs.update((p.name, p) for p in produced)
            ordered.append(stage)
            remaining.remove(stage)
    return ordered, specs


def _unbound_copy(stage: Stage) -> Stage:
    """A fresh copy of a stage from its file form, so a new pipeline binds its own."""
    if isinstance(stage, OnnxStage):
        return stage.with_variant(stage.variant)
    return stage
