"""Settings of the workbench, read from ``WORKBENCH_*`` environment variables."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from workbench.models.session import SessionConfig

__all__ = ["BATCHING_MODES", "BatchingConfig", "WorkbenchSettings"]

#: How a batcher forms batches.
BATCHING_MODES = ("dynamic", "realtime", "auto")


class WorkbenchSettings(BaseSettings):
    """Where the workbench keeps its files and how it creates sessions.

    Every field can be set by an environment variable with the ``WORKBENCH_``
    prefix, e.g. ``WORKBENCH_HOME=/data/workbench``.
    """

    model_config = SettingsConfigDict(env_prefix="WORKBENCH_", extra="ignore")

    home: Path = Path(".workbench")
    """Folder holding the model repository (``models/``) and pipeline files (``pipelines/``)."""
    intra_op_threads: int | None = Field(None, ge=1)
    """ONNX Runtime threads per session; unset lets ONNX Runtime use every core."""
    inter_op_threads: int | None = Field(None, ge=1)
    """ONNX Runtime threads across independent graph nodes; unset lets ONNX Runtime choose."""
    device: str = Field("auto", pattern="^(auto|cpu|gpu)$")
    """``auto``: GPU for stages that ask for it when a GPU works; ``cpu``: never; ``gpu``: every model."""
    ort_spinning: bool | None = None
    """Whether ONNX Runtime's pool threads spin-wait; unset: per model (:func:`~workbench.models.session.spins`)."""
    ui_refresh_s: float = Field(1.0, gt=0, le=60)
    """Seconds between two refreshes of the live views (notebook widgets, dashboard) from the statistics."""
    prediction_log: str | None = None
    """Where answered requests are logged: a SQLite file path or ``sqlite:///<path>`` URL; unset:
    ``<home>/predictions.sqlite``; empty or ``off``: not logged (see :mod:`workbench.monitor.predlog`)."""
    prediction_log_max_rows: int | None = Field(1_000_000, ge=1)
    """Most predictions the log keeps (the oldest go first); unset: no bound by count."""
    prediction_log_max_age_s: float | None = Field(30 * 86400, gt=0)
    """Predictions older than this many seconds are deleted from the log; unset: no bound by age."""
    gc_mitigate: bool = True
    """Apply the GC mitigations below after each deploy, in the serving process and on workers; off: neither."""
    gc_freeze: bool = True
    """``gc.freeze()`` once the pipeline is warm: full collections no longer traverse models and modules."""
    gc_threshold0: int | None = Field(None, ge=1)
    """Allocations between two young collections (Python's default is 700); unset keeps the interpreter's.

    Off by default: ``benchmarks/bench_pycosts.py`` showed fewer but longer young pauses and no p99 gain."""
    gil_sampler: bool = True
    """Run the thread that estimates GIL contention (a wake every 5 ms) in each process."""
    latency_budget_ms: float | None = Field(1000.0, gt=0)
    """The p99 latency (ms) a pipeline deployed without a target of its own is held to: requests that the
    queue ahead would keep past it get 429 with ``Retry-After`` at once. ``none`` (or empty) turns it off."""
    hang_factor: float = Field(10.0, gt=0)
    """A call to a worker is hung past this many times the p99 of its runner's recent calls
    (see :mod:`workbench.backend.hung`): its batch goes to another worker, the silent one is cordoned."""
    hang_floor_s: float = Field(2.0, gt=0)
    """The shortest a call to a worker may wait before it counts as hung."""
    hang_first_s: float = Field(30.0, gt=0)
    """How long a call may wait before its runner has measured any (the first batches of a deployment)."""

    @field_validator("latency_budget_ms", mode="before")
    @classmethod
    def _none_turns_it_off(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", "none", "off"):
            return None
        return value

    @property
    def repository_dir(self) -> Path:
        return self.home / "models"

    @property
    def pipelines_dir(self) -> Path:
        return self.home / "pipelines"

    def session_config(self) -> SessionConfig:
        return SessionConfig(
            intra_op_threads=self.intra_op_threads, inter_op_threads=self.inter_op_threads, device=self.device,
            spinning=self.ort_spinning,
        )


@dataclass(frozen=True, slots=True)
class BatchingConfig:
    """The live knobs of a dynamic batcher; a new value applies from the next batch.

    Parameters
    ----------
    max_batch_size
        Most rows in one batch (a request of several rows counts them all).
    max_delay_ms
        Longest a request waits for others to join its batch once the batcher
        is free to dispatch; ``0`` never waits.
    mode
        ``"dynamic"`` (the default), ``"realtime"`` (batches of one request, no wait) or
        ``"auto"`` (batches like ``"dynamic"``, while an auto-tuner moves ``max_batch_size``
        and ``max_delay_ms`` towards a p99 latency target).
    max_in_flight
        Batches dispatched at once (one per worker that can run them).
    """

    max_batch_size: int = 32
    max_delay_ms: float = 5.0
    mode: str = "dynamic"
    max_in_flight: int = 1
    max_queue: int = 2048

    def __post_init__(self) -> None:
        if not isinstance(self.max_batch_size, int) or self.max_batch_size < 1:
            raise ValueError("max_batch_size must be an integer >= 1")
        if not 0 <= self.max_delay_ms <= 10_000:
            raise ValueError("max_delay_ms must be between 0 and 10000")
        if self.mode not in BATCHING_MODES:
            raise ValueError(f"mode must be one of {BATCHING_MODES}, not {self.mode!r}")
        if not isinstance(self.max_in_flight, int) or self.max_in_flight < 1:
            raise ValueError("max_in_flight must be an integer >= 1")
        if not isinstance(self.max_queue, int) or self.max_queue < 1:
            raise ValueError("max_queue must be an integer >= 1")

    def updated(self, **changes: Any) -> BatchingConfig:
        """A copy with ``changes`` applied (checked); ``None`` values are ignored."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})
