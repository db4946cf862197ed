"""The lock files (scripts/lock): every dependency pinned to a version pyproject.toml's ranges allow,
every pin hashed, and the image and CI installing from them with --require-hashes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)", re.MULTILINE)


def pins(lock: str) -> dict[str, str]:
    return {canonicalize_name(name): version for name, version in PIN.findall((ROOT / lock).read_text())}


def direct(extras: tuple[str, ...]) -> list[Requirement]:
    """The project's own requirements with these extras (a self-reference such as notebook-gateway[local]
    brings that extra's in)."""
    found: list[Requirement] = []
    pending: list[str] = list(PROJECT["dependencies"])
    seen: set[str] = set()
    for extra in extras:
        pending += PROJECT["optional-dependencies"][extra]
    while pending:
        requirement = Requirement(pending.pop())
        if canonicalize_name(requirement.name) == canonicalize_name(PROJECT["name"]):
            for extra in requirement.extras - seen:
                seen.add(extra)
                pending += PROJECT["optional-dependencies"][extra]
            continue
        found.append(requirement)
    return found


@pytest.mark.parametrize(("lock", "extras"), [("requirements.lock", ()), ("requirements-test.lock", ("test",))])
def test_every_dependency_is_pinned_within_its_range_and_hashed(lock: str, extras: tuple[str, ...]) -> None:
    pinned = pins(lock)
    for requirement in direct(extras):
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{lock} lacks {requirement}: run scripts/lock"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{lock} pins {name}=={pinned[name]}, outside {requirement}: run scripts/lock"
        )
    text = (ROOT / lock).read_text()
    entries = re.split(r"(?m)^(?=[A-Za-z0-9])", text)[1:]
    assert entries and all("--hash=sha256:" in entry for entry in entries)
    assert "file:" not in text and PROJECT["name"] not in pinned


def test_the_runtime_lock_is_the_test_locks_subset() -> None:
    """The image runs the versions CI tested."""
    runtime, tested = pins("requirements.lock"), pins("requirements-test.lock")
    assert {name: tested.get(name) for name in runtime} == runtime


def test_the_image_and_ci_install_only_from_the_locks() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --require-hashes -r requirements.lock" in dockerfile
    assert "pip install --no-deps ." in dockerfile
    venv = (ROOT / "scripts" / "_venv.sh").read_text()
    assert "pip install --quiet --require-hashes -r requirements-test.lock" in venv
    assert "pip install --quiet --no-deps -e ." in venv
    assert "requirements-test.lock" in venv.split("stamp=", 1)[1].split("\n", 1)[0]  # a new lock reinstalls
