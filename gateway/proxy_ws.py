"""The WebSocket leg of the proxy: connect upstream first, then relay frames both ways.

Frames are relayed as they are (text stays undecoded bytes), pings and pongs cross over, and a
close on either side is carried to the other with its code and reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import aiohttp
from aiohttp import WebSocketError, WSCloseCode, WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from . import keys
from .errors import ServiceUnavailable
from .routing import NotebookPath
from .sessions import SessionStore
from .web import audit_request

log = logging.getLogger(__name__)

ClientSide = web.WebSocketResponse[Literal[False]]
UpstreamSide = aiohttp.ClientWebSocketResponse[Literal[False]]
Side = ClientSide | UpstreamSide

# How long a closing handshake may take on either leg before the connection is just dropped.
CLOSE_TIMEOUT_S = 10.0
# How often an open WebSocket's session is read again, so that a sign-out on any replica, a back-channel logout or
# the session's expiry closes it within about this long. One key per socket a second, sent with the replica's other
# reads in one MGET (sessions._ReadBatcher), not a round trip of its own.
SESSION_RECHECK_S = 1.0


# Close reasons for the codes the gateway itself closes a leg with.
_REASONS: dict[int, bytes] = {WSCloseCode.MESSAGE_TOO_BIG: b"message too big"}


def is_upgrade(request: web.Request) -> bool:
    """True for a WebSocket handshake (anything else with `Upgrade` is proxied as plain HTTP)."""
    upgrade = request.headers.get("Upgrade")
    return upgrade is not None and upgrade.lower() == "websocket"


def offered_protocols(request: web.Request) -> tuple[str, ...]:
    """The subprotocols the client offered, in its order of preference."""
    value = request.headers.get("Sec-WebSocket-Protocol", "")
    return tuple(proto for part in value.split(",") if (proto := part.strip()))


def sendable(code: int | None, fallback: int = WSCloseCode.OK) -> int:
    """A close code that may go on the wire (1005, 1006 and 1015 are only ever reported locally)."""
    if code is not None and (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        return code
    return fallback


async def connect(
    session: aiohttp.ClientSession,
    url: URL,
    headers: CIMultiDict[str],
    protocols: tuple[str, ...],
    *,
    max_msg_size: int,
) -> UpstreamSide:
    """Open the upstream WebSocket; aiohttp errors are left to the caller's fault boundary.

    `max_msg_size` bounds a message on each leg: aiohttp refuses a frame from its declared length,
    before reading it, so one huge frame costs nothing and closes its leg with 1009."""
    return await session.ws_connect(
        url,
        protocols=protocols,
        headers=headers,
        autoping=False,  # pings are the client's, and its pongs must come from the notebook
        autoclose=False,  # closes are relayed, not answered here
        max_msg_size=max_msg_size,
        compress=0,  # loopback or cluster network: compression only costs CPU here
        decode_text=False,
        timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT_S),
    )


@dataclass(slots=True)
class Traffic:
    bytes_in: int = 0  # client -> notebook
    bytes_out: int = 0  # notebook -> client
    touch: Callable[[], None] = lambda: None  # each message either way is activity (see gateway/activity.py)


@dataclass(frozen=True, slots=True)
class Ending:
    """Why a leg stopped: its peer's CLOSE (with code and reason), CLOSING (closed locally by the
    gateway), or CLOSED / ERROR (the connection was lost)."""

    kind: WSMsgType
    code: int | None = None
    reason: bytes = b""


async def _pump(source: Side, sink: Side, traffic: Traffic, inbound: bool) -> Ending:
    """Copy frames from `source` to `sink` until `source` stops."""
    while True:
        msg = await source.receive()
        kind = msg.type
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            data: bytes = msg.data
            traffic.touch()
            if inbound:
                traffic.bytes_in += len(data)
            else:
                traffic.bytes_out += len(data)
            await sink.send_frame(data, kind)
        elif kind is WSMsgType.PING:
            await sink.ping(msg.data)
        elif kind is WSMsgType.PONG:
            await sink.pong(msg.data)
        elif kind is WSMsgType.CLOSE:
            reason = msg.extra if isinstance(msg.extra, str) else ""
            return Ending(kind, int(msg.data), reason.encode()[:123])  # 123: the most a frame holds
        elif kind is WSMsgType.ERROR and isinstance(msg.data, WebSocketError):
            # aiohttp already closed `source` with this code (1009: a message over the limit): tell the other leg.
            return Ending(kind, msg.data.code, _REASONS.get(msg.data.code, b""))
        else:
            return Ending(kind)


async def relay(
    request: web.Request, upstream: UpstreamSide, target: NotebookPath
) -> web.WebSocketResponse[Literal[False]]:
    """Accept the client with the subprotocol the notebook chose, relay until one side closes."""
    app = request.app
    client: ClientSide = web.WebSocketResponse(
        protocols=(upstream.protocol,) if upstream.protocol else (),
        autoping=False,
        autoclose=False,
        max_msg_size=app[keys.SETTINGS].websocket_max_message_bytes,
        compress=False,
        decode_text=False,
        timeout=CLOSE_TIMEOUT_S,
    )
    try:
        await client.prepare(request)
    except BaseException:
        await upstream.close(code=WSCloseCode.GOING_AWAY)
        raise

    sockets = app[keys.WEBSOCKETS]
    metrics = app[keys.METRICS]
    sockets.add(client)
    metrics.websockets_open.inc()
    # Checked when the policy changes (the only moment the decision can change), not per message.
    release = app[keys.POLICIES].hold(request[keys.IDENTITY], target.namespace, target.name, lambda: _revoke(client))
    session = request.get(keys.SESSION)  # None for a bearer token: nothing to sign out of
    watcher = _watch_session(app[keys.SESSIONS], session.id, client) if session is not None else None
    traffic = Traffic(touch=functools.partial(app[keys.ACTIVITY].touch, target.namespace, target.name))
    started = time.monotonic()
    try:
        await _run(client, upstream, traffic, target)
    finally:
        release()
        if watcher is not None:
            watcher.cancel()
        sockets.discard(client)
        metrics.websockets_open.dec()
        _audit(request, target, traffic, time.monotonic() - started)
    return client


def _revoke(client: ClientSide, reason: bytes = b"access revoked") -> None:
    """Access was revoked: close the client with 1008 (policy violation); the relay then ends the notebook leg."""
    task = asyncio.get_running_loop().create_task(client.close(code=WSCloseCode.POLICY_VIOLATION, message=reason))
    _closing.add(task)  # the loop keeps only weak references to tasks
    task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task[bool]] = set()


def _watch_session(sessions: SessionStore, session_id: str, client: ClientSide) -> asyncio.Task[None]:
    """Close the client (1008 "signed out") once its session is gone from the store. While the store cannot
    answer, the socket stays: nobody can sign out meanwhile, and the next check decides."""

    async def watch() -> None:
        while not client.closed:
            await asyncio.sleep(SESSION_RECHECK_S)
            try:
                if await sessions.load(session_id, touch=False) is None:  # not the user's use: no idle reset
                    _revoke(client, b"signed out")
                    return
            except ServiceUnavailable:
                continue

    return asyncio.get_running_loop().create_task(watch(), name="ws-session-watch")


async def _run(client: ClientSide, upstream: UpstreamSide, traffic: Traffic, target: NotebookPath) -> None:
    inbound = asyncio.create_task(_pump(client, upstream, traffic, True), name="ws-client-to-notebook")
    outbound = asyncio.create_task(_pump(upstream, client, traffic, False), name="ws-notebook-to-client")
    try:
        done, _ = await asyncio.wait((inbound, outbound), return_when=asyncio.FIRST_COMPLETED)
        if inbound in done:
            await _finish(client, upstream, inbound, from_client=True)
        else:
            await _finish(client, upstream, outbound, from_client=False)
    except asyncio.CancelledError:
        # aiohttp cancels the handler when the client's connection is lost (handler_cancellation),
        # possibly while it was closing the client leg itself (1009 for a message over the limit):
        # the client pump ends a moment later with that code, which the notebook should hear.
        await asyncio.wait((inbound,), timeout=1.0)
        ending = inbound.result() if inbound.done() and not inbound.cancelled() and not inbound.exception() else None
        code = ending.code if ending is not None and ending.kind is WSMsgType.ERROR and ending.code else None
        with contextlib.suppress(Exception):
            if code is None:
                await upstream.close(code=WSCloseCode.GOING_AWAY, message=b"client went away")
            else:
                await upstream.close(code=code, message=ending.reason if ending else b"")
        raise
    except Exception:
        log.exception("WebSocket relay for %s failed", target.prefix)
    finally:
        for task in (inbound, outbound):
            if not task.done():
                task.cancel()
        # gather(return_exceptions=True) collects the pumps' ends without swallowing our own cancellation.
        await asyncio.gather(inbound, outbound, return_exceptions=True)
        # Whatever happened above, neither leg outlives the relay.
        if not upstream.closed:
            with contextlib.suppress(Exception):
                await upstream.close(code=WSCloseCode.GOING_AWAY)
        if not client.closed:
            with contextlib.suppress(Exception):
                await client.close(code=WSCloseCode.INTERNAL_ERROR)


async def _finish(client: ClientSide, upstream: UpstreamSide, first: asyncio.Task[Ending], from_client: bool) -> None:
    """Carry the end of the leg that stopped first over to the other leg."""
    exc = first.exception()
    if exc is not None and not isinstance(exc, ConnectionError):
        raise exc  # a bug, not a disconnect: _run closes both legs
    # A pump that failed to *send* (ConnectionError) means the other leg is the one that is gone.
    ending = first.result() if exc is None else Ending(WSMsgType.CLOSED)
    client_ended = from_client == (exc is None)

    if client_ended:
        code, reason = ending.code, ending.reason
        if ending.kind is WSMsgType.CLOSING:
            # Closed by the gateway itself (shutdown): the notebook hears the same "going away".
            code, reason = WSCloseCode.GOING_AWAY, b"gateway shutting down"
        elif code is None:
            code, reason = WSCloseCode.GOING_AWAY, b"client went away"
        await upstream.close(code=sendable(code), message=reason)
        # Echo the notebook's answer (or else the client's own code) back to the client.
        await client.close(code=sendable(upstream.close_code, sendable(code)), message=reason)
    else:
        code, reason = ending.code, ending.reason
        if code is None:
            code, reason = WSCloseCode.INTERNAL_ERROR, b"notebook server connection lost"
        await client.close(code=sendable(code), message=reason)
        await upstream.close(code=sendable(code))


def _audit(request: web.Request, target: NotebookPath, traffic: Traffic, duration_s: float) -> None:
    event = audit_request.event(
        request,
        "notebook.access",
        "allowed",
        namespace=target.namespace,
        notebook=target.name,
        details={
            "kind": "websocket",
            "path": request.raw_path.partition("?")[0],  # the query may carry tokens
            "duration_s": round(duration_s, 3),
            "bytes_in": traffic.bytes_in,
            "bytes_out": traffic.bytes_out,
        },
    )
    request.app[keys.AUDIT].emit_after(event)
