"""`notebook-gateway --version`: what an operator asks a running image before anything else."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from gateway import version
from gateway.cli.main import main

ROOT = Path(__file__).resolve().parent.parent


def test_version_prints_the_installed_version_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith(f"notebook-gateway {metadata.version('notebook-gateway')}")


def test_the_commit_baked_into_the_image_is_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(version.COMMIT_VARIABLE, "0123456789ab")
    version.commit.cache_clear()
    try:
        assert version.describe() == f"notebook-gateway {version.version()} (commit 0123456789ab)"
    finally:
        version.commit.cache_clear()


def test_python_dash_m_gateway_answers_the_same() -> None:
    ran = subprocess.run(
        [sys.executable, "-m", "gateway", "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith(f"notebook-gateway {metadata.version('notebook-gateway')}")
    # Run from a checkout: git knows the commit, so the line names it.
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:
        assert f"(commit {head.stdout.strip()})" in ran.stdout
