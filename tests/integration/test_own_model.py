"""A user's own models, served in one command: `workbench models add` and `workbench serve FOLDER`, over V2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
from own_models import WEIGHTS, iris, linear_model, zipmap_model
from processes import start_serving, stop_all


def test_models_add_stores_the_model_and_says_how_to_serve_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = subprocess.run([sys.executable, "-m", "workbench.cli", "models", "add", "flowers",
                             str(zipmap_model(tmp_path / "iris.onnx")), "--variant", "lr", "--home", str(home)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "flowers lr v1" in result.stdout and "output output_probability float32[-1,3]" in result.stdout
    assert "serve it: workbench serve flowers" in result.stdout
    assert (home / "models" / "flowers" / "lr" / "model.onnx").is_file()
    assert (home / "pipelines" / "flowers.yaml").is_file()


def test_serve_a_folder_of_models_from_their_signatures(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    original = zipmap_model(folder / "iris.onnx")
    linear_model(folder / "linear.onnx", batch=1)
    process, url = start_serving(tmp_path, str(folder), "--workers", "1", "--no-dashboard",
                                 env={"WORKBENCH_HOME": str(tmp_path / "home")})
    try:
        with httpx.Client(base_url=url, timeout=60) as http:
            iris_meta = http.get("/v2/models/iris").json()
            assert iris_meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]
            assert iris_meta["outputs"] == [{"name": "output_label", "datatype": "BYTES", "shape": [-1]},
                                            {"name": "output_probability", "datatype": "FP32", "shape": [-1, 3]}]
            features = iris()[0][::15]
            answer = http.post("/v2/models/iris/infer", json={"inputs": [
                {"name": "X", "datatype": "FP32", "shape": list(features.shape), "data": features.ravel().tolist()}]})
            assert answer.status_code == 200, answer.text
            outputs = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in answer.json()["outputs"]}
            labels, maps = ort.InferenceSession(str(original), providers=["CPUExecutionProvider"]).run(
                None, {"X": features})
            np.testing.assert_array_equal(outputs["output_label"], labels)
            np.testing.assert_allclose(outputs["output_probability"],
                                       [[m[c] for c in ("setosa", "versicolor", "virginica")] for m in maps],
                                       rtol=1e-6)
            # NOTE: the model's batch axis is fixed at 1; the pipeline still takes several rows.
            assert http.get("/v2/models/linear").json()["inputs"][0]["shape"] == [-1, 4]
            rows = np.arange(12, dtype=np.float32).reshape(3, 4)
            answer = http.post("/v2/models/linear/infer", json={"inputs": [
                {"name": "features", "datatype": "FP32", "shape": [3, 4], "data": rows.ravel().tolist()}]})
            assert answer.status_code == 200, answer.text
            np.testing.assert_allclose(np.asarray(answer.json()["outputs"][0]["data"]).reshape(3, 3), rows @ WEIGHTS,
                                       rtol=1e-6)
    finally:
        stop_all([process])
        if process.stdout is not None:
            process.stdout.close()
    assert process.returncode == 0, (tmp_path / "serve.log").read_text()[-2000:]
