"""Execution providers: decided by what really runs, quietly, once per process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from workbench.models import ModelRepository, SessionConfig, usable_providers
from workbench.models.session import create_session

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
