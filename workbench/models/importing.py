"""Bringing a model made elsewhere into the repository, ready to serve.

A model file from outside (skl2onnx, ``torch.onnx.export``) is checked for what
serving needs before it is stored: every input and output is a tensor, and the
first axis is the batch. What can be fixed for the user is fixed on the way
in: skl2onnx's default ``ZipMap`` (a list of ``{class: probability}`` maps,
which ONNX Runtime hands back as Python dicts, one per row) becomes the
probability tensor it was made from, as ``options={"zipmap": False}`` would have
made it, and its class labels go into the metadata. What cannot be fixed is
refused with the fix in the message.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import onnx

from workbench.errors import ModelLoadError
from workbench.models.metadata import ModelMetadata
from workbench.models.repository import ModelRepository, proto_signature

__all__ = ["DEFAULT_VARIANT", "add_model", "check_servable", "without_zipmap"]

#: The variant a model gets when none is named.
DEFAULT_VARIANT = "default"


def without_zipmap(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str] | None]:
    """The model with each ZipMap output replaced by the probability tensor it maps, and the class labels.

    The output keeps its name (``output_probability``), now a float tensor ``[batch, classes]``. The labels
    are the ZipMap's classes as text (``None`` when there is no ZipMap).
    """
    graph = model.graph
    zipmaps = [node for node in graph.node if node.op_type == "ZipMap"]
    if not zipmaps:
        return model, None
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    graph = fixed.graph
    labels: list[str] | None = None
    for node in [n for n in graph.node if n.op_type == "ZipMap"]:
        source, target = node.input[0], node.output[0]
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        classes = attributes.get("classlabels_strings") or attributes.get("classlabels_int64s") or []
        labels = [c.decode() if isinstance(c, bytes) else str(c) for c in classes]
        graph.node.remove(node)
        # NOTE: the tensor the ZipMap read takes the ZipMap's output name, so the model's outputs keep theirs.
        for other in graph.node:
            other.input[:] = [target if name == source else name for name in other.input]
            other.output[:] = [target if name == source else name for name in other.output]
        for index, output in enumerate(graph.output):
            if output.name == target:
                graph.output.remove(output)
                value = onnx.helper.make_tensor_value_info(target, onnx.TensorProto.FLOAT, [None, len(classes)])
                value.type.tensor_type.shape.dim[0].dim_param = "batch"
                graph.output.insert(index, value)
                break
    return fixed, labels


def check_servable(model: onnx.ModelProto, name: str) -> None:
    """Raise :class:`~workbench.errors.ModelLoadError`, with the fix, when the model cannot be served as it is."""
    for spec in proto_signature(model, f"model {name!r}").inputs:
        if spec.shape and spec.shape[0] not in (-1, 1):
            raise ModelLoadError(
                f"model {name!r}: input {spec.name!r} has a fixed first axis of {spec.shape[0]}; the "
                "first axis is the batch: export it as a dynamic axis (torch.onnx.export(..., "
                f"dynamic_axes={{{spec.name!r}: {{0: 'batch'}}}}), skl2onnx: a sample with None rows)")


def add_model(repository: ModelRepository, name: str, source: str | Path | bytes | onnx.ModelProto, *,
              variant: str = DEFAULT_VARIANT, quality: Mapping[str, float] | None = None,
              labels: list[str] | None = None, notes: str = "") -> Path:
    """Store a model as ``name``/``variant`` (replacing a different one, its version one higher), ready to serve.

    ZipMap outputs are made tensors (see :func:`without_zipmap`); a model that cannot be served is refused
    before anything is written. Returns the stored file.
    """
    model = _read(source, name)
    model, zipmap_labels = without_zipmap(model)
    check_servable(model, name)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelLoadError(f"model {name!r} is not a valid ONNX model: {exc}") from exc
    data = model.SerializeToString()
    version = 1
    if variant in repository.variants(name):
        stored = repository.path(name, variant)
        if stored.read_bytes() == data:  # the same model again (a second `workbench serve model.onnx`)
            return stored
        version = repository.metadata(name, variant).version + 1
    metadata = ModelMetadata(version=version, quality=dict(quality or {}), labels=labels or zipmap_labels,
                             notes=notes or ("ZipMap output made a probability tensor" if zipmap_labels else ""))
    path = repository.add(name, variant, data, metadata)
    repository.unload(name, variant)
    return path


def _read(source: str | Path | bytes | onnx.ModelProto, name: str) -> onnx.ModelProto:
    if isinstance(source, onnx.ModelProto):
        return source
    try:
        if isinstance(source, bytes):
            return onnx.load_from_string(source)
        return onnx.load(str(source))
    except Exception as exc:  # onnx raises DecodeError, OSError and others for a damaged or missing file
        raise ModelLoadError(f"cannot read model {name!r} from {source if not isinstance(source, bytes) else 'bytes'}:"
                             f" {exc}") from exc
