"""Custom stages: any Python callable over numpy arrays becomes a stage."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from workbench.errors import SpecError
from workbench.pipeline.stage import Stage, StageKind
from workbench.tensor import TensorSpec

__all__ = ["FunctionStage", "has_python_stage", "stage"]


def has_python_stage(stages: Iterable[Stage]) -> bool:
    """Whether ``stages`` (a pipeline's) hold a ``python`` stage, alone or inside another (a ``cached``
    stage): user code, which may block, write somewhere, or refuse made-up rows."""
    return any(isinstance(s, FunctionStage) or has_python_stage(getattr(s, "stages", ())) for s in stages)


class FunctionStage(Stage):
    """Wrap a plain callable ``fn(*arrays) -> array | tuple[array, ...]``.

    The callable cannot tell the pipeline what it returns, so outputs are
    declared with their specs (``{"margin": "float32[-1]"}``); each batch's
    results are checked against them, so a bug in custom code surfaces as an
    error naming the stage, not as a wrong answer further down.

    Parameters
    ----------
    fn
        The callable, or an import path ``"package.module:function"``.
    inputs
        Names of the tensors passed to ``fn``, in order.
    outputs
        Output tensor names and their specs, in the order ``fn`` returns them.
    kind
        Which kind of stage this is (``preprocess``, ``features``, ``postprocess``...).

    Examples
    --------
    >>> margin = FunctionStage(lambda p: p[:, 1] - p[:, 0], inputs=["probabilities"],
    ...                        outputs={"margin": "float32[-1]"}, kind="postprocess", name="margin")
    """

    type_name = "python"
    n_inputs = None
    n_outputs = None

    def __init__(
        self, fn: Callable[..., Any] | str, *, inputs: Sequence[str], outputs: Mapping[str, str],
        kind: str | StageKind = StageKind.PREPROCESS, name: str | None = None, resource: str = "cpu",
    ) -> None:
        self.function_path = fn if isinstance(fn, str) else _import_path(fn)
        self.fn = _resolve(fn) if isinstance(fn, str) else fn
        self.kind = StageKind(kind)  # type: ignore[misc]
        super().__init__(inputs, list(outputs), name=name or getattr(self.fn, "__name__", "python"), resource=resource)
        self.declared = [TensorSpec.parse(n, text) for n, text in outputs.items()]

    def output_specs(self, inputs: Sequence[TensorSpec]) -> list[TensorSpec]:
        return list(self.declared)

    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        result = self.fn(*arrays)
        results = result if isinstance(result, tuple) else (result,)
        if len(results) != len(self.declared):
            raise TypeError(f"returned {len(results)} values where {len(self.declared)} outputs are declared")
        batch = arrays[0].shape[0] if arrays else None
        out = []
        for value, spec in zip(results, self.declared):
            array = np.asarray(value, dtype=spec.numpy_dtype)
            if batch is not None and (array.ndim == 0 or array.shape[0] != batch):
                raise TypeError(f"output {spec.name!r} has shape {list(array.shape)}, not a batch of {batch}")
            out.append(array)
        return tuple(out)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FunctionStage:
        params = {k: v for k, v in data.items() if k != "type"}
        return cls(params.pop("function"), **params)

    def to_dict(self) -> dict[str, Any]:
        if self.function_path is None:
            raise SpecError(
                f"stage {self.name!r}: its function cannot be written to a file; "
                "use a module-level function (importable as 'package.module:function')"
            )
        data: dict[str, Any] = {"name": self.name, "type": self.type_name, "kind": self.kind.value,
                                "function": self.function_path, "inputs": list(self.inputs),
                                "outputs": {spec.name: spec.text() for spec in self.declared}}
        if self.resource != "cpu":
            data["resource"] = self.resource
        return data


def stage(
    *, inputs: Sequence[str], outputs: Mapping[str, str], kind: str = "preprocess", name: str | None = None,
    resource: str = "cpu",
) -> Callable[[Callable[..., Any]], FunctionStage]:
    """Decorator that turns a function into a :class:`FunctionStage`.

    Examples
    --------
    >>> @stage(inputs=["probabilities"], outputs={"margin": "float32[-1]"}, kind="postprocess")
    ... def margin(p):
    ...     return p[:, 1] - p[:, 0]
    """

    def wrap(fn: Callable[..., Any]) -> FunctionStage:
        return FunctionStage(fn, inputs=inputs, outputs=outputs, kind=kind, name=name, resource=resource)

    return wrap


def _import_path(fn: Callable[..., Any]) -> str | None:
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname or "." in qualname:
        return None
    return f"{module}:{qualname}"


def _resolve(path: str) -> Callable[..., Any]:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise SpecError(f"function {path!r} must be written 'package.module:function'")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"cannot import function {path!r}: {exc}") from exc
    if isinstance(fn, FunctionStage):  # the name was decorated with @stage
        fn = fn.fn
    if not callable(fn):
        raise SpecError(f"{path!r} is not callable")
    return fn  # type: ignore[no-any-return]
