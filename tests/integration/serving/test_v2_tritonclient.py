"""Open Inference Protocol (KServe V2) compatibility, with Triton's own HTTP client as the client.

``tritonclient.http`` is a V2 client that many deployments already use: health,
metadata, inference with JSON and binary tensors (the binary tensor data
extension) and the model repository extension, against the real server on
loopback with batches on a LocalCluster (the ``server`` fixture). Every result
is checked against the same pipeline run in this process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from servers import Served
from tritonclient.utils import InferenceServerException

from workbench.demo.corpus import topic_sentences
from workbench.demo.tabular import load_tabular_data
from workbench.pipeline import Pipeline

# NOTE: the demo's test rows all have missing values (NaN), which tritonclient writes as JSON ``NaN``.
ROWS = load_tabular_data().x_test[:12]
SENTENCES = topic_sentences("test")[0][:6]
TABULAR_OUTPUTS = ("label", "probability", "risk_bucket", "probabilities")
TEXT_OUTPUTS = ("topic", "confidence", "probabilities")
EMBEDDING_SIZE = 384


@pytest.fixture(scope="module")
def client(server: Served) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server.host_port, connection_timeout=60.0, network_timeout=120.0) as client:
        yield client


@pytest.fixture(scope="module")
def embed_pipeline(demo_home: Path) -> Pipeline:
    return Pipeline.from_yaml(demo_home / "pipelines" / "embed.yaml")


def features(rows: np.ndarray, *, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput("features", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    return tensor


def texts(sentences: list[str], *, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput("text", [len(sentences)], "BYTES")
    tensor.set_data_from_numpy(np.array(sentences, dtype=object), binary_data=binary)
    return tensor


def wanted(names: tuple[str, ...], *, binary: bool) -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput(name, binary_data=binary) for name in names]


def text_of(array: np.ndarray) -> list[str]:
    """BYTES outputs: ``str`` from JSON, ``bytes`` from binary tensors."""
    return [v.decode() if isinstance(v, bytes) else v for v in array.ravel()]


def output_entry(result: triton.InferResult, name: str) -> dict[str, Any]:
    entry: dict[str, Any] = result.get_output(name)
    assert entry is not None, f"no output {name!r} in {result.get_response()}"
    return entry


def assert_tabular(result: triton.InferResult, reference: dict[str, np.ndarray], *, binary: bool) -> None:
    for name in TABULAR_OUTPUTS:
        entry = output_entry(result, name)
        assert ("binary_data_size" in entry.get("parameters", {})) is binary, entry
    assert text_of(result.as_numpy("label")) == reference["label"].tolist()
    assert text_of(result.as_numpy("risk_bucket")) == reference["risk_bucket"].tolist()
    for name in ("probability", "probabilities"):
        ours = result.as_numpy(name)
        assert ours.dtype == np.float32 and ours.shape == reference[name].shape, name
        np.testing.assert_allclose(ours, reference[name], atol=1e-5, err_msg=name)


# -- server and models ------------------------------------------------------------------
def test_server_is_live_and_ready_and_describes_itself(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "inference-workbench" and metadata["version"]
    assert {"binary_tensor_data", "model_repository"} <= set(metadata["extensions"])


def test_model_metadata_gives_versions_inputs_and_outputs(client: triton.InferenceServerClient) -> None:
    tabular = client.get_model_metadata("tabular")
    assert tabular["name"] == "tabular"
    assert tabular["versions"] == ["gbt", "logreg"]
    assert tabular["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 30]}]
    assert tabular["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probability", "datatype": "FP32", "shape": [-1]},
        {"name": "risk_bucket", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
    ]
    text = client.get_model_metadata("text")
    assert text["versions"] == ["fp32", "int8"]
    assert text["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert [(o["name"], o["datatype"]) for o in text["outputs"]] == [
        ("topic", "BYTES"), ("confidence", "FP32"), ("probabilities", "FP32")]
    assert client.get_model_metadata("tabular", "gbt")["name"] == "tabular"


def test_models_are_ready_and_an_unknown_one_is_an_error(client: triton.InferenceServerClient) -> None:
    for name in ("tabular", "text", "embed"):
        assert client.is_model_ready(name), name
    assert client.is_model_ready("tabular", "gbt")
    assert not client.is_model_ready("no-such-model")
    with pytest.raises(InferenceServerException, match="no-such-model") as error:
        client.get_model_metadata("no-such-model")
    assert error.value.status() == "404"


# -- inference --------------------------------------------------------------------------
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tabular_inference_equals_the_inprocess_pipeline(
    client: triton.InferenceServerClient, tabular_pipeline: Pipeline, binary: bool
) -> None:
    result = client.infer("tabular", [features(ROWS, binary=binary)], outputs=wanted(TABULAR_OUTPUTS, binary=binary),
                          request_id=f"tabular-{binary}")
    response = result.get_response()
    assert response["id"] == f"tabular-{binary}"
    assert response["model_name"] == "tabular" and response["model_version"] == "gbt"
    assert [o["name"] for o in response["outputs"]] == list(TABULAR_OUTPUTS)
    assert [output_entry(result, n)["datatype"] for n in TABULAR_OUTPUTS] == ["BYTES", "FP32", "BYTES", "FP32"]
    assert_tabular(result, tabular_pipeline.predict({"features": ROWS}).outputs, binary=binary)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_text_inference_equals_the_inprocess_pipeline(
    client: triton.InferenceServerClient, text_pipeline: Pipeline, binary: bool
) -> None:
    result = client.infer("text", [texts(SENTENCES, binary=binary)], outputs=wanted(TEXT_OUTPUTS, binary=binary))
    reference = text_pipeline.predict({"text": SENTENCES}).outputs
    assert text_of(result.as_numpy("topic")) == reference["topic"].tolist()
    np.testing.assert_allclose(result.as_numpy("confidence"), reference["confidence"], atol=1e-5)
    np.testing.assert_allclose(result.as_numpy("probabilities"), reference["probabilities"], atol=1e-5)
    assert result.get_response()["id"], "the server names a request that came without an id"


def test_a_single_row_and_a_request_of_many_rows(
    client: triton.InferenceServerClient, tabular_pipeline: Pipeline
) -> None:
    many = load_tabular_data().x_test[:100]
    for rows in (many[:1], many):
        result = client.infer("tabular", [features(rows, binary=True)], outputs=wanted(TABULAR_OUTPUTS, binary=True))
        assert_tabular(result, tabular_pipeline.predict({"features": rows}).outputs, binary=True)


def test_no_outputs_named_returns_all_as_binary(client: triton.InferenceServerClient,
                                                tabular_pipeline: Pipeline) -> None:
    # NOTE: tritonclient then asks for every output as binary (``binary_data_output``).
    result = client.infer("tabular", [features(ROWS[:3], binary=False)])
    assert_tabular(result, tabular_pipeline.predict({"features": ROWS[:3]}).outputs, binary=True)


def test_a_subset_of_outputs_mixing_json_and_binary(client: triton.InferenceServerClient,
                                                    tabular_pipeline: Pipeline) -> None:
    outputs = [triton.InferRequestedOutput("probabilities", binary_data=True),
               triton.InferRequestedOutput("label", binary_data=False)]
    result = client.infer("tabular", [features(ROWS, binary=True)], outputs=outputs)
    reference = tabular_pipeline.predict({"features": ROWS}).outputs
    assert [o["name"] for o in result.get_response()["outputs"]] == ["probabilities", "label"]
    assert "binary_data_size" in output_entry(result, "probabilities")["parameters"]
    assert "data" in output_entry(result, "label")
    assert text_of(result.as_numpy("label")) == reference["label"].tolist()
    np.testing.assert_allclose(result.as_numpy("probabilities"), reference["probabilities"], atol=1e-5)
    assert result.as_numpy("risk_bucket") is None


def test_the_active_version_is_served_and_another_is_a_clean_error(client: triton.InferenceServerClient) -> None:
    result = client.infer("tabular", [features(ROWS[:2], binary=True)], model_version="gbt")
    assert result.get_response()["model_version"] == "gbt"
    with pytest.raises(InferenceServerException, match=r"serves version 'gbt', not 'logreg'") as error:
        client.infer("tabular", [features(ROWS[:2], binary=True)], model_version="logreg")
    assert error.value.status() == "404"
    assert not client.is_model_ready("tabular", "logreg")
    with pytest.raises(InferenceServerException, match="logreg"):
        client.get_model_metadata("tabular", "logreg")
    assert client.infer("tabular", [features(ROWS[:2], binary=True)]).as_numpy("label").shape == (2,)


# -- embeddings -------------------------------------------------------------------------
def test_embeddings_as_binary_equal_the_json_ones(client: triton.InferenceServerClient,
                                                 embed_pipeline: Pipeline) -> None:
    as_json = client.infer("embed", [texts(SENTENCES, binary=False)],
                           outputs=wanted(("embedding",), binary=False)).as_numpy("embedding")
    as_binary = client.infer("embed", [texts(SENTENCES, binary=True)],
                             outputs=wanted(("embedding",), binary=True)).as_numpy("embedding")
    assert as_binary.dtype == np.float32 and as_binary.shape == (len(SENTENCES), EMBEDDING_SIZE)
    # NOTE: orjson writes each float32 in the shortest form that reads back as the same float32.
    np.testing.assert_array_equal(as_json, as_binary)
    np.testing.assert_allclose(as_binary, embed_pipeline.predict({"text": SENTENCES})["embedding"], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(as_binary, axis=1), 1.0, atol=1e-4)


# -- repository extension ---------------------------------------------------------------
def _index(client: triton.InferenceServerClient) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in client.get_model_repository_index()}


def test_repository_index_unload_and_load(client: triton.InferenceServerClient, embed_pipeline: Pipeline) -> None:
    index = _index(client)
    assert {name: index[name]["state"] for name in ("tabular", "text", "embed")} == dict.fromkeys(
        ("tabular", "text", "embed"), "READY")
    assert index["tabular"]["version"] == "gbt"

    client.unload_model("embed")
    try:
        assert _index(client)["embed"] == {"name": "embed", "state": "UNAVAILABLE", "reason": "not loaded"}
        assert not client.is_model_ready("embed")
        with pytest.raises(InferenceServerException, match="'embed'") as error:
            client.infer("embed", [texts(SENTENCES[:1], binary=True)])
        assert error.value.status() == "404"
    finally:
        client.load_model("embed")
    assert client.is_model_ready("embed")
    assert _index(client)["embed"]["state"] == "READY"
    embedding = client.infer("embed", [texts(SENTENCES[:2], binary=True)]).as_numpy("embedding")
    np.testing.assert_allclose(embedding, embed_pipeline.predict({"text": SENTENCES[:2]})["embedding"], atol=1e-5)


def test_loading_an_unknown_model_is_an_error(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="no pipeline file or demo named 'no-such-model'") as error:
        client.load_model("no-such-model")
    assert error.value.status() == "404"
    with pytest.raises(InferenceServerException, match="no-such-model"):
        client.unload_model("no-such-model")
    assert "no-such-model" not in _index(client)
