"""The JupyterLab launcher tile: the ``jupyter_serverproxy_servers`` entry point and what it declares."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from importlib.metadata import entry_points
from pathlib import Path

import pytest


def declaration() -> dict[str, object]:
    (point,) = [p for p in entry_points(group="jupyter_serverproxy_servers") if p.name == "workbench"]
    config: dict[str, object] = point.load()()
    return config


def test_the_entry_point_declares_the_workbench_server_and_its_tile(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("TARGETS", "SCHEDULER", "WORKERS", "INPROCESS", "PORT", "TIMEOUT_S"):
        monkeypatch.delenv(f"WORKBENCH_PROXY_{variable}", raising=False)
    config = declaration()
    command = config["command"]
    assert isinstance(command, list)
    assert Path(command[0]).name == "workbench" or command[1:3] == ["-m", "workbench.cli"]
    serve = command.index("serve")
    assert command[serve + 1:serve + 3] == ["tabular", "text"]
    assert command[command.index("--port") + 1] == "{port}"
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert config["absolute_url"] is False and config["new_browser_tab"] is False
    assert isinstance(config["timeout"], float) and config["timeout"] >= 60
    entry = config["launcher_entry"]
    assert isinstance(entry, dict)
    assert entry["title"] == "Inference Workbench" and entry["path_info"] == "workbench/dashboard"
    icon = Path(entry["icon_path"])
    assert icon.suffix == ".svg" and ET.parse(icon).getroot().tag == "{http://www.w3.org/2000/svg}svg"


def test_the_server_proxy_loads_the_declaration() -> None:
    from jupyter_server_proxy.config import get_entrypoint_server_processes

    # NOTE: what jupyter-server-proxy does at start-up; a declaration it cannot use would be a warning (an error here).
    (process,) = [p for p in get_entrypoint_server_processes() if p.name == "workbench"]
    assert process.launcher_entry.title == "Inference Workbench"
    assert process.launcher_entry.path_info == "workbench/dashboard"
    assert "{port}" in process.command


def test_settings_choose_the_cluster_or_a_running_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_PROXY_TARGETS", "tabular")
    monkeypatch.setenv("WORKBENCH_PROXY_SCHEDULER", "tcp://10.0.0.5:8786")
    command = declaration()["command"]
    assert isinstance(command, list)
    assert command[command.index("serve") + 1:command.index("--host")] == ["tabular"]
    assert command[-2:] == ["--scheduler", "tcp://10.0.0.5:8786"]
    monkeypatch.delenv("WORKBENCH_PROXY_SCHEDULER")
    monkeypatch.setenv("WORKBENCH_PROXY_INPROCESS", "1")
    assert declaration()["command"][-1] == "--inprocess"  # type: ignore[index]
    monkeypatch.setenv("WORKBENCH_PROXY_PORT", "8000")
    config = declaration()
    assert config["command"] == [] and config["port"] == 8000
