"""Requests that fit a pipeline's inputs, for the traffic lab and the demo.

The demo pipelines get real data (held-out breast-cancer rows with missing
values, sentences of the demo corpus, the search catalogue's queries and
passages); any other pipeline gets values made up
from its input specs: numbers from a standard normal, strings from the demo
corpus. Made-up requests exercise batching and latency; they say nothing of
the model's quality.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from workbench.pipeline.graph import Pipeline
from workbench.tensor import TensorSpec

__all__ = ["probe_batch", "request_maker"]

Request = dict[str, np.ndarray]


def probe_batch(pipeline: Pipeline, rows: int) -> Request | None:
    """A validated batch of ``rows`` made-up rows to time ``pipeline`` with; ``None`` when none may be made.

    NOTE: made-up rows never reach user code (a ``python`` stage may write somewhere, or refuse them) nor a
    feature cache (a made-up entity would be served to the real one later). Then, and for inputs the maker
    cannot make, the pipeline's first real batches are its first measure.
    """
    from workbench.pipeline.cached import CachedFeatures
    from workbench.pipeline.custom import has_python_stage

    if has_python_stage(pipeline.stages) or any(isinstance(s, CachedFeatures) for s in pipeline.stages):
        return None
    try:
        return pipeline.validate(request_maker(pipeline)(rows))
    except Exception:  # NOTE: inputs the traffic maker cannot make
        return None


def request_maker(pipeline: Pipeline, *, seed: int = 0) -> Callable[[int], Request]:
    """A function that returns a request of ``rows`` rows for ``pipeline`` on each call.

    Examples
    --------
    >>> make = request_maker(pipeline)         # doctest: +SKIP
    >>> make(4)["features"].shape              # doctest: +SKIP
    (4, 30)
    """
    rng = np.random.default_rng(seed)
    if pipeline.name == "search" and set(pipeline.input_specs) == {"query", "candidates"}:
        return _search_maker(rng)
    makers = {name: _tensor_maker(pipeline.name, spec, rng) for name, spec in pipeline.input_specs.items()}
    return lambda rows: {name: make(rows) for name, make in makers.items()}


def _search_maker(rng: np.random.Generator, candidates: int = 8) -> Callable[[int], Request]:
    """The search demo's queries, each with candidates drawn from the catalogue, its relevant passage among them.

    NOTE: as a retrieval stage in front of a ranker would give them: ranking candidates none of which
    answers the query says little of the ranker.
    """
    from workbench.demo.catalogue import PASSAGES, QUERIES

    passages = np.array([text for _, text in PASSAGES], dtype=object)

    def make(rows: int) -> Request:
        picked = rng.integers(0, len(QUERIES), rows)
        lists = np.empty((rows, candidates), dtype=object)
        for row, q in enumerate(picked):
            relevant = QUERIES[q][1]
            others = rng.choice(np.delete(np.arange(len(passages)), relevant), candidates - 1, replace=False)
            lists[row] = passages[rng.permutation(np.append(others, relevant))]
        return {"query": np.array([QUERIES[q][0] for q in picked], dtype=object), "candidates": lists}

    return make


def _tensor_maker(pipeline: str, spec: TensorSpec, rng: np.random.Generator) -> Callable[[int], np.ndarray]:
    if spec.dtype == "str":
        from workbench.demo.corpus import topic_sentences

        sentences = np.array(topic_sentences("test")[0], dtype=object)
        # NOTE: a list of texts per row (candidates to rank, say) gets 8 of them where its length is open.
        inner_text = tuple(8 if d < 0 else d for d in (spec.shape or (-1,))[1:])
        return lambda rows: sentences[rng.integers(0, len(sentences), (rows, *inner_text))]
    pool = _demo_rows(spec) if pipeline == "tabular" else None
    if pool is not None:
        return lambda rows: pool[rng.integers(0, len(pool), rows)]
    inner = tuple(1 if d < 0 else d for d in (spec.shape or (-1,))[1:])
    dtype = spec.numpy_dtype
    if np.issubdtype(dtype, np.floating):
        return lambda rows: rng.standard_normal((rows, *inner)).astype(dtype)
    if dtype == np.bool_:
        return lambda rows: rng.integers(0, 2, (rows, *inner)).astype(dtype)
    return lambda rows: rng.integers(0, 10, (rows, *inner)).astype(dtype)


def _demo_rows(spec: TensorSpec) -> np.ndarray | None:
    """The tabular demo's held-out rows when they fit ``spec`` (scikit-learn ships the data set)."""
    try:
        from workbench.demo.tabular import load_tabular_data

        rows = load_tabular_data().x_test
    except ImportError:
        return None
    fits = spec.shape is None or (len(spec.shape) == 2 and spec.shape[1] in (-1, rows.shape[1]))
    return rows.astype(spec.numpy_dtype) if fits and spec.dtype.startswith("float") else None
