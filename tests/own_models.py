"""Models made outside the workbench, as a user brings them: skl2onnx's defaults and ``onnx.helper`` graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

#: The weights of :func:`linear_model`: four features in, three scores out.
WEIGHTS = np.arange(12, dtype=np.float32).reshape(4, 3) / 10


def iris() -> tuple[np.ndarray, np.ndarray]:
    """Iris features (float32) and their species names."""
    data = load_iris()
    return data.data.astype(np.float32), np.asarray(data.target_names)[data.target]


def iris_classifier() -> Pipeline:
    features, species = iris()
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(features, species)


def zipmap_model(path: Path) -> Path:
    """The iris classifier converted with skl2onnx's defaults: its probabilities come out through a ZipMap."""
    from skl2onnx import to_onnx

    path.write_bytes(to_onnx(iris_classifier(), iris()[0][:1]).SerializeToString())
    return path


def linear_model(path: Path, batch: int | None = None) -> Path:
    """``scores = features @ WEIGHTS``, whose first axis is dynamic, or fixed at ``batch``."""
    first: int | str = batch if batch is not None else "batch"
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "weights"], ["scores"])], "linear",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [first, 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [first, 3])],
        [numpy_helper.from_array(WEIGHTS, "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
