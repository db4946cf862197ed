"""How the gateway answers with an error: a page for a browser navigation, JSON for everything else.

Shared by the edges (the middleware chain, `/oauth2/auth`), so that every refusal looks the same."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from .. import keys
from ..errors import GatewayError


def wants_html(request: web.Request) -> bool:
    """True for a browser navigation; API calls, XHR/fetch and WebSockets get JSON."""
    return is_navigation(request.headers, request.path)


def is_navigation(headers: Mapping[str, str], path: str) -> bool:
    """Whether a request for `path` with these headers is a browser navigation (not an API call, XHR or fetch)."""
    if path.startswith("/api/") or headers.get("X-Requested-With"):
        return False
    if headers.get("Sec-Fetch-Mode", "navigate") != "navigate":
        return False
    return "text/html" in headers.get("Accept", "")


def render_error(request: web.Request, exc: GatewayError) -> web.Response:
    """The page or JSON body for an error: never a traceback, always the request id."""
    request_id = request.get(keys.REQUEST_ID, "-")
    if wants_html(request):
        template = request.app[keys.TEMPLATES].get_template("error.html")
        identity = request.get(keys.IDENTITY)
        body = template.render(
            status=exc.status,
            code=exc.code,
            message=exc.message,
            request_id=request_id,
            user=identity.subject if identity is not None else None,  # the layout shows SIGN OUT then
        )
        return web.Response(status=exc.status, text=body, content_type="text/html", headers=exc.headers)
    # `success`/`status`/`log` are what Kubeflow's Jupyter web app clients read; `error`/`message` ours.
    payload: dict[str, object] = {
        "error": exc.code,
        "message": exc.message,
        "success": False,
        "status": exc.status,
        "log": exc.message,
        "request_id": request_id,
    }
    if exc.field:
        payload["field"] = exc.field
    return web.json_response(payload, status=exc.status, headers=exc.headers)
