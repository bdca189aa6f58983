"""Model repository: layout, metadata, path containment, sessions and their providers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from workbench import ModelLoadError, ModelNotFound, ModelPathRefused
from workbench.models import ModelMetadata, ModelRepository, SessionConfig
from workbench.pipeline import OnnxStage, Pipeline, TensorSpec


@pytest.fixture()
def small_repo(tmp_path: Path, repository: ModelRepository) -> ModelRepository:
    """A fresh repository holding a copy of the logistic-regression demo model."""
    repo = ModelRepository(tmp_path / "models", SessionConfig(intra_op_threads=1, inter_op_threads=1))
    repo.add("clf", "v1", repository.path("tabular", "logreg"), ModelMetadata(quality={"accuracy": 0.9}, notes="n"))
    return repo


def test_listing_and_metadata(small_repo: ModelRepository) -> None:
    assert small_repo.models() == ["clf"]
    assert small_repo.variants("clf") == ["v1"]
    meta = small_repo.metadata("clf", "v1")
    assert meta.version == 1 and meta.quality == {"accuracy": 0.9} and meta.notes == "n"


def test_demo_repository_layout(repository: ModelRepository) -> None:
    assert {"tabular", "minilm", "topic-head"} <= set(repository.models())
    assert repository.variants("tabular") == ["gbt", "logreg"]
    assert repository.variants("minilm") == ["fp32", "int8"]
    for model in ("tabular", "minilm"):
        for variant in repository.variants(model):
            assert repository.path(model, variant) == repository.root / model / variant / "model.onnx"
            assert "accuracy" in repository.metadata(model, variant).quality


def test_missing_models_and_variants(small_repo: ModelRepository) -> None:
    with pytest.raises(ModelNotFound, match="no model 'other'"):
        small_repo.load("other", "v1")
    with pytest.raises(ModelNotFound, match=r"model 'clf' has no variant 'v2'; variants: \['v1'\]"):
        small_repo.load("clf", "v2")


@pytest.mark.parametrize(("model", "variant"), [("..", "v1"), ("clf", "../../etc"), ("/etc", "passwd"), ("", "v1")])
def test_names_that_leave_the_root_are_refused(small_repo: ModelRepository, model: str, variant: str) -> None:
    with pytest.raises(ModelPathRefused):
        small_repo.path(model, variant)


def test_assets_outside_the_root_are_refused(small_repo: ModelRepository, tmp_path: Path) -> None:
    outside = tmp_path / "secret.onnx"
    outside.write_bytes(b"x")
    with pytest.raises(ModelPathRefused, match="outside the repository root"):
        small_repo.asset("../secret.onnx")
    with pytest.raises(ModelPathRefused, match="relative"):
        small_repo.asset(str(outside))
    os.symlink(outside, small_repo.root / "link.onnx")
    with pytest.raises(ModelPathRefused, match="outside the repository root"):
        small_repo.asset("link.onnx")


def test_a_variant_symlinked_out_of_the_root_is_refused(small_repo: ModelRepository, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "model.onnx").write_bytes(small_repo.path("clf", "v1").read_bytes())
    os.symlink(elsewhere, small_repo.root / "clf" / "escape")
    with pytest.raises(ModelPathRefused):
        small_repo.load("clf", "escape")


def test_a_corrupt_model_fails_to_load_with_a_clear_error(small_repo: ModelRepository) -> None:
    small_repo.add("broken", "v1", b"this is not an onnx file", ModelMetadata())
    with pytest.raises(ModelLoadError, match="cannot load model"):
        small_repo.load("broken", "v1")
    with pytest.raises(ModelLoadError, match="cannot read model"):
        small_repo.signature("broken", "v1")
    with pytest.raises(ModelLoadError):
        Pipeline("p", {"x": "float32[-1,30]"}, [OnnxStage("broken", "v1", inputs={"X": "x"})], repository=small_repo)


def test_sessions_are_shared_warm_and_report_their_provider(small_repo: ModelRepository) -> None:
    first = small_repo.load("clf", "v1")
    assert small_repo.load("clf", "v1") is first
    assert first.provider == "CPUExecutionProvider"
    assert first.load_ms > 0
    options = first.session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    assert [s.name for s in first.signature.inputs] == ["X"]
    assert first.signature.inputs[0] == TensorSpec("X", "float32", (-1, 30))
    small_repo.unload("clf", "v1")
    assert small_repo.loaded() == []
    assert small_repo.load("clf", "v1") is not first


def test_signature_from_the_file_matches_the_session(repository: ModelRepository) -> None:
    for model, variant in (("tabular", "gbt"), ("minilm", "int8"), ("topic-head", "centroid")):
        from_file = ModelRepository(repository.root).signature(model, variant)
        assert from_file == repository.load(model, variant).signature


def test_replacing_a_variant_is_atomic(small_repo: ModelRepository, repository: ModelRepository) -> None:
    small_repo.add("clf", "v1", repository.path("tabular", "gbt"), ModelMetadata(version=2))
    assert not list((small_repo.root / "clf" / "v1").glob("*.partial"))
    assert small_repo.metadata("clf", "v1").version == 2
    loaded = ModelRepository(small_repo.root).load("clf", "v1")
    x = np.zeros((1, 30), dtype=np.float32)
    assert loaded.session.run(None, {"X": x})[1].shape == (1, 2)


def test_thread_settings_come_from_the_environment(
    repository: ModelRepository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKBENCH_INTRA_OP_THREADS", "1")
    monkeypatch.setenv("WORKBENCH_DEVICE", "cpu")
    repo = ModelRepository(tmp_path / "env-models")
    assert repo.session_config == SessionConfig(intra_op_threads=1, device="cpu")
    repo.add("clf", "v1", repository.path("tabular", "logreg"), ModelMetadata())
    assert repo.load("clf", "v1").session.get_session_options().intra_op_num_threads == 1
