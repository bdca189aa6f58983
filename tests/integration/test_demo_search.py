"""The search demo's build and pipeline, in-process: the text demo's encoder reused, the strategy a setting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from workbench.demo import demo_pipeline_path
from workbench.demo.catalogue import load_catalogue
from workbench.demo.search import CATALOGUE_FILE, build_search
from workbench.models import ModelRepository
from workbench.pipeline import Pipeline
from workbench.ranking import Rank


def test_the_build_reuses_the_encoder_and_writes_the_catalogue_next_to_the_pipeline(
        repository: ModelRepository, tmp_path: Path) -> None:
    encoder = repository.path("minilm", "fp32")
    before = encoder.stat().st_mtime_ns
    path = build_search(repository, tmp_path)
    assert encoder.stat().st_mtime_ns == before  # NOTE: not exported again
    assert path == tmp_path / "search.yaml"
    catalogue = load_catalogue(tmp_path / CATALOGUE_FILE)
    topics = [p["topic"] for p in catalogue["passages"]]
    assert len(topics) >= 24 and len(set(topics)) == len(topics)
    assert all(0 <= q["answer"] < len(topics) for q in catalogue["queries"])
    stages = yaml.safe_load(path.read_text())["stages"]
    assert [s["type"] for s in stages] == ["cached", "cached", "rank"]
    assert {s["stages"][1]["model"] for s in stages[:2]} == {"minilm"}


@pytest.mark.parametrize(("strategy", "settings"), [("pointwise", {}), ("pairwise", {"aggregate": "wins"}),
                                                    ("listwise", {"diversity": 0.3})])
def test_each_strategy_set_in_the_file_finds_every_clear_answer(
        demo_home: Path, strategy: str, settings: dict[str, object]) -> None:
    data = yaml.safe_load(demo_pipeline_path("search", demo_home).read_text())
    rank = next(s for s in data["stages"] if s["type"] == "rank")
    rank.update(strategy=strategy, **settings)
    pipeline = Pipeline.from_dict(data, repository=demo_home / "models")
    stage = pipeline.stage("rank")
    assert isinstance(stage, Rank) and stage.strategy_name == strategy
    catalogue = load_catalogue(demo_home / "pipelines" / CATALOGUE_FILE)
    texts = [p["text"] for p in catalogue["passages"]]
    queries = [q["query"] for q in catalogue["queries"]]
    result = pipeline.predict({"query": queries, "candidates": [texts] * len(queries)})
    assert result["ranking"].shape == result["scores"].shape == (len(queries), stage.top_k)
    assert result["ranking"][:, 0].tolist() == [q["answer"] for q in catalogue["queries"]]
    assert np.all(np.diff(result["scores"], axis=1) <= 1e-6) or strategy == "listwise"
