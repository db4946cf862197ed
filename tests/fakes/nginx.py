"""Debian's nginx for tests that put a real proxy in front of the gateway: run in the foreground with its config,
pid, logs and temporary files in one directory of the test's own."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ..conftest import wait_for_port

TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")  # all inside the test's directory, not /var/lib


def nginx_binary() -> str:
    """nginx's path; skips the test on a laptop without it, fails it in CI (scripts/setup-system installs it)."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(binary, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail("nginx is missing (scripts/setup-system installs it)")
        pytest.skip("nginx is missing: apt-get install nginx")
    return binary


def start_nginx(directory: Path, port: int, http: str, *, worker_connections: int = 64) -> subprocess.Popen[bytes]:
    """Start nginx with `http` (the inside of its `http {}` block, which listens on `port`) and wait until it does.
    The caller stops the process."""
    directory.mkdir()
    conf = directory / "nginx.conf"
    conf.write_text(
        f"daemon off;\nworker_processes 1;\npid {directory}/nginx.pid;\nerror_log {directory}/error.log warn;\n"
        f"events {{ worker_connections {worker_connections}; }}\nhttp {{\n"
        + "".join(f"    {kind}_temp_path {directory}/{kind};\n" for kind in TEMP_PATHS)
        + http
        + "}\n"
    )
    args = [nginx_binary(), "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, timeout_s=20, proc=proc)
    return proc
