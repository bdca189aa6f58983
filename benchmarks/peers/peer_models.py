"""The workbench's demo models as a server written without it would run them: numpy and ONNX Runtime alone.

Every baseline server of the benchmarks runs this module (the naive FastAPI server of
``benchmarks/bench_http.py``, MLServer's runtime and Ray Serve's deployments of
``benchmarks/peers/bench_peers.py``), in whichever virtualenv it lives: it imports numpy,
onnxruntime and (for text) tokenizers, never the workbench. It runs the same model files as
the workbench's ``tabular`` and ``text`` pipelines, with the same pre- and post-processing
written out in numpy, on the same raw V2 inputs:

- tabular: impute missing values with the pipeline's medians, clip, standardise, the gbt
  model, then label, probability and risk bucket;
- text: tokenise (padding to the longest sentence, truncating at the pipeline's length), the
  MiniLM encoder (mean-pooled, normalised inside the model), the nearest-centroid head, then
  topic and confidence.

The parameters (file paths, medians, bounds, labels) come from a JSON file written by the
benchmark from the workbench's pipeline files (:func:`bench_http.baseline_spec`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnxruntime as ort

Outputs = dict[str, np.ndarray]


def _session(path: str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = options.inter_op_num_threads = threads
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class Tabular:
    """The tabular pipeline's steps: rows ``float32 [n, 30]`` (NaN allowed) in, four outputs per row."""

    def __init__(self, spec: dict[str, Any]) -> None:
        # NOTE: one thread: a model of microseconds per row gains nothing from a thread pool (the workers use one too).
        self.session = _session(spec["model"], 1)
        self.fill, self.lower, self.upper, self.mean, self.scale = (
            np.asarray(spec[key], dtype=np.float32) for key in ("impute", "lower", "upper", "mean", "scale"))
        self.labels = np.asarray(spec["labels"], dtype=object)
        self.edges = np.asarray(spec["edges"], dtype=np.float32)
        self.buckets = np.asarray(spec["buckets"], dtype=object)
        self.column = int(spec["bucket_column"])

    def predict(self, rows: np.ndarray) -> Outputs:
        x = np.asarray(rows, dtype=np.float32)
        x = np.where(np.isnan(x), self.fill, x)
        x = ((np.clip(x, self.lower, self.upper) - self.mean) / self.scale).astype(np.float32)
        probabilities = self.session.run(["probabilities"], {"X": x})[0]
        best = probabilities.argmax(axis=1)
        risk = self.buckets[np.searchsorted(self.edges, probabilities[:, self.column], side="right")]
        return {"label": self.labels[best], "probability": probabilities[np.arange(len(x)), best],
                "risk_bucket": risk, "probabilities": probabilities}


class Text:
    """The text pipeline's steps: sentences in, topic, confidence and the four probabilities out."""

    def __init__(self, spec: dict[str, Any]) -> None:
        from tokenizers import Tokenizer

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.tokenizer = Tokenizer.from_file(spec["tokenizer"])
        self.tokenizer.enable_padding(length=None)
        self.tokenizer.enable_truncation(int(spec["max_length"]))
        # NOTE: ONNX Runtime's default threads (every core): what a server that runs one model process gets.
        self.encoder = _session(spec["encoder"], 0)
        self.head = _session(spec["head"], 0)
        self.labels = np.asarray(spec["labels"], dtype=object)

    def predict(self, sentences: list[str]) -> Outputs:
        encodings = self.tokenizer.encode_batch(list(sentences))
        feeds = {name: np.array([getattr(e, attribute) for e in encodings], dtype=np.int64)
                 for name, attribute in (("input_ids", "ids"), ("attention_mask", "attention_mask"),
                                         ("token_type_ids", "type_ids"))}
        embedding = self.encoder.run(["sentence_embedding"], feeds)[0]
        probabilities = self.head.run(["probabilities"], {"embedding": embedding})[0]
        best = probabilities.argmax(axis=1)
        return {"topic": self.labels[best], "confidence": probabilities[np.arange(len(best)), best],
                "probabilities": probabilities}


def v2_outputs(outputs: Outputs) -> list[dict[str, Any]]:
    """V2 JSON outputs: BYTES for text, FP32 for floats, the array's shape."""
    encoded = []
    for name, array in outputs.items():
        datatype = "BYTES" if array.dtype.kind in "OU" else "FP32"
        data = array.reshape(-1).tolist()
        encoded.append({"name": name, "datatype": datatype, "shape": list(array.shape), "data": data})
    return encoded


def split(outputs: Outputs, sizes: list[int]) -> list[Outputs]:
    """One batch's outputs back into each request's rows."""
    bounds = np.cumsum(sizes)[:-1]
    parts = {name: np.split(array, bounds) for name, array in outputs.items()}
    return [{name: parts[name][i] for name in outputs} for i in range(len(sizes))]
