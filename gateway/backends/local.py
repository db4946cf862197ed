"""`LocalBackend`: real Jupyter servers as child processes on loopback, for dev mode."""

from __future__ import annotations

import sys
from pathlib import Path


def jupyter_command(*, base_url: str, port: int, root_dir: Path) -> list[str]:
    """The command line of one Jupyter server behind the gateway, as Kubeflow's images start it:
    under `base_url` (the NB_PREFIX), no token or password (the gateway is the gate), XSRF on."""
    return [
        sys.executable,
        "-m",
        "jupyter_server",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.base_url={base_url}",
        f"--ServerApp.root_dir={root_dir}",
        "--IdentityProvider.token=",
        "--ServerApp.password=",
        # The gateway forwards the browser's Host header, which is not a loopback name in general.
        "--ServerApp.allow_remote_access=True",
        "--ServerApp.open_browser=False",
    ]


class LocalBackend:
    name = "local"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
