"""ONNX Runtime sessions on the best execution provider that really works.

``onnxruntime.get_available_providers()`` describes the build, not the machine:
the GPU wheel lists TensorRT and CUDA on a machine with no GPU, and asking for
them there prints errors and falls back. So the providers are probed once per
process (a tiny session per GPU provider, log silenced) and later sessions ask
only for what the probe saw working; what a session really uses is read back
from ``session.get_providers()``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from workbench.errors import ModelLoadError

__all__ = ["SessionConfig", "create_session", "spins", "usable_providers", "warm_up"]

log = logging.getLogger(__name__)

_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32", "tensor(uint64)": "uint64",
    "tensor(bool)": "bool", "tensor(string)": "str",
}


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """How sessions are made.

    Parameters
    ----------
    intra_op_threads, inter_op_threads
        ONNX Runtime thread pools; ``None`` lets ONNX Runtime choose (all cores).
    device
        ``"auto"`` (GPU for stages that ask for it, when usable), ``"cpu"``
        (never a GPU) or ``"gpu"`` (GPU for every model, when usable).
    tensorrt
        Whether TensorRT may be tried before CUDA.
    warmup_runs
        Dummy runs right after loading, so the first request pays no warm-up.
    spinning
        Whether ONNX Runtime's pool threads spin-wait for work instead of sleeping. ``None`` (auto)
        decides per model from its warm-up run (see :func:`spins`); ``True``/``False`` force it.
    """

    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    device: str = "auto"
    tensorrt: bool = True
    warmup_runs: int = 2
    spinning: bool | None = None

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "gpu"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', not {self.device!r}")
        for label, value in (("intra_op_threads", self.intra_op_threads), ("inter_op_threads", self.inter_op_threads)):
            if value is not None and value < 1:
                raise ValueError(f"{label} must be an integer >= 1 or None")
        if self.warmup_runs < 0:
            raise ValueError("warmup_runs must be an integer >= 0")


def _cuda_driver_present() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def _probe_model() -> bytes:
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph(
        [node], "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def _preload_cuda_libraries() -> None:
    """Load CUDA and cuDNN from the ``nvidia-*`` wheels (the ``gpu`` extra), when they are installed."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            preload()
    except Exception as exc:  # missing wheels are normal: system CUDA libraries may be used instead
        log.debug("onnxruntime.preload_dlls() failed: %s", exc)


@functools.cache
def usable_providers() -> tuple[str, ...]:
    """The execution providers that really run on this machine, best first (probed once)."""
    built = ort.get_available_providers()
    usable = []
    candidates = [p for p in _GPU_PROVIDERS if p in built]
    if candidates and _cuda_driver_present():
        _preload_cuda_libraries()
        options = ort.SessionOptions()
        options.log_severity_level = 4
        model = _probe_model()
        for provider in candidates:
            # NOTE: ONNX Runtime prints its fallback notice with print(); keep it out of the user's log.
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    session = ort.InferenceSession(model, options, providers=[provider, "CPUExecutionProvider"])
                except (RuntimeError, ValueError):
                    continue
            if provider in session.get_providers():
                usable.append(provider)
    usable.append("CPUExecutionProvider")
    log.debug("usable execution providers: %s", usable)
    return tuple(usable)


def _providers_for(resource: str, config: SessionConfig) -> list[str]:
    wants_gpu = config.device == "gpu" or (config.device == "auto" and resource == "gpu")
    if not wants_gpu:
        return ["CPUExecutionProvider"]
    return [p for p in usable_providers() if config.tensorrt or p != "TensorrtExecutionProvider"]


def create_session(path: Path, config: SessionConfig, resource: str = "cpu") -> tuple[ort.InferenceSession, str]:
    """Create a session for ``path`` and return it with the provider it really uses.

    Raises :class:`~workbench.errors.ModelLoadError` when the file cannot be loaded.
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if config.intra_op_threads is not None:
        options.intra_op_num_threads = config.intra_op_threads
    if config.inter_op_threads is not None:
        options.inter_op_num_threads = config.inter_op_threads
    spin = "0" if config.spinning is False else "1"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    providers = _providers_for(resource, config)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # ORT raises several private exception types for a bad file
        raise ModelLoadError(f"cannot load model {path}: {exc}") from exc
    return session, session.get_providers()[0]


#: How to serve a model whose output is not a tensor; most often skl2onnx's default ZipMap.
NOT_A_TENSOR_FIX = ("only tensors can be served. An sklearn classifier converted with skl2onnx's defaults has a "
                    "ZipMap output: add the model with `workbench models add` (which makes it a probability "
                    "tensor), or convert it with options={'zipmap': False}")


def onnx_dtype(ort_type: str) -> str:
    """The canonical dtype name for an ONNX Runtime type string such as ``tensor(float)``."""
    try:
        return _ORT_TYPES[ort_type]
    except KeyError:
        if not ort_type.startswith("tensor("):
            raise ModelLoadError(f"unsupported ONNX type {ort_type}: {NOT_A_TENSOR_FIX}") from None
        raise ModelLoadError(f"unsupported ONNX tensor type {ort_type}") from None


def onnx_shape(shape: list[Any]) -> tuple[int, ...]:
    """An ONNX Runtime shape with symbolic or unknown dimensions written as -1."""
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)


#: A model whose warm-up run is faster than this does not let its pool threads spin (see :func:`spins`).
SPIN_FROM_S = 1e-3


def spins(config: SessionConfig, warm_up_s: float | None) -> bool:
    """Whether a session's pool threads should spin-wait, given its fastest warm-up run.

    A spinning pool thread burns a core for as long as it waits, between runs as well as within one:
    the tabular GBT cost 2.2 ms of CPU per 13 µs run with requests 2 ms apart, 67 µs without spinning,
    a core the serving process and the other lanes need. A heavy graph runs many parallel sections, and
    waking sleeping threads for each adds up (MiniLM fp32: 1.5 ms a run with spinning, 2.2 ms without),
    so a model that runs for ``SPIN_FROM_S`` or longer spins; a lighter one, or one never timed, sleeps.
    """
    if config.spinning is not None:
        return config.spinning
    return warm_up_s is not None and warm_up_s >= SPIN_FROM_S


def warm_up(session: ort.InferenceSession, runs: int) -> float | None:
    """Run the session on small dummy inputs so its first real call is not slow; the fastest run's seconds."""
    feed = {}
    for arg in session.get_inputs():
        dtype = onnx_dtype(arg.type)
        shape = [d if d > 0 else (1 if i == 0 else 8) for i, d in enumerate(onnx_shape(arg.shape))]
        if dtype == "str":
            feed[arg.name] = np.full(shape, "", dtype=object)
        else:
            feed[arg.name] = np.ones(shape, dtype=dtype)
    fastest = None
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        took = time.perf_counter() - start
        fastest = took if fastest is None else min(fastest, took)
    return fastest
