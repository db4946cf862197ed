"""The middleware chain, outermost first, and the access log.

1. `request_context`: a request id in a ContextVar and on the request, for every log line below.
2. `error_pages`: `GatewayError` -> an HTML page for browsers or JSON for API clients; an
   unexpected error is logged once, with its traceback, and answered as a plain 500.
3. `canonical_path`: the one path parse (`routing.parse`); its result is on the request.
   Then `web.notebook_login.notebook_origin` keeps each host to its job (isolated notebook origins).
4. `authenticate(public=...)`: attaches the `Identity` from a bearer token or the session cookie
   (on a notebook's own origin: that notebook's credential), refuses cross-site state changes, and
   fails closed (`LoginRequired`) for every route not named public.
`measure` sits just inside `request_context`, so it counts the responses `error_pages` renders.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Middleware
from aiohttp.web_request import BaseRequest

from . import keys, routing
from .errors import Forbidden, GatewayError, LoginRequired, NotFound
from .forwarded import client_address, cross_origin_reason
from .logs import REQUEST_ID, AccessRecord, scrub
from .web import audit_request, notebook_login
from .web.responses import render_error, wants_html
from .web.signin import identify

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# A client may pass its own request id for correlation, if it is short and plain: it goes in the access log
# beside ours, never in its place, so a client cannot give its requests another request's id in the audit log.
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")
# Ours: a random prefix per process (so replicas never collide) and a counter (no syscall per request).
_ID_PREFIX = secrets.token_hex(8) + "-"
_ID_COUNTER = itertools.count(1)


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    offered = request.headers.get("X-Request-Id", "")
    if _CLIENT_REQUEST_ID.fullmatch(offered):
        request[keys.CLIENT_REQUEST_ID] = offered
    request_id = f"{_ID_PREFIX}{next(_ID_COUNTER):x}"
    request[keys.REQUEST_ID] = request_id
    settings = request.app[keys.SETTINGS]
    request[keys.CLIENT_IP] = client_address(
        request.remote, request.headers.get("X-Forwarded-For"), settings.trusted_proxies
    )
    token = REQUEST_ID.set(request_id)
    try:
        response = await handler(request)
        if not response.prepared:
            response.headers["X-Request-Id"] = request_id
        return response
    except web.HTTPException as exc:
        exc.headers["X-Request-Id"] = request_id
        raise
    finally:
        REQUEST_ID.reset(token)


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except LoginRequired as exc:
        if wants_html(request) and request.method in ("GET", "HEAD"):
            # A browser goes to sign in and comes back; an API call, XHR or WebSocket gets a 401.
            raise web.HTTPFound(f"/oauth2/start?{urlencode({'rd': request.raw_path})}") from None
        audit_request.refusal(request, exc)
        return render_error(request, exc)
    except GatewayError as exc:  # expected: one line, no traceback
        log.info("%s %s refused: %s %s", request.method, scrub(request.path_qs), exc.status, exc.code)
        audit_request.refusal(request, exc)  # access.denied for a 401 / 403 on a notebook or API route
        return render_error(request, exc)
    except web.HTTPNotFound:
        return render_error(request, NotFound())
    except web.HTTPException:
        raise  # aiohttp's own redirects and 405s
    except Exception:  # CancelledError is a BaseException, so it passes through
        log.exception("unhandled error in %s %s", request.method, scrub(request.path_qs))
        return render_error(request, GatewayError())


@web.middleware
async def canonical_path(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[keys.NOTEBOOK_PATH] = routing.parse(request.raw_path)
    return await handler(request)


# Sent by the gateway's pages with the requests they make on their own (polling a list, tailing the
# audit log): such a request does not keep the session from idling out. It can only shorten a session.
BACKGROUND_HEADER = "X-Gateway-Background"


def authenticate(*, public: frozenset[str], public_prefixes: tuple[str, ...] = ()) -> Middleware:
    """Attach the requester's `Identity`, or refuse. Public routes are served without looking at the
    session (so health checks never touch Redis); every other route, the proxy included, needs one."""

    @web.middleware
    async def impl(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.route.name in public or request.path.startswith(public_prefixes):
            return await handler(request)
        touch = BACKGROUND_HEADER not in request.headers
        # On a notebook's own origin, its credential stands in for the session cookie, and that origin is "this site".
        origin = request.get(keys.NOTEBOOK_ORIGIN)
        if origin is not None:
            identity, session = await notebook_login.identify(request, touch=touch)
        else:
            identity, session = await identify(request, touch=touch)
            origin = request.app[keys.SETTINGS].base_url
        if identity is None:
            raise LoginRequired()
        request[keys.IDENTITY] = identity
        if session is None:  # a bearer token: no cookie, so no cross-site request to fear
            return await handler(request)
        websocket = request.headers.get("Upgrade", "").lower() == "websocket"
        reason = cross_origin_reason(request.method, request.headers, origin, websocket)
        if reason is not None:
            raise Forbidden(reason)
        request[keys.SESSION] = session
        return await handler(request)

    return impl


def route_class(request: web.Request) -> str:
    """A low-cardinality label for metrics: proxy, api, health or page."""
    path = request.path
    if path.startswith(routing.NOTEBOOK_ROOT):
        return "proxy"
    if path.startswith("/api/"):
        return "api"
    if path in ("/healthz", "/readyz", "/metrics"):
        return "health"
    return "page"


@web.middleware
async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[keys.METRICS]
    started = time.perf_counter()
    label = route_class(request)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics.observe_request(label, request.method, status, time.perf_counter() - started)
        identity = request.get(keys.IDENTITY)
        if identity is not None:
            metrics.active.seen(identity.subject)


class AccessLogger(AbstractAccessLogger):
    """One line per request (docs/operators.md, "Access log"): who (our identity, never a credential),
    the client behind trusted proxies, the method, the path with secret query values scrubbed, the
    status, bytes sent, the duration and, for proxied requests, the notebook's time to its headers.
    Its fields are flat, so the JSON formatter writes them as one object a log pipeline reads as is."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        identity = request.get(keys.IDENTITY)
        upstream_s = request.get(keys.UPSTREAM_S)
        path = scrub(request.path_qs)
        status = response.status
        fields: dict[str, object] = {
            "request_id": request.get(keys.REQUEST_ID, "-"),
            "client_request_id": request.get(keys.CLIENT_REQUEST_ID),  # the client's own, for its correlation
            "user": identity.subject if identity is not None else None,
            "client": request.get(keys.CLIENT_IP, request.remote),  # behind trusted proxies: the client they name
            "remote": request.remote,  # the peer itself (a proxy, or the client)
            "method": request.method,
            "path": path,
            "status": status,
            "bytes": response.body_length,
            "duration_ms": round(time * 1000, 2),
            "upstream_ms": None if upstream_s is None else round(upstream_s * 1000, 2),
        }
        # An `AccessRecord` rather than `logger.info`, which would walk the stack for its caller (always this
        # method) and fill in what no format prints: one record per request, so it counts.
        logger.handle(AccessRecord(logger.name, f"{request.method} {path} {status} {time * 1000:.1f}ms", fields))
