"""An inference stage run in buckets of similar length (``ragged_by``) answers as the whole padded batch does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from workbench.demo.corpus import topic_sentences
from workbench.demo.text import TOKENIZER_ASSET
from workbench.errors import PipelineWiringError
from workbench.models import ModelRepository
from workbench.models.metadata import ModelMetadata
from workbench.pipeline import OnnxStage, Pipeline, Tokenize
from workbench.tensor import TensorSpec


def _encoder(repository: ModelRepository, **options: object) -> Pipeline:
    return Pipeline("enc", [TensorSpec("text", "str", (-1,))],
                    [Tokenize("text", tokenizer=TOKENIZER_ASSET, name="tokenize"),
                     OnnxStage("minilm", "fp32", name="encoder", **options)], repository=repository)


def _mixed_lengths() -> list[str]:
    sentences = list(topic_sentences("test")[0][:40])
    # NOTE: a few long ones, so that the buckets really differ in length
    return [*sentences[:17], " ".join(sentences[17:23]), *sentences[23:33], " ".join(sentences[33:40])]


@pytest.mark.parametrize("bucket_rows", [1, 5, 16])
def test_buckets_give_the_whole_batch_answer_in_the_rows_order(repository: ModelRepository, bucket_rows: int) -> None:
    texts = np.array(_mixed_lengths(), dtype=object)
    whole = _encoder(repository).predict({"text": texts})["sentence_embedding"]
    bucketed = _encoder(repository, ragged_by="attention_mask", bucket_rows=bucket_rows).predict({"text": texts})
    np.testing.assert_allclose(bucketed["sentence_embedding"], whole, atol=2e-5)


def test_left_padding_stays_correct(repository: ModelRepository) -> None:
    stage = OnnxStage("minilm", "fp32", ragged_by="attention_mask", bucket_rows=2)
    stage.bind(repository)
    plain = OnnxStage("minilm", "fp32")
    plain.bind(repository)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 2000, size=(5, 9))
    mask = np.ones((5, 9), dtype=np.int64)
    mask[:, :3][[0, 2, 3]] = 0  # NOTE: three rows padded on the left
    ids[mask == 0] = 0
    arrays = [ids, mask, np.zeros_like(ids)]
    np.testing.assert_allclose(stage.run(*arrays)[0], plain.run(*arrays)[0], atol=2e-5)


def test_a_model_with_per_token_outputs_is_a_clear_error(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Cast", ["mask"], ["per_token"], to=TensorProto.FLOAT)], "per-token",
        [helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("per_token", TensorProto.FLOAT, ["batch", "sequence"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    source = tmp_path / "model.onnx"
    source.write_bytes(model.SerializeToString())
    repository = ModelRepository(tmp_path / "repo")
    repository.add("tokens", "v1", source, ModelMetadata())
    pipeline = Pipeline("p", [TensorSpec("mask", "int64", (-1, -1))],
                        [OnnxStage("tokens", "v1", ragged_by="mask", bucket_rows=2)], repository=repository)
    mask = np.ones((4, 6), dtype=np.int64)
    mask[:2, 3:] = 0  # NOTE: two short rows, two long ones: buckets of different lengths
    with pytest.raises(PipelineWiringError, match="output 'per_token' is \\[3\\] in one bucket and \\[6\\]"):
        pipeline.predict({"mask": mask})
    with pytest.raises(PipelineWiringError, match="ragged_by 'nope' must name a model input"):
        Pipeline("p", [TensorSpec("mask", "int64", (-1, -1))],
                 [OnnxStage("tokens", "v1", ragged_by="nope")], repository=repository)


def test_the_yaml_round_trip_keeps_the_buckets(repository: ModelRepository, tmp_path: Path) -> None:
    pipeline = _encoder(repository, ragged_by="attention_mask", bucket_rows=8)
    pipeline.to_yaml(tmp_path / "enc.yaml")
    again = Pipeline.from_yaml(tmp_path / "enc.yaml", repository=repository)
    stage = again.stage("encoder")
    assert isinstance(stage, OnnxStage) and (stage.ragged_by, stage.bucket_rows) == ("attention_mask", 8)
    with pytest.raises(ValueError, match="bucket_rows must be an integer >= 1"):
        OnnxStage("minilm", "fp32", ragged_by="attention_mask", bucket_rows=0)
