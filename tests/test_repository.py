"""The repository stands alone: a newcomer's clone has nothing beside it, so nothing in it may read outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).parent.parent
# Built in two pieces so that this file does not match itself.
OUTSIDE = re.compile(r"\.\./" + r"shared|" + r"shared/" + r"kubeflow")


def test_no_tracked_file_refers_to_a_folder_beside_the_repository() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    offenders = [
        f"{name}:{number}"
        for name in files
        if (ROOT / name).is_file() and not name.endswith((".png", ".json"))
        for number, line in enumerate((ROOT / name).read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert offenders == []


def test_the_kubeflow_crds_the_fake_api_validates_against_are_in_the_repository() -> None:
    crds = ROOT / "tests" / "kubeflow" / "crds"
    assert sorted(p.name for p in crds.glob("*.yaml")) == [
        "notebook-validation-patch.yaml",
        "notebook.yaml",
        "poddefault.yaml",
        "profile.yaml",
    ]
    sources = (ROOT / "tests" / "kubeflow" / "SOURCES.md").read_text()
    assert all(name in sources for name in ("crds/notebook.yaml", "crds/profile.yaml", "crds/poddefault.yaml"))
