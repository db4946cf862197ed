"""The WebSocket leg of the proxy: both handshakes, then the frames relayed as bytes, as nginx does.

After the notebook's 101 and the client's, what one side sends goes to the other unchanged: the
client's masked frames to the notebook, the notebook's frames to the client. Only frame headers
are read (`wsframes`), for the message size limit, the traffic count and the closing handshake;
payloads are neither copied nor unmasked. No extension is negotiated on either leg, so nothing in
a frame needs rewriting. The gateway writes frames of its own only to end a WebSocket: a message
over the limit (1009), access revoked (1008), shutdown (1001), or one leg lost without a close.

aiohttp keeps owning both connections (its server and client protocols, with their connection
tracking, shutdown and TCP_NODELAY); each relay direction is installed as the payload parser of the
connection it reads from, the hook aiohttp's own WebSocket reader uses, and writes straight to the
other connection's transport.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import WSCloseCode, hdrs, web
from aiohttp.client_proto import ResponseHandler
from multidict import CIMultiDict
from yarl import URL

from . import keys, wsframes
from .errors import ServiceUnavailable
from .routing import NotebookPath
from .sessions import SessionStore
from .web import audit_request

log = logging.getLogger(__name__)

# How long a closing handshake may take on either leg before the connection is just dropped.
CLOSE_TIMEOUT_S = 10.0
# How often an open WebSocket's session is read again, so that a sign-out on any replica, a back-channel logout or
# the session's expiry closes it within about this long. One key per socket a second, sent with the replica's other
# reads in one MGET (sessions._ReadBatcher), not a round trip of its own.
SESSION_RECHECK_S = 1.0

# Close reasons for the codes the gateway itself closes both legs with when a frame breaks the rules.
_REASONS: dict[int, bytes] = {
    WSCloseCode.MESSAGE_TOO_BIG: b"message too big",
    WSCloseCode.PROTOCOL_ERROR: b"protocol error",
}
# What a frame header makes of its frame (`_Direction.admit`).
_FORWARD = 0
_DROP = -1  # after a close: nothing more goes that way


def is_upgrade(request: web.Request) -> bool:
    """True for a WebSocket handshake (anything else with `Upgrade` is proxied as plain HTTP)."""
    upgrade = request.headers.get("Upgrade")
    return upgrade is not None and upgrade.lower() == "websocket"


def offered_protocols(request: web.Request) -> tuple[str, ...]:
    """The subprotocols the client offered, in its order of preference."""
    value = request.headers.get("Sec-WebSocket-Protocol", "")
    return tuple(proto for part in value.split(",") if (proto := part.strip()))


@dataclass(frozen=True, slots=True)
class Upstream:
    """The notebook's side after its 101: the connection, and the subprotocol it chose."""

    response: aiohttp.ClientResponse  # closing it closes the connection and settles aiohttp's accounts
    protocol: ResponseHandler
    transport: asyncio.Transport
    subprotocol: str | None


async def connect(
    session: aiohttp.ClientSession, url: URL, headers: CIMultiDict[str], protocols: tuple[str, ...]
) -> Upstream:
    """The upstream handshake, as `ws_connect` does it but keeping the raw connection; aiohttp errors
    (WSServerHandshakeError for an answer other than a proper 101) are left to the caller's fault boundary.

    No Sec-WebSocket-Extensions is offered (the client's was dropped with the other handshake headers):
    compression would need each frame rewritten, and on loopback or a cluster network it only costs CPU."""
    key = base64.b64encode(os.urandom(16)).decode()
    headers = CIMultiDict(headers)
    headers[hdrs.UPGRADE] = "websocket"
    headers[hdrs.CONNECTION] = "Upgrade"
    headers[hdrs.SEC_WEBSOCKET_VERSION] = "13"
    headers[hdrs.SEC_WEBSOCKET_KEY] = key
    if protocols:
        headers[hdrs.SEC_WEBSOCKET_PROTOCOL] = ",".join(protocols)
    # A redirect is the client's to follow (as on the HTTP leg), so it fails the handshake here.
    response = await session.request("GET", url, headers=headers, read_until_eof=False, allow_redirects=False)
    try:
        problem = _handshake_problem(response, key)
        if problem is not None:
            raise aiohttp.WSServerHandshakeError(
                response.request_info, response.history, message=problem, status=response.status,
                headers=response.headers,
            )  # fmt: skip
        connection = response.connection
        assert connection is not None and connection.protocol is not None and connection.transport is not None
        protocol = connection.protocol
        protocol.read_timeout = None  # an idle kernel is not a dead one
        chosen = [proto.strip() for proto in response.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "").split(",")]
        subprotocol = next((proto for proto in chosen if proto in protocols), None)  # as aiohttp picks
        return Upstream(response, protocol, connection.transport, subprotocol)
    except BaseException:
        response.close()
        raise


def _handshake_problem(response: aiohttp.ClientResponse, key: str) -> str | None:
    if response.status != 101:
        return "Invalid response status"
    if response.headers.get(hdrs.UPGRADE, "").lower() != "websocket":
        return "Invalid upgrade header"
    if response.headers.get(hdrs.CONNECTION, "").lower() != "upgrade":
        return "Invalid connection header"
    if response.headers.get(hdrs.SEC_WEBSOCKET_ACCEPT, "") != wsframes.accept_key(key.encode()):
        return "Invalid challenge response"
    if hdrs.SEC_WEBSOCKET_EXTENSIONS in response.headers:
        return "Extension not offered"  # its frames could not be relayed as they are
    return None


@dataclass(slots=True)
class Traffic:
    bytes_in: int = 0  # client -> notebook, payload bytes of data frames
    bytes_out: int = 0  # notebook -> client
    touch: Callable[[], None] = lambda: None  # each data frame either way is activity (see gateway/activity.py)


class _Direction:
    """One way of the relay: what `source` sends goes to `sink` as it came, frame by frame.

    aiohttp's protocol for the source connection calls `feed_data` with each read and `feed_eof`
    when that connection is lost. The scan keeps only a header cut by a read (at most 13 bytes)."""

    __slots__ = (
        "relay",
        "inbound",
        "source",
        "sink",
        "sink_protocol",
        "max_message",
        "traffic",
        "other",
        "remaining",
        "forward_frame",
        "message",
        "held",
        "forwarding",
        "got_close",
        "sent_close",
        "pending",
        "lost",
        "draining",
    )

    def __init__(
        self,
        relay: Relay,
        inbound: bool,
        source: asyncio.Transport,
        sink: asyncio.Transport,
        sink_protocol: Any,  # aiohttp's BaseProtocol of the sink connection: `writing_paused`, `_drain_helper`
        max_message: int,
        traffic: Traffic,
    ) -> None:
        self.relay = relay
        self.inbound = inbound  # client -> notebook: the gateway's own frames this way are masked
        self.source = source
        self.sink = sink
        self.sink_protocol = sink_protocol
        self.max_message = max_message
        self.traffic = traffic
        self.other: _Direction = self
        self.remaining = 0  # payload bytes of the current frame still to come
        self.forward_frame = True  # whether the current frame goes on
        self.message = 0  # bytes of the fragmented message in progress
        self.held = b""  # the start of a header cut by the end of a read
        self.forwarding = True  # False once a close went to `sink`: nothing follows it
        self.got_close = False  # `source` sent its close frame
        self.sent_close = False  # a close frame went to `sink`: the source's, or the gateway's own
        self.pending: bytes | None = None  # the gateway's close for `sink`, after the frame in flight
        self.lost = False  # the source connection is gone
        self.draining = False  # `source` paused until `sink` drains

    # -- aiohttp's payload parser interface ------------------------------------------------------

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        try:
            self._scan(data)
            if not self.forwarding:
                self.relay.check()
        except Exception:
            log.exception("WebSocket relay failed")
            self.relay.abort()
        return False, b""

    def feed_eof(self) -> None:
        if not self.lost:
            self.lost = True
            self.relay.lost(self)

    def set_exception(self, exc: BaseException, exc_cause: BaseException | None = None) -> None:
        """aiohttp's client protocol reports a read timeout here (there is none: see `connect`)."""
        self.relay.abort()

    # -- the scan --------------------------------------------------------------------------------

    def _scan(self, data: bytes) -> None:
        size = len(data)
        pos = 0
        run = 0 if self.remaining and self.forward_frame else -1  # where the bytes to pass on start
        if self.held:
            head = self.held + data[: wsframes.MAX_HEADER]
            header = wsframes.parse_header(head, 0)
            if header is None:
                self.held = head
                return
            held, self.held = self.held, b""
            pos = header[2] - len(held)
            if self._begin(header[0], header[1], data, -1, 0):
                self._write(held)
                run = 0
        while True:
            remaining = self.remaining
            if remaining:
                if remaining > size - pos:
                    self.remaining = remaining - (size - pos)
                    pos = size
                    break
                pos += remaining
                self.remaining = 0
            # A frame ends here: the place for the gateway's own close, if one waits.
            if self.pending is not None:
                if run >= 0:
                    self._write(memoryview(data)[run:pos])
                    run = -1
                self._send_pending()
            if pos >= size:
                break
            header = wsframes.parse_header(data, pos)
            if header is None:
                self.held = data[pos:]
                break
            first, length, header_size = header
            if self._begin(first, length, data, run, pos):
                if run < 0:
                    run = pos
            else:
                run = -1  # what came before was passed on by `_begin`
            pos += header_size
        if run >= 0 and pos > run:
            self._write(data if run == 0 and pos == size else memoryview(data)[run:pos])

    def _begin(self, first: int, length: int, data: bytes, run: int, pos: int) -> bool:
        """A frame starts at `pos`: is it passed on? If not, `data[run:pos]` (what the scan still owes the
        sink, when `run` >= 0) goes now. A frame that breaks the rules ends the WebSocket on both legs, its
        header and payload never sent."""
        self.remaining = length
        verdict = self._admit(first, length)
        forward = self.forward_frame = verdict == _FORWARD
        if not forward:
            if run >= 0:
                self._write(memoryview(data)[run:pos])
            if verdict > 0:
                self.relay.end(verdict, _REASONS[verdict])
        return forward

    def _admit(self, first: int, length: int) -> int:
        opcode = first & wsframes.OPCODE
        if not self.forwarding:
            if opcode == wsframes.OP_CLOSE:
                self.got_close = True
            return _DROP
        if first & wsframes.RSV or length >> 63:
            return WSCloseCode.PROTOCOL_ERROR
        if opcode <= wsframes.OP_BINARY:
            message = length if opcode else self.message + length
            if message > self.max_message:
                return WSCloseCode.MESSAGE_TOO_BIG
            self.message = 0 if first & wsframes.FIN else message
            traffic = self.traffic
            if self.inbound:
                traffic.bytes_in += length
            else:
                traffic.bytes_out += length
            traffic.touch()
            return _FORWARD
        if opcode > 10 or opcode < wsframes.OP_CLOSE:
            return WSCloseCode.PROTOCOL_ERROR
        if length > wsframes.MAX_CONTROL_PAYLOAD or not first & wsframes.FIN:
            return WSCloseCode.PROTOCOL_ERROR
        if opcode == wsframes.OP_CLOSE:  # relayed as it is; the sink's answer comes back the other way
            self.got_close = self.sent_close = True
            self.forwarding = False
        return _FORWARD

    # -- writing to the sink ---------------------------------------------------------------------

    def _write(self, chunk: bytes | memoryview) -> None:
        if self.other.lost:
            return  # the sink's connection is gone
        self.sink.write(chunk)
        if self.sink_protocol.writing_paused and not self.draining:
            # Backpressure: stop reading the source until the sink's buffer is below its low-water mark,
            # so that a slow reader holds up its peer instead of growing the gateway's memory.
            self.draining = True
            self.source.pause_reading()
            task = asyncio.get_running_loop().create_task(self._resume_when_drained())
            _background.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(_background.discard)

    async def _resume_when_drained(self) -> None:
        try:
            await self.sink_protocol._drain_helper()  # what aiohttp's own writers await
        except Exception:  # the sink is gone: feed_eof on its side ends the relay
            pass
        finally:
            self.draining = False
            if not self.lost and not self.source.is_closing():
                self.source.resume_reading()

    def send_close(self, code: int, reason: bytes) -> None:
        """The gateway's own close to `sink`, at the first frame boundary; nothing else follows it."""
        if self.sent_close or self.pending is not None:
            return
        self.forwarding = False
        if self.other.lost:
            self.sent_close = True
            return
        self.pending = wsframes.close_frame(code, reason, masked=self.inbound)
        if self.remaining == 0 or not self.forward_frame:
            self._send_pending()
        elif self.lost:
            self.sink.abort()  # the frame in flight will never end: the close cannot be framed
            self.sent_close = True

    def _send_pending(self) -> None:
        frame, self.pending = self.pending, None
        self.sent_close = True
        if frame is not None:
            self._write(frame)


_background: set[asyncio.Task[None]] = set()


class Relay:
    """One WebSocket after both handshakes: two directions, and when to close each connection."""

    def __init__(self, request: web.Request, upstream: Upstream, traffic: Traffic, max_message: int) -> None:
        client_transport = request.transport
        if client_transport is None or client_transport.is_closing():
            raise ConnectionResetError("the client left during the handshake")
        self.client_protocol = request.protocol
        self.upstream = upstream
        self.inbound = _Direction(
            self, True, client_transport, upstream.transport, upstream.protocol, max_message, traffic
        )
        self.outbound = _Direction(
            self, False, upstream.transport, client_transport, request.protocol, max_message, traffic
        )
        self.inbound.other, self.outbound.other = self.outbound, self.inbound
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._deadline: asyncio.TimerHandle | None = None

    def start(self) -> None:
        for transport in (self.inbound.source, self.outbound.source):
            _no_delay(transport)
        # What either side sent right after its handshake is fed at once.
        self.upstream.protocol.set_parser(self.outbound, self.outbound)
        self.client_protocol.set_parser(self.inbound)  # type: ignore[arg-type]  # any object with feed_data/feed_eof
        # A connection lost before its parser was ours (during the client's handshake) told nobody.
        for direction, protocol in ((self.outbound, self.upstream.protocol), (self.inbound, self.client_protocol)):
            if protocol.transport is None or protocol.transport.is_closing():
                direction.feed_eof()

    @property
    def closing(self) -> bool:
        return self._deadline is not None or self.done.done()

    def end(self, code: int, reason: bytes) -> None:
        """The gateway ends the WebSocket: the same close to both sides, then both connections within
        CLOSE_TIMEOUT_S (revocation, shutdown, a frame that breaks the rules)."""
        self.outbound.send_close(code, reason)  # to the client
        self.inbound.send_close(code, reason)  # to the notebook, masked
        self.check()

    async def close(self, code: int, message: bytes) -> None:
        self.end(code, message)
        await asyncio.shield(self.done)

    def lost(self, direction: _Direction) -> None:
        """One connection dropped without its closing handshake: the other side hears it as before."""
        if direction.inbound:
            self.inbound.send_close(WSCloseCode.GOING_AWAY, b"client went away")
        else:
            self.outbound.send_close(WSCloseCode.INTERNAL_ERROR, b"notebook server connection lost")
        self.check()

    def check(self) -> None:
        """Close the notebook's connection once its closing handshake is complete; the relay is done when it
        is gone and the client's handshake is complete too (aiohttp then closes the client's connection,
        sending what is buffered) or the client is gone. CLOSE_TIMEOUT_S bounds it all."""
        inbound, outbound = self.inbound, self.outbound
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, self.abort)
        if outbound.got_close and inbound.sent_close and not outbound.lost:
            outbound.source.close()
        if outbound.lost and self.client_finished and not self.done.done():
            self._deadline.cancel()
            self.done.set_result(None)

    @property
    def client_finished(self) -> bool:
        return self.inbound.lost or (self.inbound.got_close and self.outbound.sent_close)

    def abort(self) -> None:
        """Drop whatever connection has not finished."""
        if not self.outbound.lost:
            self.outbound.source.abort()
        if not self.client_finished:
            self.inbound.source.abort()


def _no_delay(transport: asyncio.Transport) -> None:
    """Small frames (kernel messages, keystrokes) go out at once, never held back by Nagle's algorithm."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _accept(request: web.Request, subprotocol: str | None) -> web.StreamResponse:
    """The client's 101 (its handshake was checked by the caller), with the subprotocol the notebook chose
    and no extension."""
    headers = {
        hdrs.UPGRADE: "websocket",
        hdrs.CONNECTION: "upgrade",
        hdrs.SEC_WEBSOCKET_ACCEPT: wsframes.accept_key(request.headers[hdrs.SEC_WEBSOCKET_KEY].encode()),
    }
    if subprotocol:
        headers[hdrs.SEC_WEBSOCKET_PROTOCOL] = subprotocol
    response = web.StreamResponse(status=101, headers=headers)
    response.force_close()
    await response.prepare(request)
    request.protocol.keep_alive(False)
    return response


async def relay(request: web.Request, upstream: Upstream, target: NotebookPath) -> web.StreamResponse:
    """Accept the client with the subprotocol the notebook chose, relay until both connections are closed."""
    app = request.app
    traffic = Traffic(touch=functools.partial(app[keys.ACTIVITY].touch, target.namespace, target.name))
    try:
        response = await _accept(request, upstream.subprotocol)
        websocket = Relay(request, upstream, traffic, app[keys.SETTINGS].websocket_max_message_bytes)
    except BaseException:
        upstream.transport.write(wsframes.close_frame(WSCloseCode.GOING_AWAY, b"client went away", masked=True))
        upstream.response.close()
        raise

    open_sockets = app[keys.WEBSOCKETS]
    metrics = app[keys.METRICS]
    open_sockets.add(websocket.close)
    metrics.websockets_open.inc()
    release: Callable[[], None] = lambda: None  # noqa: E731
    watcher: asyncio.Task[None] | None = None
    started = time.monotonic()
    try:
        # Checked when the policy changes (the only moment the decision can change), not per message.
        release = app[keys.POLICIES].hold(
            request[keys.IDENTITY],
            target.namespace,
            target.name,
            lambda: websocket.end(WSCloseCode.POLICY_VIOLATION, b"access revoked"),
        )
        session = request.get(keys.SESSION)  # None for a bearer token: nothing to sign out of
        if session is not None:
            watcher = _watch_session(app[keys.SESSIONS], session.id, websocket)
        websocket.start()
        await asyncio.shield(websocket.done)
    except asyncio.CancelledError:
        # aiohttp cancels the handler when the client's connection is lost (handler_cancellation), and the
        # gateway's shutdown cancels what is left: the notebook hears it, and its connection is closed.
        websocket.end(WSCloseCode.GOING_AWAY, b"client went away")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(websocket.done), CLOSE_TIMEOUT_S)
        raise
    except Exception:
        # After the 101 nothing may answer in HTTP on this connection (an error page would be read as frames).
        log.exception("WebSocket relay for %s failed", target.prefix)
    finally:
        websocket.abort()  # nothing left to do if both are closed already
        upstream.response.close()
        release()
        if watcher is not None:
            watcher.cancel()
        open_sockets.discard(websocket.close)
        metrics.websockets_open.dec()
        _audit(request, target, traffic, time.monotonic() - started)
    return response


def _watch_session(sessions: SessionStore, session_id: str, websocket: Relay) -> asyncio.Task[None]:
    """Close the WebSocket (1008 "signed out") once its session is gone from the store. While the store cannot
    answer, the socket stays: nobody can sign out meanwhile, and the next check decides."""

    async def watch() -> None:
        while not websocket.closing:
            await asyncio.sleep(SESSION_RECHECK_S)
            try:
                if await sessions.load(session_id, touch=False) is None:  # not the user's use: no idle reset
                    websocket.end(WSCloseCode.POLICY_VIOLATION, b"signed out")
                    return
            except ServiceUnavailable:
                continue

    return asyncio.get_running_loop().create_task(watch(), name="ws-session-watch")


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
