"""The one error tree of the workbench.

Every error a caller can act on derives from :class:`WorkbenchError` and carries
the HTTP status it maps to, so the serving front translates errors in one place::

    WorkbenchError (500)
    ├── InvalidInput (400)           a request tensor is wrong: name, dtype, shape, NaN, empty batch
    ├── PipelineWiringError (400)    stages do not fit together; raised when the pipeline is built
    ├── SpecError (400)              a pipeline file or dict cannot be read
    ├── ModelNotFound (404)          no such model or variant in the repository
    ├── ModelPathRefused (403)       a path that leaves the repository root
    ├── ModelLoadError (500)         a model file exists but ONNX Runtime cannot load it
    ├── StageFailed (500)            a stage raised while running a batch; names the stage
    ├── NotDeployed (404)            no pipeline is deployed under that name
    └── BackendUnavailable (503)     no worker can run the batch (all gone, or none ready in time)

``InvalidInput``, ``PipelineWiringError`` and ``SpecError`` are also ``ValueError``
and ``ModelNotFound`` is also ``LookupError``, so plain Python callers can catch
the built-in kinds they already expect.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BackendUnavailable",
    "InvalidInput",
    "ModelLoadError",
    "ModelNotFound",
    "ModelPathRefused",
    "NotDeployed",
    "PipelineWiringError",
    "SpecError",
    "StageFailed",
    "WorkbenchError",
]


class WorkbenchError(Exception):
    """Base of every workbench error; ``status_code`` is the HTTP status it maps to."""

    status_code: int = 500

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code

    def __reduce__(self) -> tuple[Any, ...]:
        # NOTE: subclasses take other constructor arguments; rebuild from the state instead,
        # so an error raised in a Dask task reaches the caller whole (kind, tensor, stage).
        return _rebuild_error, (type(self), self.message, dict(self.__dict__))


def _rebuild_error(kind: type[WorkbenchError], message: str, state: dict[str, Any]) -> WorkbenchError:
    error = kind.__new__(kind)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class InvalidInput(WorkbenchError, ValueError):
    """A request tensor does not match what the pipeline expects."""

    status_code = 400

    def __init__(self, message: str, tensor: str | None = None) -> None:
        super().__init__(message)
        self.tensor = tensor


class PipelineWiringError(WorkbenchError, ValueError):
    """Stages of a pipeline do not fit together (names, dtypes, shapes)."""

    status_code = 400

    def __init__(self, message: str, stage: str | None = None, tensor: str | None = None) -> None:
        super().__init__(message)
        self.stage = stage
        self.tensor = tensor


class SpecError(WorkbenchError, ValueError):
    """A pipeline specification (YAML or dict) is malformed."""

    status_code = 400


class ModelNotFound(WorkbenchError, LookupError):
    """The repository has no such model or variant."""

    status_code = 404


class ModelPathRefused(WorkbenchError):
    """A model or asset path resolves outside the repository root."""

    status_code = 403


class ModelLoadError(WorkbenchError):
    """A model file exists but cannot be loaded into an inference session."""

    status_code = 500


class StageFailed(WorkbenchError):
    """A stage raised while running a batch; the message names the stage."""

    status_code = 500

    def __init__(self, message: str, stage: str) -> None:
        super().__init__(message)
        self.stage = stage


class NotDeployed(WorkbenchError, LookupError):
    """No pipeline is deployed under that name."""

    status_code = 404


class BackendUnavailable(WorkbenchError):
    """No worker could run the batch: the request was not lost, it failed explicitly."""

    status_code = 503
