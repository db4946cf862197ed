"""gateway/pod_security.py: the notebooks the gateway makes pass the Pod Security level their profile
namespace enforces (checked with the fake API server's Pod Security admission), root only where allowed."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.backends import NotebookSpec
from gateway.backends.notebook_resource import notebook_object
from gateway.pod_security import namespace_labels
from tests.fakes.pod_admission import violations

SPEC = NotebookSpec(name="nb1", image="kubeflownotebookswg/jupyter-scipy:v1.9.0")


def pod_spec(**options: Any) -> dict[str, Any]:
    notebook = notebook_object("team-a", SPEC, creator="alice@example.com", **options)
    spec: dict[str, Any] = notebook["spec"]["template"]["spec"]  # type: ignore[index]
    return spec


@pytest.mark.parametrize("level", ["baseline", "restricted"])
def test_a_notebook_passes_every_level_a_profile_namespace_may_enforce(level: str) -> None:
    assert namespace_labels(level)["pod-security.kubernetes.io/enforce"] == level  # type: ignore[arg-type]
    assert violations(level, pod_spec()) == []
    container = pod_spec()["containers"][0]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_root_only_where_an_admin_allows_it() -> None:
    assert pod_spec()["securityContext"]["runAsNonRoot"] is True
    assert "runAsNonRoot" not in pod_spec(allow_root=True)["securityContext"]
    assert violations("baseline", pod_spec(allow_root=True)) == []  # baseline lets root run, restricted not
    assert violations("restricted", pod_spec(allow_root=True)) != []
