"""The catch-all handler: streams HTTP and WebSocket traffic to the notebook a path names.

The `/notebook/<ns>/<name>/` prefix is kept (notebooks run with `base_url = NB_PREFIX`), or replaced
as the server's Notebook annotations ask (VS Code, RStudio: `backends.proxy_annotations`), and the
rest of the path goes upstream exactly as the client sent it. Bodies stream both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import TypeGuard

import aiohttp
from aiohttp import web
from yarl import URL

from . import keys, proxy_headers, proxy_ws, routing
from .backends import UpstreamTokens
from .backends.proxy_annotations import DEFAULT, ProxyBehaviour
from .errors import BadRequest, Forbidden, NotebookNotReady, NotFound, UpstreamTimeout, UpstreamUnavailable
from .metrics import Metrics
from .routing import NotebookPath
from .upstream_http import InvalidResponse, UpstreamConnectError, UpstreamError, UpstreamResetError, UpstreamResponse
from .web import audit_request, limits

log = logging.getLogger(__name__)

# A response of known length up to this size is read whole and sent in one write (headers and
# body together); anything longer, or of unknown length (SSE, chunked), streams chunk by chunk.
SMALL_BODY_BYTES = 64 * 1024


async def handle(request: web.Request) -> web.StreamResponse:
    target = request[keys.NOTEBOOK_PATH]
    if target is None:
        raise NotFound()
    if not target.has_slash:
        location = target.prefix + (f"?{target.query}" if target.query else "")
        if request.method in ("GET", "HEAD"):
            raise web.HTTPFound(location)
        raise web.HTTPPermanentRedirect(location)  # 308 keeps the method and the body

    app = request.app
    identity = request[keys.IDENTITY]
    if not app[keys.ORIGINS].isolated and request.headers.get("Service-Worker") == "script":
        # On the gateway's origin a notebook's service worker would outlive the visit and act as its visitors.
        raise Forbidden("Notebooks may not register service workers in single-origin mode (GATEWAY_NOTEBOOK_ORIGINS).")
    # Authorize before looking anything up, so the answer does not reveal which notebooks exist.
    app[keys.AUTHZ].require(identity, target.namespace, "connect", target.name)
    backend = app[keys.BACKEND]
    base = backend.route(target.namespace, target.name)
    if base is None:
        notebook = await backend.get(target.namespace, target.name)  # NotebookNotFound -> 404
        status = notebook.status
        raise NotebookNotReady(
            f"Notebook server {target.namespace}/{target.name} is {status.phase}"
            + (f": {status.message}" if status.message else ".")
        )
    behaviour = backend.proxy_behaviour(target.namespace, target.name)  # VS Code, RStudio: from annotations
    url = routing.upstream_url(base, target) if behaviour is DEFAULT else behaviour.upstream_url(base, target)
    app[keys.ACTIVITY].touch_request(target.namespace, target.name, request.method, target.rest)
    token = backend.upstream_token(target.namespace, target.name) if _holds_tokens(backend) else None
    # Per-user caps (429 beyond them), so that one user cannot take every connection to notebooks.
    user = identity.subject
    if proxy_ws.is_upgrade(request):
        app[keys.AUDIT].require_writable()  # its notebook.access event is written when it closes
        with app[keys.WEBSOCKET_SLOTS].hold(user), app[keys.UPSTREAM_SLOTS].hold(user):
            return await _forward_websocket(request, url, target, token, behaviour)
    _audit_access(request, target)
    with app[keys.UPSTREAM_SLOTS].hold(user):
        await limits.send_continue(request)  # authenticated and authorised: now the body may come
        return await _forward_http(request, url, target, token, behaviour)


# Asked once per backend class: a check against a runtime Protocol inspects the class's attributes every time.
_TOKEN_CLASSES: dict[type, bool] = {}


def _holds_tokens(backend: object) -> TypeGuard[UpstreamTokens]:
    kind = type(backend)
    known = _TOKEN_CLASSES.get(kind)
    if known is None:
        known = _TOKEN_CLASSES[kind] = issubclass(kind, UpstreamTokens)
    return known


def _audit_access(request: web.Request, target: NotebookPath) -> None:
    """`notebook.access` for a session's first request to a server (or every request: GATEWAY_AUDIT_ACCESS_EVENTS)."""
    session = request.get(keys.SESSION)
    # Bearer clients have no session: their subject stands in, once per `access_ttl_s`.
    who = session.id if session is not None else f"bearer:{request[keys.IDENTITY].subject}"
    request.app[keys.AUDIT].emit_first(
        (who, target.namespace, target.name),
        lambda: audit_request.event(
            request,
            "notebook.access",
            "allowed",
            namespace=target.namespace,
            notebook=target.name,
            details={"kind": "http", "method": request.method, "path": request.path[:500]},
        ),
    )


@contextlib.contextmanager
def upstream_errors(target: NotebookPath, metrics: Metrics, timeout_s: float) -> Iterator[None]:
    """The one place where the upstream clients' errors (ours for HTTP, aiohttp's for WebSockets)
    become the gateway's 502 and 504."""
    who = f"{target.namespace}/{target.name}"
    try:
        yield
    except TimeoutError:  # asyncio.timeout, and the clients' connect and read timeouts
        metrics.upstream_errors.labels("timeout").inc()
        raise UpstreamTimeout(f"Notebook server {who} did not answer within {timeout_s:g}s.") from None
    except UpstreamConnectError:
        metrics.upstream_errors.labels("unavailable").inc()
        raise UpstreamUnavailable(f"Notebook server {who} did not answer: connection refused.") from None
    except UpstreamResetError:
        metrics.upstream_errors.labels("reset").inc()
        raise UpstreamUnavailable(f"Notebook server {who} did not answer: connection reset.") from None
    except InvalidResponse as exc:
        metrics.upstream_errors.labels("unavailable").inc()
        log.info("bad response from notebook server %s: %.200s", who, exc)
        raise UpstreamUnavailable(f"Notebook server {who} did not answer: invalid response.") from None
    except aiohttp.ClientConnectorError:
        metrics.upstream_errors.labels("unavailable").inc()
        raise UpstreamUnavailable(f"Notebook server {who} did not answer: connection refused.") from None
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        metrics.upstream_errors.labels("reset").inc()
        raise UpstreamUnavailable(f"Notebook server {who} did not answer: connection reset.") from None
    except aiohttp.ClientError as exc:  # malformed response, bad chunking, failed handshake, ...
        metrics.upstream_errors.labels("unavailable").inc()
        log.info("bad response from notebook server %s: %.200s", who, exc)
        raise UpstreamUnavailable(f"Notebook server {who} did not answer: invalid response.") from None


class _HeaderDeadline:
    """Bounds the time the upstream takes, not the client: paused while the client's body arrives."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.timeout = asyncio.timeout(timeout_s)
        self.active = False

    def pause(self) -> None:
        if self.active:
            self.timeout.reschedule(None)

    def restart(self) -> None:
        if self.active:
            self.timeout.reschedule(asyncio.get_running_loop().time() + self.timeout_s)


async def _request_body(content: aiohttp.StreamReader, deadline: _HeaderDeadline) -> AsyncIterator[bytes]:
    """The client's body as it arrives, never held whole: aiohttp's flow control bounds the buffer,
    and the upstream client does not ask for the next chunk until the upstream has room for it."""
    while True:
        deadline.pause()
        chunk = await content.readany()
        deadline.restart()  # from here on the upstream must take the chunk (or answer) in time
        if not chunk:
            return
        yield chunk


async def _forward_http(
    request: web.Request, url: URL, target: NotebookPath, token: str | None, behaviour: ProxyBehaviour
) -> web.StreamResponse:
    app = request.app
    settings = app[keys.SETTINGS]
    metrics = app[keys.METRICS]
    policy = proxy_headers.policy_for(settings)
    headers = proxy_headers.upstream_headers(request, policy, request[keys.IDENTITY])
    proxy_headers.set_upstream_token(headers, token)
    behaviour.set_headers(headers, policy.drop_websocket)
    deadline = _HeaderDeadline(settings.upstream_timeout_s)
    # A body keeps the client's Content-Length when it sent one; otherwise it goes chunked.
    body = _request_body(request.content, deadline) if request.body_exists else None
    with upstream_errors(target, metrics, settings.upstream_timeout_s):
        async with deadline.timeout:
            deadline.active = True
            sent = time.perf_counter()
            try:
                # A notebook's redirect is for the browser to follow: the client never follows one.
                upstream = await app[keys.HTTP].request(request.method, url, headers, body)
            finally:
                deadline.active = False
                request[keys.UPSTREAM_S] = time.perf_counter() - sent
        length = upstream.content_length
        if length is not None and length <= SMALL_BODY_BYTES and request.method != "HEAD":
            try:
                payload = await upstream.read()
            finally:
                upstream.release()  # back to the pool when complete; closed when not
            return web.Response(
                status=upstream.status,
                reason=upstream.reason,
                headers=proxy_headers.downstream_headers(upstream.headers, _worker_scope(request, target)),
                body=payload,
            )
    try:
        return await _stream_response(request, upstream, target, metrics)
    finally:
        upstream.release()  # back to the pool when complete; closed when not


def _worker_scope(request: web.Request, target: NotebookPath) -> str | None:
    """The widest service worker scope a notebook may allow: its own prefix on its own origin, none on the gateway's."""
    return target.prefix if request.app[keys.ORIGINS].isolated else None


async def _stream_response(
    request: web.Request, upstream: UpstreamResponse, target: NotebookPath, metrics: Metrics
) -> web.StreamResponse:
    """Send the upstream's response on as it arrives. Once headers are out, an error cannot become
    an error page any more: the client connection is cut so that it sees a truncated response."""
    response = web.StreamResponse(
        status=upstream.status,
        reason=upstream.reason,
        headers=proxy_headers.downstream_headers(upstream.headers, _worker_scope(request, target)),
    )
    try:
        await response.prepare(request)  # headers go out now: SSE clients see the stream open
    except ConnectionError:
        upstream.close()
        return response  # the client left while the notebook was answering
    while True:
        try:
            chunk = await upstream.readany()
        except (UpstreamError, TimeoutError) as exc:
            kind = "timeout" if isinstance(exc, TimeoutError) else "reset"
            metrics.upstream_errors.labels(kind).inc()
            log.warning(
                "notebook server %s/%s broke off a response (%s): %.200r", target.namespace, target.name, kind, exc
            )
            upstream.close()
            if request.transport is not None:
                request.transport.close()
            return response
        if not chunk:
            break
        try:
            await response.write(chunk)
        except ConnectionError:  # the client went away; nothing left to tell it
            log.debug("client left during a response from %s/%s", target.namespace, target.name)
            upstream.close()
            return response
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


async def _forward_websocket(
    request: web.Request, url: URL, target: NotebookPath, token: str | None, behaviour: ProxyBehaviour
) -> web.StreamResponse:
    app = request.app
    settings = app[keys.SETTINGS]
    if not web.WebSocketResponse().can_prepare(request).ok:
        raise BadRequest("Invalid WebSocket handshake.")
    policy = proxy_headers.policy_for(settings)
    headers = proxy_headers.upstream_headers(request, policy, request[keys.IDENTITY], websocket=True)
    proxy_headers.set_upstream_token(headers, token)
    behaviour.set_headers(headers, policy.drop_websocket)
    with upstream_errors(target, app[keys.METRICS], settings.upstream_timeout_s):
        try:
            async with asyncio.timeout(settings.upstream_timeout_s):
                upstream = await proxy_ws.connect(app[keys.WS_HTTP], url, headers, proxy_ws.offered_protocols(request))
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status < 400:
                raise  # it answered, but not as a WebSocket: 502 from the boundary
            return _refused(request, target, exc.status)
    return await proxy_ws.relay(request, upstream, target)


def _refused(request: web.Request, target: NotebookPath, status: int) -> web.Response:
    """The notebook said no to the upgrade (403 for a bad Origin, 404 for no such kernel): pass its
    status on, so that Jupyter's front end reacts as it would without the gateway."""
    request.app[keys.METRICS].upstream_errors.labels("refused").inc()
    message = f"Notebook server {target.namespace}/{target.name} refused the WebSocket ({status})."
    log.info("%s", message)
    return web.json_response(
        {"error": "upstream_refused", "message": message, "request_id": request.get(keys.REQUEST_ID, "-")},
        status=status,
    )
