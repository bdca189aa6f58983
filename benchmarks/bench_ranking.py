"""How each ranking strategy's cost grows with the candidate-list length, on the ``search`` demo.

The three strategies are deployed side by side in-process (point-wise,
pair-wise, list-wise with a diversity re-rank), on lists of the catalogue's
passages (made longer than the catalogue with numbered copies). A warm-up round
encodes every passage once: after it the embeddings come from the feature
cache, so what grows with the length is the ranking itself. Requests go one at a
time, rounds alternate between strategies, and the figures are what the
deployments report in ``stats(name)["ranking"]`` (median ranking-stage time per
list length) next to the pairs each strategy compared.

Run: ``python benchmarks/bench_ranking.py [--rounds N] [--lengths 4,16,64,256]``.
"""

from __future__ import annotations

import argparse
import platform
from typing import Any

from workbench.api import Workbench
from workbench.demo import build_demo_models
from workbench.demo.catalogue import PASSAGES, QUERIES
from workbench.demo.search import search_pipeline
from workbench.models import ModelRepository

STRATEGIES: dict[str, dict[str, Any]] = {"pointwise": {}, "pairwise": {}, "listwise": {"diversity": 0.3}}


def candidates(length: int) -> list[str]:
    texts = [text for _, text in PASSAGES]
    return [texts[i % len(texts)] + ("" if i < len(texts) else f" ({i // len(texts)})") for i in range(length)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="requests per strategy and length")
    parser.add_argument("--lengths", default="4,8,16,32,64,128", help="candidate-list lengths, comma-separated")
    args = parser.parse_args()
    lengths = [int(n) for n in args.lengths.split(",")]
    home = build_demo_models(log=lambda _: None)["search"].parent.parent
    repository = ModelRepository(home / "models")
    print(f"{platform.node()}: {platform.processor() or platform.machine()}; rounds {args.rounds}")
    with Workbench.inprocess() as wb:
        for strategy, options in STRATEGIES.items():
            wb.deploy(search_pipeline(repository, strategy=strategy, name=strategy, top_k=10, **options),
                      batching={"mode": "realtime"})
        query = QUERIES[0][0]
        for length in lengths:  # NOTE: warm-up: every passage encoded once, then served from the cache
            wb.predict("pointwise", {"query": [query], "candidates": [candidates(length)]})
        for _ in range(args.rounds):
            for length in lengths:
                for strategy in STRATEGIES:
                    wb.predict(strategy, {"query": [query], "candidates": [candidates(length)]})
        print(f"{'length':>7} " + " ".join(f"{s + ' ms':>13} {'pairs':>7}" for s in STRATEGIES))
        reports = {s: wb.stats(s)["ranking"]["by_length"] for s in STRATEGIES}
        for length in lengths:
            cells = []
            for strategy in STRATEGIES:
                figures = reports[strategy].get(length, {})
                pairs = {"pointwise": 0, "pairwise": length * (length - 1), "listwise": length * length}[strategy]
                cells.append(f"{figures.get('p50_ms', float('nan')):13.3f} {pairs:7d}")
            print(f"{length:7d} " + " ".join(cells))
        cache = wb.stats("pairwise")["feature_cache"]["embed_candidates"]
        print(f"feature cache (pairwise deployment): hit rate {cache['hit_rate']:.3f}, "
              f"{cache['computed']} passages encoded by it")


if __name__ == "__main__":
    main()
