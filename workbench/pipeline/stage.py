"""The stage: one step of a pipeline, a small object over numpy arrays.

A stage names the tensors it reads and writes, says which resource it wants,
computes the specs of its outputs from the specs of its inputs (that is how a
pipeline checks its wiring when it is built) and runs on a batch.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from workbench.errors import PipelineWiringError
from workbench.tensor import TensorSpec

if TYPE_CHECKING:
    from workbench.models.repository import ModelRepository

__all__ = ["RESOURCES", "Stage", "StageKind", "as_float_vector"]

#: What a stage may ask to run on.
RESOURCES = ("cpu", "gpu")


class StageKind(StrEnum):
    """The four kinds of stage a pipeline is made of."""

    PREPROCESS = "preprocess"
    FEATURES = "features"
    INFERENCE = "inference"
    POSTPROCESS = "postprocess"


class Stage(abc.ABC):
    """Base of every stage.

    Subclasses set ``kind`` and ``type_name`` (the key used in pipeline files),
    implement :meth:`output_specs` and :meth:`run`, and return their
    configuration from :meth:`params` so a pipeline can be written back to YAML.

    Parameters
    ----------
    inputs, outputs
        Names of the tensors read and written, in the order :meth:`run` takes
        and returns them.
    name
        Unique name within the pipeline; defaults to ``type_name``.
    resource
        ``"cpu"`` or ``"gpu"``: where the stage wants to run.
    """

    kind: ClassVar[StageKind]
    type_name: ClassVar[str]
    #: How many inputs and outputs the stage takes; ``None`` means any number.
    n_inputs: ClassVar[int | None] = 1
    n_outputs: ClassVar[int | None] = 1
    #: Whether the stage counts what it did per batch (cache hits, pairs compared): then the pipeline
    #: calls :meth:`run_counted`, and the counts travel back with the batch's outputs.
    counts: ClassVar[bool] = False

    def __init__(
        self,
        inputs: Sequence[str] | str,
        outputs: Sequence[str] | str,
        *,
        name: str | None = None,
        resource: str = "cpu",
    ) -> None:
        self.name = name or self.type_name
        self.inputs = (inputs,) if isinstance(inputs, str) else tuple(inputs)
        self.outputs = (outputs,) if isinstance(outputs, str) else tuple(outputs)
        if resource not in RESOURCES:
            raise ValueError(f"stage {self.name!r}: resource must be one of {RESOURCES}, not {resource!r}")
        self.resource = resource
        checks = (("inputs", self.inputs, self.n_inputs), ("outputs", self.outputs, self.n_outputs))
        for label, names, expected in checks:
            if not names or not all(isinstance(n, str) and n for n in names):
                raise PipelineWiringError(f"stage {self.name!r}: {label} must be non-empty tensor names", self.name)
            if expected is not None and len(names) != expected:
                raise PipelineWiringError(
                    f"stage {self.name!r}: takes {expected} {label}, got {len(names)} ({', '.join(names)})", self.name
                )

    # NOTE: binding is separate from construction so that a pipeline can be
    # described (and shipped to a cluster) without touching model files.
    def bind(self, repository: ModelRepository | None, *, load: bool = True) -> None:  # noqa: B027
        """Resolve files and models this stage needs; the default needs none."""

    @abc.abstractmethod
    def output_specs(self, inputs: Sequence[TensorSpec]) -> list[TensorSpec]:
        """Specs of the outputs, given the specs of the inputs; raise on a mismatch."""

    @abc.abstractmethod
    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        """Run on one batch: arrays in the order of ``inputs``, out in the order of ``outputs``."""

    def run_counted(self, *arrays: np.ndarray) -> tuple[tuple[np.ndarray, ...], dict[str, int]]:
        """:meth:`run`, plus counts of what the batch did (``{}`` unless the stage sets ``counts``)."""
        return self.run(*arrays), {}

    def observers(self) -> dict[str, Any]:
        """Watchers of the deployment's answered requests (engine ``Observer`` objects), by their stats key.

        The engine attaches them when the pipeline is deployed; the default has none.
        """
        return {}

    def params(self) -> dict[str, Any]:
        """The stage's configuration as plain data (lists, numbers, strings)."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        """The stage as it is written in a pipeline file."""
        data: dict[str, Any] = {"name": self.name, "type": self.type_name}
        data["inputs"] = list(self.inputs)
        data["outputs"] = list(self.outputs)
        if self.resource != "cpu":
            data["resource"] = self.resource
        data.update(self.params())
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stage:
        """Build the stage from its pipeline-file form (the inverse of :meth:`to_dict`)."""
        params = {k: v for k, v in data.items() if k not in ("type", "inputs", "outputs")}
        inputs, outputs = data.get("inputs"), data.get("outputs")
        if inputs is None or outputs is None:
            raise TypeError("'inputs' and 'outputs' are required")
        return cls(_one_or_many(inputs, cls.n_inputs), _one_or_many(outputs, cls.n_outputs), **params)

    def wiring_error(self, message: str, tensor: str | None = None) -> PipelineWiringError:
        """An error naming this stage (and the tensor, if given)."""
        where = f"stage {self.name!r}" + (f", tensor {tensor!r}" if tensor else "")
        return PipelineWiringError(f"{where}: {message}", self.name, tensor)

    def expect(self, spec: TensorSpec, *, kinds: str, ndim: int | None = None, nan_ok: bool = True) -> None:
        """Check an input spec's dtype kind (numpy kind letters) and rank."""
        dtype = spec.numpy_dtype
        if spec.dtype == "str":
            if "U" not in kinds:
                raise self.wiring_error(f"text where {_kind_words(kinds)} is expected", spec.name)
        elif dtype.kind not in kinds:
            raise self.wiring_error(f"dtype {spec.dtype} where {_kind_words(kinds)} is expected", spec.name)
        if ndim is not None and spec.shape is not None and len(spec.shape) != ndim:
            raise self.wiring_error(f"shape {list(spec.shape)} where a {ndim}-d tensor is expected", spec.name)
        if not nan_ok and spec.allow_nan:
            raise self.wiring_error("may contain NaN here; put an impute stage before this one", spec.name)

    def expect_width(self, spec: TensorSpec, width: int) -> None:
        """Check that the last dimension of a 2-d input is ``width`` (when known)."""
        if spec.shape is not None and spec.shape[-1] not in (-1, width):
            raise self.wiring_error(f"has {spec.shape[-1]} columns where this stage was fitted on {width}", spec.name)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, inputs={list(self.inputs)}, "
            f"outputs={list(self.outputs)}, resource={self.resource!r})"
        )


def _one_or_many(names: Any, expected: int | None) -> Any:
    if expected == 1 and isinstance(names, list) and len(names) == 1:
        return names[0]
    return names


def _kind_words(kinds: str) -> str:
    words = {"f": "float", "i": "integer", "u": "unsigned integer", "b": "bool", "U": "text"}
    return " or ".join(words[k] for k in kinds if k in words)


def as_float_vector(values: Any, label: str) -> np.ndarray:
    """A fitted parameter as a 1-d float32 array (used by the fitted built-ins)."""
    array = np.asarray(values, dtype=np.float32)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{label} must be a non-empty 1-d list of numbers")
    return array

