"""The text demo: ONNX embeddings match sentence-transformers; variants differ for real."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.demo.corpus import TOPICS, topic_sentences
from workbench.demo.text import sentence_transformer_path
from workbench.models import ModelRepository
from workbench.pipeline import Pipeline

SENTENCES = [
    "The goalkeeper saved a penalty in the last minute.",
    "Inflation data pushed bond yields higher.",
    "A short one.",
    "The compiler team shipped a release that makes builds twice as fast on large repositories.",
]


@pytest.fixture(scope="module")
def reference_embeddings() -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(sentence_transformer_path()), device="cpu")
    return np.asarray(model.encode(SENTENCES, normalize_embeddings=True))


def test_fp32_embeddings_match_sentence_transformers(text_pipeline: Pipeline, reference_embeddings: np.ndarray) -> None:
    ours = text_pipeline.predict({"text": SENTENCES}, outputs=["sentence_embedding"])["sentence_embedding"]
    cosine = (ours * reference_embeddings).sum(1)
    print(f"\nfp32 cosine to sentence-transformers: min {cosine.min():.6f}")
    assert cosine.min() >= 0.999


def test_int8_is_close_but_not_identical(text_pipeline: Pipeline, reference_embeddings: np.ndarray) -> None:
    int8 = text_pipeline.with_variant("int8", "encoder")
    ours = int8.predict({"text": SENTENCES}, outputs=["sentence_embedding"])["sentence_embedding"]
    cosine = (ours * reference_embeddings).sum(1)
    print(f"\nint8 cosine to sentence-transformers: min {cosine.min():.4f}")
    assert 0.85 < cosine.min() < 0.999


def test_padding_is_to_the_longest_item_of_the_batch(text_pipeline: Pipeline) -> None:
    ids = text_pipeline.predict({"text": SENTENCES[:3]}, outputs=["input_ids", "attention_mask"])
    longest = int(ids["attention_mask"].sum(1).max())
    assert ids["input_ids"].shape == (3, longest)
    assert ids["attention_mask"][2].sum() < longest
    alone = text_pipeline.predict({"text": SENTENCES[2:3]}, outputs=["input_ids"])["input_ids"]
    assert alone.shape[1] == int(ids["attention_mask"][2].sum())


def test_batch_results_equal_single_results(text_pipeline: Pipeline) -> None:
    batch = text_pipeline.predict({"text": SENTENCES})["probabilities"]
    singles = np.concatenate([text_pipeline.predict({"text": [s]})["probabilities"] for s in SENTENCES])
    np.testing.assert_allclose(batch, singles, atol=1e-5)


def test_topic_accuracy_on_held_out_sentences(
    text_pipeline: Pipeline, repository: ModelRepository, record_property: pytest.RecordProperty
) -> None:
    sentences, labels = topic_sentences("test")
    result = text_pipeline.predict({"text": sentences})
    accuracy = float((result["topic"] == np.array(TOPICS, dtype=object)[labels]).mean())
    record_property("text_fp32_accuracy", accuracy)
    assert accuracy > 0.9
    assert accuracy == pytest.approx(repository.metadata("minilm", "fp32").quality["accuracy"], abs=1e-3)
    assert set(result["topic"][:4]) <= set(TOPICS)
    np.testing.assert_allclose(result["confidence"], result["probabilities"].max(1))


def test_pipeline_chains_two_models(text_pipeline: Pipeline) -> None:
    models = [(s.model, s.variant) for s in text_pipeline.inference_stages]
    assert models == [("minilm", "fp32"), ("topic-head", "centroid")]
    assert text_pipeline.stage("encoder").resource == "gpu"
