"""`/api/openapi.json`: a valid OpenAPI 3.1 document that describes every /api route the app serves, and
that the API's answers match (the modules that opt in to `openapi_checked` check every answer they see)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import hdrs
from openapi_spec_validator import OpenAPIV31SpecValidator

from gateway.notebook_form import PULL_POLICIES, SERVER_TYPES
from gateway.web.openapi import OPERATIONS, document
from tests.conftest import Client
from tests.openapi_check import ResponseChecker

Factory = Callable[..., Any]
# What the Jupyter web app's form sends (kubeflow/notebooks, NotebookFormObject, after its getSubmitNotebook()
# clean-up): the create body must take exactly these.
WEB_APP_FIELDS = frozenset(
    {"name", "namespace", "image", "customImage", "customImageCheck", "imagePullPolicy", "allowCustomImage"}
    | {"serverType", "cpu", "cpuLimit", "memory", "memoryLimit", "gpus", "affinityConfig", "tolerationGroup"}
    | {"shm", "configurations", "environment", "noWorkspace", "workspace", "datavols"}
)


async def test_the_document_is_valid_openapi_3_1_and_served_without_a_session(
    gateway_factory: Factory, tmp_path: Path
) -> None:
    client: Client = await gateway_factory(user=None, backend="local", local_dir=tmp_path)
    resp = await client.get("/api/openapi.json")
    assert resp.status == 200
    served = await resp.json()
    assert served["openapi"] == "3.1.0" and served == document()
    OpenAPIV31SpecValidator(served).validate()  # raises with the first problem


async def test_every_api_route_the_app_serves_is_described_and_nothing_else(
    gateway_factory: Factory, tmp_path: Path
) -> None:
    client: Client = await gateway_factory(user=None, backend="local", local_dir=tmp_path)
    served = {
        (route.method, route.resource.canonical)
        for route in client.app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/")
        and route.method != hdrs.METH_HEAD  # aiohttp's automatic HEAD for each GET
    }
    assert served == set(OPERATIONS)
    described = {(method.upper(), path) for path, item in document()["paths"].items() for method in item}
    assert described == served


def test_the_create_body_is_described_with_exactly_the_fields_the_web_app_sends() -> None:
    schema = document()["components"]["schemas"]["NewNotebook"]
    assert set(schema["properties"]) == WEB_APP_FIELDS and schema["required"] == ["name"]
    assert schema["additionalProperties"] is False  # the form refuses any other field
    assert set(schema["properties"]["imagePullPolicy"]["enum"]) == {*PULL_POLICIES, ""}
    assert set(schema["properties"]["serverType"]["enum"]) == {*SERVER_TYPES, ""}


def test_the_checker_catches_an_answer_the_document_does_not_describe() -> None:
    checker = ResponseChecker()
    good = {"success": True, "status": 200, "user": "alice@example.com", "notebooks": []}
    checker.check("GET", "/api/namespaces/{namespace}/notebooks", 200, good)
    assert (checker.checked, checker.mismatches) == (1, [])
    checker.check("GET", "/api/namespaces/{namespace}/notebooks", 200, {**good, "notebooks": [{"name": "nb1"}]})
    checker.check("GET", "/api/namespaces/{namespace}/notebooks", 403, {"error": "forbidden"})
    assert len(checker.mismatches) >= 2
    assert any("403" in mismatch and "'message' is a required property" in mismatch for mismatch in checker.mismatches)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"stopped": "yes"}, "stopped"),
        ({"stopped": True, "image": "x"}, "image"),
        ([], "stopped"),
    ],
)
async def test_a_model_checked_body_is_refused_with_the_field_at_fault(
    gateway_factory: Factory, tmp_path: Path, openapi_checked: ResponseChecker, body: object, field: str
) -> None:
    client: Client = await gateway_factory(backend="local", local_dir=tmp_path)
    resp = await client.patch("/api/namespaces/alice/notebooks/nb1", json=body)
    assert resp.status == 400
    answer = await resp.json()
    assert answer.get("field") == field and answer["error"] == "bad_request"
    assert openapi_checked.checked == 1


@pytest.mark.parametrize(
    ("path", "body", "field", "code"),
    [
        ("notebooks", {"name": "nb1", "shm": "yes"}, "shm", "invalid_notebook"),
        ("notebooks", {"name": "nb1", "datavols": [{"mount": "/d", "nfs": {}}]}, "datavols[0].nfs", "invalid_notebook"),
        (
            "poddefaults",
            {"name": "store", "secretMounts": [{"secret": "s", "mountPath": 3}]},
            "secretMounts[0].mountPath",
            "bad_request",
        ),
        (
            "poddefaults",
            {"name": "store", "env": [{"name": "A", "value": "1", "secret": "s"}]},
            "env[0].secret",
            "bad_request",
        ),
    ],
)
async def test_a_create_body_of_the_wrong_shape_is_refused_by_its_model_naming_the_field(
    gateway_factory: Factory,
    tmp_path: Path,
    openapi_checked: ResponseChecker,
    path: str,
    body: object,
    field: str,
    code: str,
) -> None:
    client: Client = await gateway_factory(backend="local", local_dir=tmp_path)
    resp = await client.post(f"/api/namespaces/alice/{path}", json=body)
    answer = await resp.json()
    assert (resp.status, answer.get("field"), answer["error"]) == (400, field, code)
    assert field in answer["message"]
    assert openapi_checked.checked == 1


@pytest.mark.parametrize(
    ("model", "fields", "required"),
    [
        ("NewConfiguration", {"name", "desc", "env", "secretMounts", "envFromSecrets"}, ["name"]),
        ("NewProfile", {"name", "owner", "quota", "mountServiceAccountToken"}, ["name", "owner"]),
        ("NewSecretMount", {"secret", "mountPath"}, ["secret", "mountPath"]),
        ("EnvVariable", {"name", "value"}, ["name", "value"]),
        ("VolumeSource", {"mount", "newPvc", "existingSource"}, ["mount"]),
    ],
)
def test_the_create_bodies_are_described_by_the_models_that_check_them(
    model: str, fields: set[str], required: list[str]
) -> None:
    schema = document()["components"]["schemas"][model]
    assert set(schema["properties"]) == fields and schema.get("required", []) == required
    assert schema["additionalProperties"] is False  # what the check refuses, the document does not offer
