"""Which build this is: the version from the installed package's metadata, and the commit when known.

The commit comes from `NOTEBOOK_GATEWAY_COMMIT` (the Dockerfile bakes it in from the `COMMIT` build
argument), else from git when the package runs from a checkout; neither is required.
"""

from __future__ import annotations

import os
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "notebook-gateway"
COMMIT_VARIABLE = "NOTEBOOK_GATEWAY_COMMIT"


@cache
def version() -> str:
    """The installed distribution's version; "unknown" when the package is imported without being installed."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


@cache
def commit() -> str | None:
    """The source commit (short hash) this build came from, or None when nobody recorded it."""
    baked = os.environ.get(COMMIT_VARIABLE, "").strip()
    if baked:
        return baked[:40]
    source = Path(__file__).resolve().parent.parent
    try:  # a checkout (dev, CI): ask git, quietly, and only once per process
        found = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    text = found.stdout.strip()
    return text if found.returncode == 0 and text else None


def describe() -> str:
    """`notebook-gateway 0.1.0 (commit abc123def456)`: what `--version` prints."""
    known = commit()
    return f"{DISTRIBUTION} {version()}" + (f" (commit {known})" if known else "")
