"""The ``search`` demo: rank a list of candidate passages for a query with MiniLM embeddings.

A request holds queries (``query: str[-1]``) and, per query, a list of
candidate passages (``candidates: str[-1,-1]``; BYTES tensors over V2). The
answer is, per query, the indices of its best ``top_k`` passages
(``ranking: int64[-1,k]``, ``-1`` past a shorter list) and their scores
(``scores: float32[-1,k]``). Lists of different lengths share batches: the
batcher pads them with ``""`` and every stage treats that as no candidate.

The pipeline::

    embed_query       cached(tokenize, encoder)   query      -> query_embedding      [rows, 384]
    embed_candidates  cached(tokenize, encoder)   candidates -> candidate_embeddings [rows, items, 384]
    rank              rank(strategy)              both (+ candidates as the mask) -> ranking, scores

It reuses the text demo's MiniLM encoder from the model repository (no second
export). The candidates' embeddings go through the process-wide feature cache
``minilm-fp32``, keyed by the passage text: the catalogue's passages are
encoded once and then served from the cache, by every deployment of the
pipeline in the process (one per strategy, say).

The strategy is a setting of the ``rank`` stage (``pointwise``, ``pairwise``,
``listwise``; see :mod:`workbench.ranking`). The build writes ``search.yaml``
(point-wise); change ``strategy:`` in it, or build another with
:func:`search_pipeline` (``search_pipeline(repository, strategy="listwise", diversity=0.3)``).
The catalogue the demo ranks is written next to it, as ``search-catalogue.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.demo.catalogue import write_catalogue
from workbench.demo.text import ENCODER, TOKENIZER_ASSET, encoder_stage
from workbench.models.repository import ModelRepository
from workbench.pipeline import CachedFeatures, Pipeline, Tokenize
from workbench.ranking import Rank
from workbench.tensor import TensorSpec

__all__ = ["CACHE", "CATALOGUE_FILE", "build_search", "search_pipeline"]

#: The feature cache the encoder's embeddings go through (shared by every pipeline of the process naming it).
CACHE = "minilm-fp32"
#: The catalogue's file name, next to ``search.yaml``.
CATALOGUE_FILE = "search-catalogue.json"
#: Longest passage in tokens (the catalogue's are far shorter; padding is to the longest of a batch anyway).
MAX_LENGTH = 128


def _embed(tensor: str, output: str, name: str, *, item_dims: int, ttl_s: float) -> CachedFeatures:
    return CachedFeatures(
        [Tokenize(tensor, tokenizer=TOKENIZER_ASSET, max_length=MAX_LENGTH, name="tokenize"),
         encoder_stage(outputs={"sentence_embedding": output})],
        key=tensor, cache=CACHE, ttl_s=ttl_s, max_entries=10_000, item_dims=item_dims, name=name,
    )


def search_pipeline(repository: ModelRepository | str | Path, *, strategy: str = "pointwise", top_k: int = 5,
                    name: str = "search", ttl_s: float = 3600.0, load: bool = True, **options: Any) -> Pipeline:
    """The search pipeline with ranking ``strategy`` (``options``: the strategy's settings).

    Examples
    --------
    >>> pipeline = search_pipeline("models", strategy="listwise", diversity=0.3)      # doctest: +SKIP
    >>> pipeline.predict({"query": ["why do volcanoes erupt"],                       # doctest: +SKIP
    ...                   "candidates": [["Bread needs yeast.", "Magma rises and erupts."]]})["ranking"]
    """
    return Pipeline(
        name,
        [TensorSpec("query", "str", (-1,)), TensorSpec("candidates", "str", (-1, -1))],
        [
            _embed("query", "query_embedding", "embed_query", item_dims=1, ttl_s=ttl_s),
            _embed("candidates", "candidate_embeddings", "embed_candidates", item_dims=2, ttl_s=ttl_s),
            Rank(["query_embedding", "candidate_embeddings", "candidates"], ["ranking", "scores"],
                 strategy=strategy, top_k=top_k, name="rank", **options),
        ],
        outputs=["ranking", "scores"],
        repository=repository,
        load=load,
        description=f"Rank candidate passages for a query: MiniLM embeddings (cached), {strategy} ranking.",
    )


def build_search(repository: ModelRepository, pipelines_dir: Path) -> Path:
    """Write ``search.yaml`` and the catalogue next to it; builds the text demo first if its encoder is missing."""
    if ENCODER not in repository.models() or "fp32" not in repository.variants(ENCODER):
        from workbench.demo.text import build_text

        build_text(repository, pipelines_dir)
    write_catalogue(pipelines_dir / CATALOGUE_FILE)
    path = pipelines_dir / "search.yaml"
    search_pipeline(repository, load=False).to_yaml(path)
    return path
