"""Pinned npm packages the tests run with node (tests/jcs, tests/a11y): `npm ci` once per directory,
when its node_modules lacks the package, under a file lock so parallel test processes install once."""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
import tempfile
from pathlib import Path

from .node_idp import require_node

TESTS = Path(__file__).resolve().parent.parent


def npm_ci(name: str, package: str) -> Path:
    """tests/`name` with its lock file installed; `package` is one it depends on (the sign that
    node_modules is there). Skips on a laptop without node, fails in CI (see `require_node`)."""
    directory = TESTS / name
    marker = directory / "node_modules" / package / "package.json"
    require_node()
    if marker.exists():
        return directory
    digest = hashlib.sha256(str(directory).encode()).hexdigest()[:16]
    with (Path(tempfile.gettempdir()) / f"notebook-gateway-npm-ci-{digest}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            done = subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund"], cwd=directory, capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                raise RuntimeError(f"npm ci in {directory} failed:\n{done.stdout}\n{done.stderr}")
    return directory
