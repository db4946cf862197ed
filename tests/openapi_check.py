"""Checks the JSON API's live answers against `/api/openapi.json`: a middleware that every gateway built by
`gateway_factory` gets while a module uses the `openapi_checked` fixture (tests/conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from aiohttp import web

from gateway.web.openapi import OPERATIONS, document


def schema_for(ref: str) -> dict[str, Any]:
    """A JSON Schema for one of the document's `$ref`s, with the components it may refer to beside it."""
    return {"$ref": ref, "components": document()["components"]}


def answer_schema(method: str, path: str, status: int) -> dict[str, Any] | bool | None:
    """What the document says `method path` answers with `status` in JSON; None for a route it does not
    describe, False (no JSON is valid) when it describes that answer in other types only."""
    operation = document()["paths"].get(path, {}).get(method.lower())
    if operation is None:
        return None
    described = operation["responses"].get(str(status), operation["responses"]["default"])
    if "application/json" not in described["content"]:
        return False
    schema: dict[str, Any] = described["content"]["application/json"]["schema"]
    return schema_for(schema["$ref"]) if "$ref" in schema else schema


@dataclass
class ResponseChecker:
    checked: int = 0
    mismatches: list[str] = field(default_factory=list)

    def check(self, method: str, path: str, status: int, body: object) -> None:
        schema = answer_schema(method, path, status)
        if schema is None:
            return
        self.checked += 1
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(body), key=lambda e: list(e.path))
        for error in errors[:3]:
            where = "/".join(str(part) for part in error.path)
            self.mismatches.append(f"{method} {path} -> {status}: at {where or '(top)'}: {error.message[:300]}")

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        resource = request.match_info.route.resource
        path = resource.canonical if resource is not None else ""
        if (request.method, path) in OPERATIONS and isinstance(response, web.Response):
            if response.content_type == "application/json" and isinstance(response.body, bytes):
                self.check(request.method, path, response.status, json.loads(response.body))
        return response
