"""`/api/openapi.json`: an OpenAPI 3.1 description of the JSON API, generated from the models in api_models.py.

`OPERATIONS` names, for each route the API serves (by method and path, as `app.router` has them), its
request body and answers; the schemas are pydantic's JSON Schema (2020-12, which OpenAPI 3.1 uses as it
is). tests/test_openapi.py checks that every /api route is here and that the answers the tests see match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ..cookies import SESSION_COOKIE
from . import api_models as m

PATH = "/api/openapi.json"
# Served without a session: a client reads it before it has a token.
PUBLIC = frozenset({"api_openapi"})
REF = "#/components/schemas/{model}"
VALIDATION: Literal["validation"] = "validation"


@dataclass(frozen=True)
class Operation:
    summary: str
    answer: type[BaseModel] | None  # None: no model (the document itself, files, streams)
    body: type[BaseModel] | None = None
    media: dict[str, dict[str, Any]] = field(default_factory=dict)  # other answers' types -> their schema
    status: int = 200
    query: dict[str, str] = field(default_factory=dict)  # name -> description
    tag: str = "notebooks"


NS = "/api/namespaces/{namespace}"
NOTEBOOK = f"{NS}/notebooks/{{name}}"
AUDIT_FILTERS = {
    **{name: f"filter by {name}" for name in ("user", "namespace", "notebook", "action", "outcome", "text")},
    "since": "RFC 3339 time",
    "until": "RFC 3339 time",
    "q": "a query in the audit page's syntax",
}
TEXT = {"type": "string"}
OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", PATH): Operation("This document", None, tag="meta"),
    ("GET", "/api/config"): Operation("The NEW SERVER form's defaults", m.FormDefaults),
    ("GET", f"{NS}/notebooks"): Operation("List the notebook servers of a namespace", m.NotebookList),
    ("POST", f"{NS}/notebooks"): Operation("Create a notebook server", m.NotebookAnswer, m.NewNotebook),
    ("GET", NOTEBOOK): Operation("One notebook server", m.NotebookAnswer),
    ("PATCH", NOTEBOOK): Operation("Stop or start a notebook server", m.NotebookAnswer, m.NotebookPatch),
    ("DELETE", NOTEBOOK): Operation(
        "Delete a notebook server",
        m.NotebookDeleted,
        query={"volumes": "`true`: also delete the volumes made with it (never attached ones)"},
    ),
    ("GET", f"{NS}/poddefaults"): Operation(
        "List the configurations (PodDefaults)", m.ConfigurationList, tag="configurations"
    ),
    ("POST", f"{NS}/poddefaults"): Operation(
        "Create a configuration", m.ConfigurationCreated, m.NewConfiguration, tag="configurations"
    ),
    ("DELETE", f"{NS}/poddefaults/{{name}}"): Operation("Delete a configuration", m.Message, tag="configurations"),
    ("GET", f"{NS}/access"): Operation(
        "Who has which role in a namespace, and from where", m.NamespaceAccess, tag="policies"
    ),
    ("GET", "/api/policies"): Operation(
        "List rules",
        m.PolicyList,
        query={"namespace": "only this namespace's", "subject": "only this subject's", "role": "only this role's"},
        tag="policies",
    ),
    ("POST", "/api/policies"): Operation("Grant a rule", m.PolicyChanged, m.Rule, tag="policies"),
    ("DELETE", "/api/policies"): Operation("Revoke a rule", m.PolicyChanged, m.Rule, tag="policies"),
    ("PUT", "/api/policies"): Operation("Replace every rule", m.PolicyReplaced, m.PolicyReplace, tag="policies"),
    ("POST", "/api/policies/check"): Operation("Explain a decision", m.Decision, m.AccessCheck, tag="policies"),
    ("GET", "/api/profiles"): Operation("List profiles", m.ProfileList, tag="profiles"),
    ("POST", "/api/profiles"): Operation(
        "Create a profile", m.ProfileCreated, m.NewProfile, status=201, tag="profiles"
    ),
    ("DELETE", "/api/profiles/{name}"): Operation(
        "Delete a profile and everything in it",
        m.ProfileDeleted,
        query={"confirm": "the profile's name again"},
        tag="profiles",
    ),
    ("GET", "/api/audit"): Operation(
        "Search the audit log",
        m.AuditPage,
        media={"text/csv": TEXT},
        query={
            **AUDIT_FILTERS,
            "limit": "events per page",
            "cursor": "the X-Next-Cursor of the previous page",
            "format": "`json` (default) or `csv` (also chosen by `Accept: text/csv`)",
        },
        tag="audit",
    ),
    ("GET", "/api/audit/export"): Operation(
        "Export every matching event, streamed (a download; cut short when the store fails midway)",
        None,
        # JSON lines: one audit event (or, for `ecs`, one Elastic Common Schema document) a line.
        media={"text/csv": TEXT, "application/x-ndjson": TEXT},
        query={**AUDIT_FILTERS, "format": "`csv` (default), `jsonl` (JSON lines) or `ecs` (ECS JSON lines)"},
        tag="audit",
    ),
    ("GET", "/api/audit/activity"): Operation(
        "Matching events per hour by action and outcome (the last 24 hours without `since`)",
        m.AuditActivity,
        query=AUDIT_FILTERS,
        tag="audit",
    ),
    ("GET", "/api/audit/schema"): Operation(
        "The audit event's JSON Schema",
        None,
        media={"application/schema+json": {"type": "object"}},
        tag="audit",
    ),
    ("GET", f"{NOTEBOOK}/pod"): Operation("What a notebook server's status says of its pod", m.NotebookPod),
    ("GET", f"{NOTEBOOK}/pod/{{pod}}/logs"): Operation(
        "The newest lines of a notebook server's log",
        m.NotebookLogs,
        query={"tail": "how many lines, 1 to the gateway's maximum (the default)"},
    ),
    ("GET", f"{NOTEBOOK}/events"): Operation("A notebook server's Kubernetes Events", m.NotebookEvents),
    ("GET", f"{NOTEBOOK}/resource"): Operation("A notebook server's Notebook object", m.NotebookResource),
}

routes = web.RouteTableDef()


@routes.get(PATH, name="api_openapi")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document(), headers={"Cache-Control": "no-cache"})


@cache
def document() -> dict[str, Any]:
    models = (
        {m.Error}
        | {op.answer for op in OPERATIONS.values() if op.answer}
        | {op.body for op in OPERATIONS.values() if op.body}
    )
    # Validation mode for answers too: a field with a default may be absent, which is what clients must expect.
    keyed = [(model, VALIDATION) for model in sorted(models, key=lambda model: model.__name__)]
    _, schemas = models_json_schema(keyed, ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for (method, path), op in OPERATIONS.items():
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Notebook Gateway API",
            "version": "1",
            "description": "Notebook servers, configurations, policies, profiles and the audit log. "
            "Authenticate with `Authorization: Bearer <token>` (`notebook-gateway token`) or the session cookie.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
            },
        },
        "security": [{"bearer": []}, {"session": []}],
    }


def _operation(method: str, path: str, op: Operation) -> dict[str, Any]:
    name = re.sub(r"[^a-zA-Z0-9]+", "_", f"{method.lower()}{path.removeprefix('/api')}").strip("_")
    parameters = [
        {"name": part, "in": "path", "required": True, "schema": {"type": "string"}}
        for part in re.findall(r"\{(\w+)\}", path)
    ] + [
        {"name": key, "in": "query", "required": False, "description": text, "schema": {"type": "string"}}
        for key, text in op.query.items()
    ]
    error = {"description": "A refusal or failure", "content": _json(m.Error)}
    answer: dict[str, Any] = {"description": op.summary}
    content = _json(op.answer) if op.answer is not None else {}
    content.update({media: {"schema": schema} for media, schema in op.media.items()})
    answer["content"] = content or {"application/json": {"schema": {"type": "object"}}}
    operation: dict[str, Any] = {
        "operationId": name,
        "summary": op.summary,
        "tags": [op.tag],
        "responses": {str(op.status): answer, "default": error},
    }
    if parameters:
        operation["parameters"] = parameters
    if op.body is not None:
        operation["requestBody"] = {"required": True, "content": _json(op.body)}
    if path == PATH:
        operation["security"] = []  # public
    return operation


def _json(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}}
