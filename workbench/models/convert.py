"""From a notebook's model to a repository variant: sklearn (skl2onnx) and torch (``torch.onnx.export``).

Both converters export with a dynamic batch axis, check the ONNX model against
the original on the sample (a conversion that changes the answers is refused,
not served), and record quality when the sample's labels are given. skl2onnx and
torch are imported only when called: neither is needed to serve.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from workbench.errors import ModelLoadError
from workbench.models.importing import DEFAULT_VARIANT, add_model, without_zipmap
from workbench.models.repository import ModelRepository

__all__ = ["from_sklearn", "from_torch"]

#: How far the ONNX model's scores may be from the original's on the sample.
RTOL, ATOL = 1e-3, 1e-4


def from_sklearn(estimator: Any, sample: Any, *, name: str, variant: str = DEFAULT_VARIANT, y: Any = None,
                 repository: ModelRepository | str | Path | None = None, notes: str = "") -> Path:
    """Convert a fitted sklearn estimator (or pipeline) with skl2onnx and add it as ``name``/``variant``.

    ``sample`` (an array or a DataFrame of numbers) fixes the input's type and width; its rows check the
    conversion: the classes or values the ONNX model gives must be the estimator's. With ``y``, the
    model's accuracy (classifier) or R² (regressor) on the sample goes into its metadata.
    Returns the stored file.
    """
    from skl2onnx import to_onnx
    from sklearn.base import is_classifier

    features = np.ascontiguousarray(np.asarray(sample, dtype=np.float32))
    if features.ndim != 2 or not len(features):
        raise ValueError(f"sample must be a non-empty 2-d table of numbers, not of shape {list(features.shape)}")
    model, _ = without_zipmap(to_onnx(estimator, features[:1]))
    outputs = _run(model.SerializeToString(), {model.graph.input[0].name: features})
    predicted = np.asarray(outputs[0]).reshape(len(features), -1)
    expected = np.asarray(estimator.predict(np.asarray(sample))).reshape(len(features), -1)
    classifier = is_classifier(estimator)
    if classifier:
        agree = float(np.mean(predicted.astype(str) == expected.astype(str)))
        if agree < 0.99:
            raise ModelLoadError(f"model {name!r}: the ONNX model agrees with the estimator on {agree:.1%} of "
                                 "the sample's rows; it is not added")
    elif not np.allclose(predicted, expected, rtol=RTOL, atol=ATOL * max(1.0, float(np.abs(expected).max()))):
        raise ModelLoadError(f"model {name!r}: the ONNX model's values differ from the estimator's on the sample")
    quality: dict[str, float] = {}
    if y is not None:
        truth = np.asarray(y).reshape(len(features), -1)
        if classifier:
            quality["accuracy"] = float(np.mean(predicted.astype(str) == truth.astype(str)))
        else:
            residual = float(np.sum((truth - predicted) ** 2))
            quality["r2"] = 1.0 - residual / max(float(np.sum((truth - truth.mean(axis=0)) ** 2)), 1e-12)
    labels = [str(c) for c in estimator.classes_] if classifier and hasattr(estimator, "classes_") else None
    return add_model(_repository(repository), name, model, variant=variant, quality=quality, labels=labels,
                     notes=notes or f"skl2onnx from {type(estimator).__name__}")


def from_torch(module: Any, sample: Any, *, name: str, variant: str = DEFAULT_VARIANT, y: Any = None,
               input_names: Sequence[str] | None = None, output_names: Sequence[str] | None = None,
               repository: ModelRepository | str | Path | None = None, notes: str = "") -> Path:
    """Export a torch module with a dynamic batch axis on every input and output, and add it.

    ``sample`` is a tensor (or a tuple of them) with a few rows; the ONNX model's outputs on it must match
    the module's. With ``y`` (class indices), the accuracy of the first output's arg-max goes into the
    metadata. Returns the stored file.
    """
    import torch

    samples = tuple(sample) if isinstance(sample, (tuple, list)) else (sample,)
    inputs = list(input_names or (["input"] if len(samples) == 1 else [f"input_{i}" for i in range(len(samples))]))
    module = module.eval()
    with torch.no_grad():
        result = module(*samples)
    results = tuple(result) if isinstance(result, (tuple, list)) else (result,)
    outputs = list(output_names or (["output"] if len(results) == 1 else [f"output_{i}" for i in range(len(results))]))
    if len(inputs) != len(samples) or len(outputs) != len(results):
        raise ValueError(f"{len(samples)} inputs and {len(results)} outputs, but names {inputs} and {outputs}")
    buffer = io.BytesIO()
    # NOTE: the TorchScript exporter (dynamo=False): the dynamo one needs onnxscript, which serving does not;
    # torch's warning that it is the legacy one says nothing to the user.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export",
                                DeprecationWarning)
        torch.onnx.export(module, samples, buffer, dynamo=False,  # type: ignore[arg-type]  # a file object works
                          input_names=inputs, output_names=outputs,
                          dynamic_axes={n: {0: "batch"} for n in inputs + outputs})
    data = buffer.getvalue()
    exported = _run(data, {n: s.detach().cpu().numpy() for n, s in zip(inputs, samples)})
    for output, mine, theirs in zip(outputs, exported, results):
        if not np.allclose(mine, theirs.detach().cpu().numpy(), rtol=RTOL, atol=ATOL):
            raise ModelLoadError(f"model {name!r}: output {output!r} of the ONNX model differs from the module's")
    quality = {}
    if y is not None:
        quality["accuracy"] = float(np.mean(np.argmax(exported[0], axis=1) == np.asarray(y).ravel()))
    return add_model(_repository(repository), name, data, variant=variant, quality=quality,
                     notes=notes or f"torch.onnx.export of {type(module).__name__}")


def _run(model: bytes, feed: Mapping[str, np.ndarray]) -> list[Any]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    results: list[Any] = session.run(None, dict(feed))
    return results


def _repository(repository: ModelRepository | str | Path | None) -> ModelRepository:
    if isinstance(repository, ModelRepository):
        return repository
    return ModelRepository(repository) if repository is not None else ModelRepository.of_home()
