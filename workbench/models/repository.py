"""The model repository: a folder of models, each with named variants.

Layout::

    <root>/<model>/<variant>/model.onnx
    <root>/<model>/<variant>/metadata.yaml     version, expected quality, notes
    <root>/<model>/<other assets>               e.g. a tokenizer.json shared by the variants

Every path is resolved inside ``root``: a name or asset path that escapes it
(``..``, an absolute path, a symlink pointing out) is refused.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import onnxruntime as ort

from workbench.errors import ModelLoadError, ModelNotFound, ModelPathRefused
from workbench.models.metadata import METADATA_FILE, ModelMetadata
from workbench.models.session import (
    NOT_A_TENSOR_FIX,
    SessionConfig,
    create_session,
    onnx_dtype,
    onnx_shape,
    spins,
    warm_up,
)
from workbench.tensor import TensorSpec

if TYPE_CHECKING:
    import onnx

    from workbench.config import WorkbenchSettings

__all__ = ["MODEL_FILE", "LoadedModel", "ModelRepository", "Signature"]

MODEL_FILE = "model.onnx"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True, slots=True)
class Signature:
    """The tensors a model reads and writes, as ONNX Runtime reports them."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @classmethod
    def of(cls, session: ort.InferenceSession) -> Signature:
        return cls(
            tuple(TensorSpec(a.name, onnx_dtype(a.type), onnx_shape(a.shape)) for a in session.get_inputs()),
            tuple(TensorSpec(a.name, onnx_dtype(a.type), onnx_shape(a.shape)) for a in session.get_outputs()),
        )


@dataclass(slots=True)
class LoadedModel:
    """A warm session for one variant, and what it runs on."""

    model: str
    variant: str
    path: Path
    session: ort.InferenceSession
    provider: str
    metadata: ModelMetadata
    signature: Signature
    load_ms: float
    resource: str = "cpu"
    spinning: bool = False
    """Whether the session's pool threads spin-wait (see :func:`~workbench.models.session.spins`)."""


class ModelRepository:
    """A folder of models and variants, and the sessions loaded from it.

    Sessions are cached per (model, variant, resource): two stages of one
    pipeline that use the same model share one session.

    Parameters
    ----------
    root
        The repository folder (created if missing).
    session_config
        Threads, device preference and warm-up of the sessions it creates;
        by default from the ``WORKBENCH_*`` settings.

    Examples
    --------
    >>> repo = ModelRepository("models")                       # doctest: +SKIP
    >>> repo.variants("tabular")                                # doctest: +SKIP
    ['gbt', 'logreg']
    >>> repo.load("tabular", "gbt").provider                    # doctest: +SKIP
    'CPUExecutionProvider'
    """

    def __init__(self, root: str | Path, session_config: SessionConfig | None = None) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.session_config = session_config if session_config is not None else _settings().session_config()
        self._loaded: dict[tuple[str, str, str], LoadedModel] = {}
        self._lock = threading.Lock()

    @classmethod
    def of_home(cls) -> ModelRepository:
        """The repository of the workbench's home folder (``$WORKBENCH_HOME/models``)."""
        return cls(_settings().home / "models")

    def __repr__(self) -> str:
        return f"ModelRepository({str(self.root)!r})"

    # -- paths -------------------------------------------------------------------------
    def _inside(self, path: Path, what: str) -> Path:
        resolved = path.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise ModelPathRefused(f"{what} resolves to {resolved}, outside the repository root {self.root}")
        return resolved

    @staticmethod
    def _check_name(name: str, what: str) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ModelPathRefused(f"{what} name {name!r} is not a plain name (letters, digits, '_', '-', '.')")

    def variant_dir(self, model: str, variant: str) -> Path:
        self._check_name(model, "model")
        self._check_name(variant, "variant")
        return self._inside(self.root / model / variant, f"model {model!r} variant {variant!r}")

    def path(self, model: str, variant: str) -> Path:
        """The model file of a variant; raises :class:`ModelNotFound` when absent."""
        path = self._inside(self.variant_dir(model, variant) / MODEL_FILE, f"model {model!r} variant {variant!r}")
        if not path.is_file():
            if not (self.root / model).is_dir():
                raise ModelNotFound(f"no model {model!r} in repository {self.root}; models: {self.models()}")
            raise ModelNotFound(f"model {model!r} has no variant {variant!r}; variants: {self.variants(model)}")
        return path

    def asset(self, relative: str) -> Path:
        """A file inside the repository (e.g. a tokenizer) by its path relative to the root."""
        if Path(relative).is_absolute():
            raise ModelPathRefused(f"asset path {relative!r} must be relative to the repository root")
        path = self._inside(self.root / relative, f"asset {relative!r}")
        if not path.is_file():
            raise ModelNotFound(f"no asset {relative!r} in repository {self.root}")
        return path

    # -- listing -----------------------------------------------------------------------
    def models(self) -> list[str]:
        """Names of the models that have at least one variant."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name) and self._variants(p))

    def variants(self, model: str) -> list[str]:
        """Names of a model's variants."""
        self._check_name(model, "model")
        return self._variants(self.root / model)

    @staticmethod
    def _variants(model_dir: Path) -> list[str]:
        if not model_dir.is_dir():
            return []
        return sorted(p.name for p in model_dir.iterdir() if (p / MODEL_FILE).is_file() and _NAME.match(p.name))

    def metadata(self, model: str, variant: str) -> ModelMetadata:
        self.path(model, variant)
        return ModelMetadata.read(self.variant_dir(model, variant) / METADATA_FILE)

    # -- writing -----------------------------------------------------------------------
    def add(self, model: str, variant: str, source: Path | bytes, metadata: ModelMetadata) -> Path:
        """Store an ONNX model (a file or its bytes) as a variant, replacing any previous one."""
        directory = self.variant_dir(model, variant)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / MODEL_FILE
        partial = directory / (MODEL_FILE + ".partial")
        # NOTE: write beside, then rename: a reader never sees half a model.
        if isinstance(source, bytes):
            partial.write_bytes(source)
        else:
            shutil.copyfile(source, partial)
        partial.replace(target)
        metadata.write(directory / METADATA_FILE)
        return target

    # -- sessions ----------------------------------------------------------------------
    def load(self, model: str, variant: str, resource: str = "cpu") -> LoadedModel:
        """A warm session for the variant (created once, then shared)."""
        key = (model, variant, resource)
        loaded = self._loaded.get(key)
        if loaded is not None:
            return loaded
        with self._lock:
            loaded = self._loaded.get(key)
            if loaded is None:
                loaded = self._create(model, variant, resource)
                self._loaded[key] = loaded
        return loaded

    def _create(self, model: str, variant: str, resource: str) -> LoadedModel:
        path = self.path(model, variant)
        metadata = self.metadata(model, variant)
        start = time.perf_counter()
        config = self.session_config
        session, provider = create_session(path, config, resource)
        signature = Signature.of(session)
        warm_up_s = self._warm_up(session, model, variant)
        spinning = spins(config, warm_up_s)
        if config.spinning is None and not spinning:  # auto: created spinning, measured light
            session, provider = create_session(path, replace(config, spinning=False), resource)
            self._warm_up(session, model, variant)
        load_ms = (time.perf_counter() - start) * 1e3
        return LoadedModel(model, variant, path, session, provider, metadata, signature, load_ms, resource, spinning)

    def _warm_up(self, session: ort.InferenceSession, model: str, variant: str) -> float | None:
        try:
            return warm_up(session, self.session_config.warmup_runs)
        except Exception as exc:  # a model that cannot run on dummy inputs is not usable
            raise ModelLoadError(f"model {model!r} variant {variant!r} failed its warm-up run: {exc}") from exc

    def signature(self, model: str, variant: str) -> Signature:
        """The model's inputs and outputs, read from the file without creating a session."""
        loaded = next((m for (n, v, _), m in self._loaded.items() if (n, v) == (model, variant)), None)
        if loaded is not None:
            return loaded.signature
        return _file_signature(self.path(model, variant))

    def loaded(self) -> list[LoadedModel]:
        """The sessions this repository holds now."""
        return list(self._loaded.values())

    def unload(self, model: str, variant: str) -> None:
        """Drop the sessions of a variant (they are freed once no stage holds them)."""
        with self._lock:
            for key in [k for k in self._loaded if k[:2] == (model, variant)]:
                del self._loaded[key]


def _settings() -> WorkbenchSettings:
    from workbench.config import WorkbenchSettings  # NOTE: late import: config imports this package

    return WorkbenchSettings()


def _file_signature(path: Path) -> Signature:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for a damaged file
        raise ModelLoadError(f"cannot read model {path}: {exc}") from exc
    return proto_signature(proto, f"model {path}")


def proto_signature(proto: onnx.ModelProto, label: str) -> Signature:
    """The inputs and outputs of a model's graph; raises, with the fix, for one that is not a tensor."""
    initializers = {init.name for init in proto.graph.initializer}

    def specs(values: list[onnx.ValueInfoProto]) -> tuple[TensorSpec, ...]:
        out = []
        for value in values:
            if value.type.WhichOneof("value") != "tensor_type":
                raise ModelLoadError(f"{label}: {value.name!r} is a {value.type.WhichOneof('value')}, not a "
                                     f"tensor; {NOT_A_TENSOR_FIX}")
            tensor = value.type.tensor_type
            dtype = onnx_dtype(f"tensor({_ONNX_ELEM.get(tensor.elem_type, tensor.elem_type)})")
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
            out.append(TensorSpec(value.name, dtype, shape))
        return tuple(out)

    return Signature(
        specs([v for v in proto.graph.input if v.name not in initializers]), specs(list(proto.graph.output))
    )


_ONNX_ELEM = {
    1: "float", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string", 9: "bool",
    10: "float16", 11: "double", 12: "uint32", 13: "uint64",
}
