"""The cached features stage: other stages' computation, keyed, reused across requests and models.

:class:`CachedFeatures` wraps a short chain of stages (a tokenizer and an
encoder, a lookup, any features stage) and keys each item of the batch by a
named input tensor: an entity id, the text itself, or a digest of a row. Items
found in the process's :func:`~workbench.pipeline.featurecache.feature_caches`
entry of that name are not computed again; the others are computed in one
sub-batch (each distinct key once) and stored for ``ttl_s`` seconds.

Entries are namespaced by what computes them (the wrapped stages' file form,
tensor names included), so pipelines that share a cache name share entries only
when they compute the same thing: another encoder variant never serves the
first variant's features. (The wrapped stages are not swapped by
``Engine.swap``, which changes top-level inference stages only.)

Items: with ``item_dims=1`` each row is an item. With ``item_dims=2`` each
row holds a list of items (e.g. ``candidates: str[-1,-1]``, a list of passages
per request): the wrapped stages see them flattened, and the outputs come back
shaped ``[rows, items, ...]``. Text items that are empty (what the batcher pads
a shorter list with) are padding: never computed, never counted, zeros out.

Each batch counts ``hits`` (items served from the cache), ``misses`` (items
not served from it: an item repeated in the batch counts each time) and
``computed`` (distinct keys computed); the counts travel back with the batch
(also from Dask workers) and the engine reports them, with the hit rate, in
``stats(name)["feature_cache"]`` and as Prometheus metrics.

In a pipeline file::

    - name: embed
      type: cached
      key: text               # the tensor whose items key the cache
      cache: minilm-fp32      # shared by every pipeline of the process that names it
      ttl_s: 3600
      max_entries: 10000
      stages:
        - {name: tokenize, type: tokenize, inputs: [text], tokenizer: minilm/tokenizer.json}
        - {name: encoder, type: onnx, model: minilm, variant: fp32}
      outputs: [sentence_embedding]
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import SpecError
from workbench.pipeline.featurecache import Entry, FeatureCache, feature_caches
from workbench.pipeline.stage import Stage, StageKind
from workbench.tensor import TensorSpec

if TYPE_CHECKING:
    from workbench.models.repository import ModelRepository

__all__ = ["KEY_MODES", "CachedFeatures", "cache_report"]

#: How an item becomes a key: its value (a text, an id; a row is digested), or always a digest.
KEY_MODES = ("value", "digest")


class CachedFeatures(Stage):
    """Compute features once per key and serve them from a process-wide cache within a TTL.

    Parameters
    ----------
    stages
        The stages whose outputs are cached (objects, or their pipeline-file form), in running order.
    key
        The input tensor whose items key the cache (an entity id, a text, a row of features).
    outputs
        The wrapped stages' tensors to cache and return; default: the last stage's outputs.
    cache
        The cache's name: stages of any pipeline of the process that name it share its entries.
    ttl_s, max_entries
        How long an entry is served (seconds) and how many are kept (least recently used go first).
    item_dims
        Leading dimensions that index items: 1 (one item per row) or 2 (a list of items per row).
    key_by
        ``"value"`` keys by the item itself (a row of several values is digested); ``"digest"``
        always keys by a BLAKE2 digest (long texts: the cache then keeps 16 bytes per key).

    Examples
    --------
    >>> embed = CachedFeatures(                                            # doctest: +SKIP
    ...     [Tokenize("text", tokenizer="minilm/tokenizer.json"), OnnxStage("minilm", "fp32")],
    ...     key="text", cache="minilm-fp32", ttl_s=3600, name="embed")
    """

    kind = StageKind.FEATURES
    type_name = "cached"
    n_inputs = None
    n_outputs = None
    counts = True

    def __init__(
        self, stages: Sequence[Stage | Mapping[str, Any]], *, key: str, outputs: Sequence[str] | None = None,
        cache: str = "features", ttl_s: float = 300.0, max_entries: int = 10_000, item_dims: int = 1,
        key_by: str = "value", name: str | None = None, resource: str | None = None,
    ) -> None:
        self.stages = [_stage(s) for s in stages]
        if not self.stages:
            raise ValueError("cached needs at least one stage to wrap")
        if item_dims not in (1, 2):
            raise ValueError(f"item_dims must be 1 (an item per row) or 2 (a list of items per row), not {item_dims!r}")
        if key_by not in KEY_MODES:
            raise ValueError(f"key_by must be one of {KEY_MODES}, not {key_by!r}")
        if not cache or not isinstance(cache, str):
            raise ValueError("cache must be a non-empty name")
        self.key = key
        self.wanted = list(outputs) if outputs is not None else None
        self.cache_name = cache
        self.ttl_s = float(ttl_s)
        self.max_entries = int(max_entries)
        self.item_dims = int(item_dims)
        self.key_by = key_by
        # NOTE: where it runs follows what it wraps: an encoder that wants a GPU takes the whole stage there.
        wants = resource or ("gpu" if any(s.resource == "gpu" for s in self.stages) else "cpu")
        # NOTE: the inputs are known once the wrapped stages are bound (an ONNX stage reads its model's
        # signature then); until then the stage names its key, which is enough to describe it.
        super().__init__([key], self.wanted or ["?"], name=name or "cached", resource=wants)
        self._cache: FeatureCache | None = None
        FeatureCache(cache, ttl_s, max_entries)  # NOTE: checks the settings now, not at the first batch
        self._namespace = ""
        self._specs: list[TensorSpec] = []

    def bind(self, repository: ModelRepository | None, *, load: bool = True) -> None:
        produced: set[str] = set()
        external: list[str] = [self.key]
        for stage in self.stages:
            stage.bind(repository, load=load)
            external += [n for n in stage.inputs if n not in produced and n not in external]
            produced.update(stage.outputs)
        wanted = self.wanted or list(self.stages[-1].outputs)
        missing = [n for n in wanted if n not in produced]
        if missing:
            raise self.wiring_error(f"output {missing[0]!r} is produced by none of the wrapped stages "
                                    f"(they produce {sorted(produced)})", missing[0])
        self.inputs, self.outputs = tuple(external), tuple(wanted)
        self._namespace = self._fingerprint()
        if load:
            self._cache = feature_caches().get(self.cache_name, self.ttl_s, self.max_entries)

    def _fingerprint(self) -> str:
        what: list[Any]
        try:
            what = [s.to_dict() for s in self.stages]
        except SpecError:  # a stage that cannot be written down (a lambda) shares with no one
            what = [f"{type(self).__name__}@{id(self)}"]
        text = json.dumps({"stages": what, "outputs": list(self.outputs)}, sort_keys=True, default=str)
        return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()

    def output_specs(self, inputs: Sequence[TensorSpec]) -> list[TensorSpec]:
        d = self.item_dims
        for spec in inputs:
            if spec.shape is not None and len(spec.shape) < d:
                raise self.wiring_error(f"shape {list(spec.shape)} has fewer than item_dims={d} dimensions",
                                        spec.name)
        specs = {s.name: _items(s, d) for s in inputs}
        for stage in self.stages:
            produced = stage.output_specs([specs[n] for n in stage.inputs])
            specs.update((p.name, p) for p in produced)
        self._specs = [specs[n] for n in self.outputs]
        return [TensorSpec(s.name, s.dtype, None if s.shape is None else (-1,) * d + s.shape[1:], s.allow_nan)
                for s in self._specs]

    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        return self.run_counted(*arrays)[0]

    def run_counted(self, *arrays: np.ndarray) -> tuple[tuple[np.ndarray, ...], dict[str, int]]:
        if self._cache is None:
            raise RuntimeError(f"stage {self.name!r} is not bound")
        lead = arrays[0].shape[:self.item_dims]
        n = math.prod(lead)
        flat = {name: a.reshape(n, *a.shape[self.item_dims:]) for name, a in zip(self.inputs, arrays)}
        keys = [self._key(item) for item in flat[self.key]]
        found: list[Entry | None] = [None] * n
        todo: dict[Hashable, list[int]] = {}
        hits = misses = 0
        cache = self._cache
        for index, key in enumerate(keys):
            if key is None:
                continue
            if key in todo:  # NOTE: the same key twice in a batch is computed once, and looked up once
                todo[key].append(index)
                misses += 1
                continue
            entry = cache.get(key)
            if entry is None:
                todo[key] = [index]
                misses += 1
            else:
                found[index] = entry
                hits += 1
        if todo:
            first = [places[0] for places in todo.values()]
            env = {name: array[first] for name, array in flat.items()}
            for stage in self.stages:
                for tensor, value in zip(stage.outputs, stage.run(*[env[t] for t in stage.inputs])):
                    env[tensor] = value
            for row, (key, places) in enumerate(todo.items()):
                # NOTE: copies: an entry must not keep the whole computed batch alive.
                entry = tuple(np.array(env[name][row]) for name in self.outputs)
                cache.put(key, entry)
                for index in places:
                    found[index] = entry
        outputs = []
        for i, spec in enumerate(self._specs):
            stacked = _assemble([e[i] if e is not None else None for e in found], spec)
            outputs.append(stacked.reshape(*lead, *stacked.shape[1:]))
        return tuple(outputs), {"hits": hits, "misses": misses, "computed": len(todo)}

    def _key(self, item: Any) -> Hashable | None:
        if isinstance(item, np.ndarray) and item.ndim > 0:
            if item.dtype == object:
                return (self._namespace, _digest("\x1f".join(map(str, item.tolist())).encode()))
            return (self._namespace, _digest(item.dtype.str.encode() + bytes(np.ascontiguousarray(item).data)))
        value = item.item() if isinstance(item, np.generic | np.ndarray) else item
        if isinstance(value, str):
            if not value:
                return None  # padding
            return (self._namespace, _digest(value.encode()) if self.key_by == "digest" else value)
        if value is None:
            return None
        if self.key_by == "digest":
            return (self._namespace, _digest(repr(value).encode()))
        return (self._namespace, value)

    @property
    def cache(self) -> FeatureCache | None:
        """The process-wide cache this stage uses (once bound with ``load=True``)."""
        return self._cache

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CachedFeatures:
        params = {k: v for k, v in data.items() if k not in ("type", "inputs")}
        if "stages" not in params or not isinstance(params["stages"], list):
            raise TypeError("'stages' (the stages to cache, a list) is required")
        return cls(params.pop("stages"), **params)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "type": self.type_name, "key": self.key,
                                "cache": self.cache_name, "ttl_s": self.ttl_s, "max_entries": self.max_entries}
        if self.item_dims != 1:
            data["item_dims"] = self.item_dims
        if self.key_by != "value":
            data["key_by"] = self.key_by
        data["stages"] = [s.to_dict() for s in self.stages]
        if self.wanted is not None:
            data["outputs"] = list(self.wanted)
        wants = "gpu" if any(s.resource == "gpu" for s in self.stages) else "cpu"
        if self.resource != wants:
            data["resource"] = self.resource
        return data


def _stage(stage: Stage | Mapping[str, Any]) -> Stage:
    if isinstance(stage, Stage):
        return stage
    from workbench.pipeline.spec import stage_from_dict

    return stage_from_dict(stage)


def _items(spec: TensorSpec, item_dims: int) -> TensorSpec:
    """The spec of a tensor as the wrapped stages see it: its items stacked along one batch dimension."""
    if spec.shape is None or item_dims == 1:
        return spec
    return TensorSpec(spec.name, spec.dtype, (-1, *spec.shape[item_dims:]), spec.allow_nan)


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _assemble(rows: Sequence[np.ndarray | None], spec: TensorSpec) -> np.ndarray:
    """One array of the items' rows; items without one (padding) and ragged rows are filled with zeros."""
    present = [r for r in rows if r is not None]
    if len(present) == len(rows) and len({r.shape for r in present}) == 1:
        return np.stack(present)
    dtype = present[0].dtype if present else spec.numpy_dtype
    shapes = [r.shape for r in present]
    tail = tuple(max(dims) for dims in zip(*shapes)) if shapes else tuple(
        max(d, 0) for d in (spec.shape or (-1,))[1:])
    fill: Any = "" if dtype.kind == "O" else 0
    out = np.full((len(rows), *tail), fill, dtype=dtype)
    for index, row in enumerate(rows):
        if row is not None:
            where: tuple[Any, ...] = (index, *(slice(0, d) for d in row.shape))
            out[where] = row
    return out


def cache_report(stages: Sequence[Stage], counts: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """``{stage: {"cache", "hits", "misses", "computed", "hit_rate"}}`` for the cached stages among ``stages``.

    ``counts`` are the totals the batches reported, by stage (see :meth:`CachedFeatures.run_counted`);
    a stage that has seen no batch reports zeros and a hit rate of ``None``.
    """
    report = {}
    for stage in stages:
        if isinstance(stage, CachedFeatures):
            seen = counts.get(stage.name, {})
            hits, misses = int(seen.get("hits", 0)), int(seen.get("misses", 0))
            report[stage.name] = {"cache": stage.cache_name, "ttl_s": stage.ttl_s, "hits": hits, "misses": misses,
                                  "computed": int(seen.get("computed", 0)),
                                  "hit_rate": hits / (hits + misses) if hits + misses else None}
    return report
