"""Execution providers: decided by what really runs, quietly, once per process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from workbench.config import WorkbenchSettings
from workbench.models import ModelRepository, SessionConfig, usable_providers
from workbench.models.session import SPIN_FROM_S, create_session, spins, warm_up

HAS_GPU = "CUDAExecutionProvider" in usable_providers()


def test_cpu_is_always_usable_and_last() -> None:
    providers = usable_providers()
    assert providers[-1] == "CPUExecutionProvider"
    assert set(providers) <= set(ort.get_available_providers())


@pytest.mark.skipif(HAS_GPU, reason="checks the fallback on a machine without a usable GPU")
def test_gpu_stage_falls_back_to_cpu_without_noise(
    repository: ModelRepository, capfd: pytest.CaptureFixture[str]
) -> None:
    session, provider = create_session(repository.path("topic-head", "centroid"), SessionConfig(), resource="gpu")
    assert provider == "CPUExecutionProvider"
    assert session.get_providers() == ["CPUExecutionProvider"]
    out, err = capfd.readouterr()
    assert "EP Error" not in out + err
    assert "libcublas" not in out + err


def test_device_cpu_never_asks_for_a_gpu(repository: ModelRepository) -> None:
    _, provider = create_session(repository.path("topic-head", "centroid"), SessionConfig(device="cpu"), "gpu")
    assert provider == "CPUExecutionProvider"


@pytest.mark.parametrize("spinning", [False, True])
def test_pool_threads_spin_only_when_asked(repository: ModelRepository, spinning: bool) -> None:
    session, _ = create_session(repository.path("topic-head", "centroid"), SessionConfig(spinning=spinning))
    options = session.get_session_options()
    for pool in ("intra_op", "inter_op"):
        assert options.get_session_config_entry(f"session.{pool}.allow_spinning") == ("1" if spinning else "0")


def test_auto_spinning_follows_the_measured_run() -> None:
    auto = SessionConfig()
    assert spins(auto, 2 * SPIN_FROM_S) and not spins(auto, SPIN_FROM_S / 10) and not spins(auto, None)
    assert spins(SessionConfig(spinning=True), 1e-6) and not spins(SessionConfig(spinning=False), 1.0)


def test_a_light_model_loads_with_sleeping_threads(repository: ModelRepository) -> None:
    auto = ModelRepository(repository.root, session_config=SessionConfig())
    loaded = auto.load("topic-head", "centroid")
    assert loaded.spinning is False
    options = loaded.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert warm_up(loaded.session, 1) is not None  # the session made again runs


def test_spinning_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert WorkbenchSettings().session_config().spinning is None
    monkeypatch.setenv("WORKBENCH_ORT_SPINNING", "0")
    assert WorkbenchSettings().session_config().spinning is False
    monkeypatch.setenv("WORKBENCH_ORT_SPINNING", "1")
    assert WorkbenchSettings().session_config().spinning is True


def test_bad_config_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="device must be"):
        SessionConfig(device="tpu")
    with pytest.raises(ValueError, match="intra_op_threads must be an integer >= 1"):
        SessionConfig(intra_op_threads=0)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a usable CUDA GPU")
def test_gpu_stage_runs_on_cuda(demo_home: Path) -> None:
    repository = ModelRepository(demo_home / "models")
    loaded = repository.load("minilm", "fp32", resource="gpu")
    assert loaded.provider in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    cpu = ModelRepository(demo_home / "models", SessionConfig(device="cpu")).load("minilm", "fp32")
    feed = {n: np.ones((2, 8), dtype=np.int64) for n in ("input_ids", "attention_mask", "token_type_ids")}
    np.testing.assert_allclose(loaded.session.run(None, feed)[0], cpu.session.run(None, feed)[0], atol=1e-3)
