"""Configurations (Kubeflow PodDefaults) JSON API: the web app's list route for the NEW SERVER form, and
create / delete for namespace admins, audited. Only a backend with `has_configurations` (kubernetes)
has PodDefaults; the others list none and refuse changes with 405.

Secrets are referred to by name only: no handler reads a Secret, and the audit records names, never values.
"""

from __future__ import annotations

import logging

from aiohttp import web

from .. import keys
from ..audit import Outcome
from ..backends.poddefaults import audit_details, configuration_item, poddefault_object
from ..errors import Forbidden, GatewayError, InvalidPath
from ..names import is_dns_label
from . import audit_request
from .bodies import read_json

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

MAX_BODY_BYTES = 64 * 1024


@routes.get("/api/namespaces/{namespace}/poddefaults", name="api_poddefaults")
async def list_poddefaults(request: web.Request) -> web.Response:
    namespace = _part(request, "namespace")
    request.app[keys.AUTHZ].require(request[keys.IDENTITY], namespace, "view")
    found = await request.app[keys.BACKEND].poddefaults(namespace)
    return _success(request, poddefaults=[configuration_item(obj) for obj in found])


@routes.post("/api/namespaces/{namespace}/poddefaults", name="api_create_poddefault")
async def create_poddefault(request: web.Request) -> web.Response:
    namespace = _part(request, "namespace")
    details: dict[str, object] = {}
    try:
        request.app[keys.AUDIT].require_writable()  # fail closed before acting
        request.app[keys.AUTHZ].require(request[keys.IDENTITY], namespace, "manage")
        body = poddefault_object(namespace, await read_json(request, MAX_BODY_BYTES))
        details.update(audit_details(body))
        created = await request.app[keys.BACKEND].create_poddefault(namespace, body)
    except GatewayError as exc:
        _emit(request, "configuration.create", _outcome(exc), namespace, details, exc)
        raise
    _emit(request, "configuration.create", "allowed", namespace, details, done=True)
    return _success(request, message="Configuration created.", poddefault=configuration_item(created))


@routes.delete("/api/namespaces/{namespace}/poddefaults/{name}", name="api_delete_poddefault")
async def delete_poddefault(request: web.Request) -> web.Response:
    namespace, name = _part(request, "namespace"), _part(request, "name")
    details: dict[str, object] = {"name": name}
    try:
        request.app[keys.AUDIT].require_writable()
        request.app[keys.AUTHZ].require(request[keys.IDENTITY], namespace, "manage")
        await request.app[keys.BACKEND].delete_poddefault(namespace, name)
    except GatewayError as exc:
        _emit(request, "configuration.delete", _outcome(exc), namespace, details, exc)
        raise
    _emit(request, "configuration.delete", "allowed", namespace, details, done=True)
    return _success(request, message=f"Configuration {name} deleted.")


def _part(request: web.Request, key: str) -> str:
    value = request.match_info[key]
    if not is_dns_label(value):
        raise InvalidPath(f"{key.capitalize()} {value[:100]!r} is not a valid DNS-1123 label.", field=key)
    return value


def _outcome(exc: GatewayError) -> Outcome:
    return "denied" if isinstance(exc, Forbidden) else "failed"


def _emit(
    request: web.Request,
    action: str,
    outcome: Outcome,
    namespace: str,
    details: dict[str, object],
    exc: GatewayError | None = None,
    *,
    done: bool = False,
) -> None:
    extra = {"error": exc.code} if exc is not None else {}
    reason = exc.message if exc is not None else ""
    audit_request.emit(
        request, action, outcome, namespace=namespace, reason=reason, details={**details, **extra}, done=done
    )


def _success(request: web.Request, **payload: object) -> web.Response:
    """The web app's envelope: `success`, `status` and `user`."""
    return web.json_response({"success": True, "status": 200, "user": request[keys.IDENTITY].subject, **payload})
