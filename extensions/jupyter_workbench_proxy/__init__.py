"""JupyterLab launcher tile "Inference Workbench", declared for jupyter-server-proxy.

jupyter-server-proxy reads the ``jupyter_serverproxy_servers`` entry point of the
``inference-workbench`` distribution (``workbench = "jupyter_workbench_proxy:setup_workbench"``)
and, when the tile is clicked, starts ``workbench serve`` on a free port, waits until it
answers and opens ``<jupyter base URL>/workbench/dashboard`` in a JupyterLab tab. Nothing
here is coded against Jupyter: :func:`setup_workbench` only returns the declaration.

Behind the proxy the server sees paths without the ``<base URL>/workbench`` prefix
(``absolute_url`` off), so it needs no setting of its own: the dashboard page names its
scripts by relative URLs and Bokeh opens its websocket under the page's own path, both of
which the browser resolves under the prefix. (jupyter-server-proxy also sends the prefix
as ``X-Forwarded-Prefix`` with every request.)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ICON", "NAME", "ProxySettings", "setup_workbench"]

#: The server's name: its URL under Jupyter is ``<base URL>/workbench/``.
NAME = "workbench"
ICON = Path(__file__).parent / "icons" / "workbench.svg"


class ProxySettings(BaseSettings):
    """What the launcher tile starts, from ``WORKBENCH_PROXY_*`` environment variables of the Jupyter server."""

    model_config = SettingsConfigDict(env_prefix="WORKBENCH_PROXY_", extra="ignore")

    targets: str = "tabular text"
    """Pipelines to serve, separated by spaces: demo names, names in the pipelines folder or pipeline files."""
    scheduler: str | None = None
    """Serve on this Dask cluster (``tcp://host:8786``) instead of a local cluster of the server's own."""
    workers: int = Field(2, ge=1)
    """Workers of the local cluster (when no scheduler is given)."""
    inprocess: bool = False
    """Run batches in the server process (no Dask): starts in seconds."""
    port: int | None = Field(None, ge=1, le=65535)
    """Connect to a ``workbench serve`` already listening on this loopback port instead of starting one."""
    timeout_s: float = Field(180.0, gt=0)
    """How long the server may take to start (a local cluster, then each pipeline deployed and warmed)."""


def _workbench_command() -> list[str]:
    # NOTE: the Jupyter server may run from a virtualenv that is not on PATH; its own
    # ``workbench`` script sits next to its interpreter.
    beside = Path(sys.executable).with_name("workbench")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("workbench")
    return [found] if found else [sys.executable, "-m", "workbench.cli"]


def setup_workbench() -> dict[str, Any]:
    """The jupyter-server-proxy declaration of the workbench server and its launcher tile.

    Examples
    --------
    >>> config = setup_workbench()
    >>> config["launcher_entry"]["title"]
    'Inference Workbench'
    >>> "{port}" in config["command"]
    True
    """
    settings = ProxySettings()
    if settings.port is not None:
        server: dict[str, Any] = {"command": [], "port": settings.port}
    else:
        command = [*_workbench_command(), "serve", *settings.targets.split(), "--host", "127.0.0.1",
                   "--port", "{port}"]
        if settings.scheduler:
            command += ["--scheduler", settings.scheduler]
        elif settings.inprocess:
            command.append("--inprocess")
        else:
            command += ["--workers", str(settings.workers)]
        server = {"command": command, "timeout": settings.timeout_s}
    return {
        **server,
        # NOTE: the server sees paths without the proxy's prefix (``/dashboard``, ``/v2/...``).
        "absolute_url": False,
        "new_browser_tab": False,
        "launcher_entry": {
            "enabled": True,
            "title": "Inference Workbench",
            "icon_path": str(ICON),
            "path_info": f"{NAME}/dashboard",
            "category": "Notebook",
        },
    }
