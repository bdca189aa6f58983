"""environment.yml stays in step with pyproject.toml (the single source of dependencies)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_conda_environment_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    declared |= {_name(r) for extra in project["optional-dependencies"].values() for r in extra}
    declared |= {"distributed"}  # dask[distributed] on PyPI is dask + distributed on conda-forge
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    for dependency in conda:
        name = _name(dependency)
        if name not in ("python", "pip"):
            assert name in declared, f"environment.yml lists {name!r}, which pyproject.toml does not declare"
    assert any(line.startswith("-e .[") for line in pip), "the pip section must install the package itself"
    assert "torch==2.13.0" in pip
