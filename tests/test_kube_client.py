"""The one boundary between the Kubernetes library and the gateway: every answer of the API server
becomes a gateway error with the status a client gets, and nothing else in the gateway touches the
library or opens a client of its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gateway.errors import (
    BadRequest,
    Conflict,
    GatewayError,
    KubernetesConflict,
    KubernetesError,
    KubernetesGone,
    NotFound,
    ServiceUnavailable,
)
from gateway.kube.client import api_error, error_from_body

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"


@pytest.mark.parametrize(
    ("status", "kind", "answered"),
    [
        (0, ServiceUnavailable, 503),  # no answer at all
        (429, ServiceUnavailable, 503),
        (500, ServiceUnavailable, 503),
        (502, ServiceUnavailable, 503),
        (401, ServiceUnavailable, 503),  # the gateway's own credentials or RBAC: not the user's fault
        (403, ServiceUnavailable, 503),
        (404, NotFound, 404),
        (409, Conflict, 409),
        (400, BadRequest, 400),
        (422, BadRequest, 400),
        (410, KubernetesGone, 500),  # a watch's expired resourceVersion: the reflector relists
        (418, GatewayError, 500),
    ],
)
def test_every_api_answer_becomes_a_gateway_error_with_its_status(
    status: int, kind: type[GatewayError], answered: int
) -> None:
    error = api_error(status, "Reason", "what the API server said")
    assert isinstance(error, KubernetesError) and isinstance(error, kind)
    assert error.status == answered
    assert (error.api_status, error.reason, error.detail) == (status, "Reason", "what the API server said")
    assert error.description == f"{status} Reason: what the API server said"  # for logs and /readyz


def test_only_a_refused_object_shows_the_api_servers_words_to_the_client() -> None:
    assert api_error(422, "Invalid", "spec.cpu: Invalid value").message == "spec.cpu: Invalid value"
    assert "10.0.0.1" not in api_error(503, "", "dial tcp 10.0.0.1:443: refused").message
    assert "token" not in api_error(401, "Unauthorized", "token expired").message


def test_a_status_body_names_the_reason_and_anything_else_is_kept_short() -> None:
    conflict = error_from_body(409, b'{"kind": "Status", "reason": "AlreadyExists", "message": "exists"}')
    assert isinstance(conflict, KubernetesConflict) and conflict.already_exists
    page = error_from_body(502, b"<html>" + b"x" * 1000)
    assert isinstance(page, ServiceUnavailable) and len(page.detail) == 200


def imports_and_constructions() -> dict[str, tuple[set[str], bool]]:
    """Per module of the gateway: what it imports, and whether it makes a `KubeClient`."""
    found = {}
    for path in GATEWAY.rglob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        calls = any(isinstance(node, ast.Call) and _names_kube_client(node.func) for node in ast.walk(tree))
        found[str(path.relative_to(GATEWAY))] = (imported, calls)
    return found


def _names_kube_client(func: ast.expr) -> bool:
    """`KubeClient(...)`, or a factory on the class such as `KubeClient.connect(...)`."""
    if isinstance(func, ast.Attribute):
        func = func.value
    return isinstance(func, ast.Name) and func.id == "KubeClient"


def test_only_the_client_module_touches_the_kubernetes_library() -> None:
    modules = imports_and_constructions()
    library = sorted(
        name for name, (imported, _) in modules.items() if any("kubernetes_asyncio" in i for i in imported)
    )
    assert library == ["kube/client.py"]


def test_only_app_py_makes_the_kubernetes_client() -> None:
    modules = imports_and_constructions()
    assert sorted(name for name, (_, calls) in modules.items() if calls) == ["app.py"]
