"""Shared fixtures: the demo models, built once (the build is skipped when up to date)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workbench.demo import build_demo_models, demo_pipeline
from workbench.models import ModelRepository
from workbench.pipeline import Pipeline

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# NOTE: the prediction log is on by default; the suite would fill the shared home's database with test
# traffic. Tests of the log give it a file of their own.
os.environ.setdefault("WORKBENCH_PREDICTION_LOG", "off")
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def demo_home() -> Path:
    """The workbench home holding the built demo models ($WORKBENCH_HOME or ./.workbench)."""
    home = Path(os.environ.get("WORKBENCH_HOME", REPO_ROOT / ".workbench"))
    build_demo_models(home, log=lambda _: None)
    return home


@pytest.fixture(scope="session")
def repository(demo_home: Path) -> ModelRepository:
    return ModelRepository(demo_home / "models")


@pytest.fixture(scope="session")
def tabular_pipeline(demo_home: Path) -> Pipeline:
    return demo_pipeline("tabular", demo_home)


@pytest.fixture(scope="session")
def text_pipeline(demo_home: Path) -> Pipeline:
    return demo_pipeline("text", demo_home)
