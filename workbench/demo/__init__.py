"""Demo models and pipelines, built locally from data and weights shipped in packages.

``build_demo_models()`` (or ``workbench models build``) writes the models into
``<home>/models`` and the pipeline files into ``<home>/pipelines``. A build is
skipped when its outputs are there and were made by the current builder.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from workbench.config import WorkbenchSettings
from workbench.demo.search import build_search
from workbench.demo.tabular import build_tabular
from workbench.demo.text import build_text
from workbench.models.repository import ModelRepository
from workbench.pipeline.graph import Pipeline

__all__ = ["DEMOS", "build_demo_models", "demo_pipeline", "demo_pipeline_path"]

Builder = Callable[[ModelRepository, Path], Path]

#: Demo pipelines by name, with the function that builds each.
# NOTE: search comes after text: it reuses the text demo's encoder.
DEMOS: dict[str, Builder] = {"tabular": build_tabular, "text": build_text, "search": build_search}
#: Bump when a builder changes what it writes, so old builds are redone.
BUILD_VERSION = "4"


def _home(home: str | Path | None) -> Path:
    return Path(home) if home is not None else WorkbenchSettings().home


def _stamp(home: Path, name: str) -> Path:
    return home / "pipelines" / f".{name}.built"


def build_demo_models(
    home: str | Path | None = None, only: Iterable[str] | None = None, force: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Build the demo models and pipeline files; return the pipeline file of each demo."""
    root = _home(home)
    names = list(only) if only is not None else list(DEMOS)
    unknown = [n for n in names if n not in DEMOS]
    if unknown:
        raise ValueError(f"unknown demo {unknown[0]!r}; demos: {sorted(DEMOS)}")
    repository = ModelRepository(root / "models")
    paths = {}
    for name in names:
        path = root / "pipelines" / f"{name}.yaml"
        stamp = _stamp(root, name)
        if not force and path.exists() and stamp.exists() and stamp.read_text() == BUILD_VERSION:
            log(f"{name}: up to date ({path})")
        else:
            start = time.perf_counter()
            path.parent.mkdir(parents=True, exist_ok=True)
            built = DEMOS[name](repository, path.parent)
            stamp.write_text(BUILD_VERSION)
            log(f"{name}: built in {time.perf_counter() - start:.1f} s ({built})")
        paths[name] = path
    return paths


def demo_pipeline_path(name: str, home: str | Path | None = None) -> Path:
    """The pipeline file of a built demo; raises with the command to run when it is missing."""
    if name not in DEMOS:
        raise ValueError(f"unknown demo {name!r}; demos: {sorted(DEMOS)}")
    path = _home(home) / "pipelines" / f"{name}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"demo {name!r} is not built yet: run 'workbench models build' (looked for {path})")
    return path


def demo_pipeline(name: str, home: str | Path | None = None, *, load: bool = True) -> Pipeline:
    """Load a built demo pipeline."""
    return Pipeline.from_yaml(demo_pipeline_path(name, home), load=load)
