"""`FakeUpstream`: a small aiohttp app standing in for a notebook server behind the gateway.

It answers under any `/notebook/<ns>/<name>/` prefix. Paths after the prefix:
  echo          any method: JSON of the method, raw path, query, headers and body it received
  count         any method: reads the body as a stream and answers with its size (never held whole)
  bytes/<n>     n bytes, streamed in 64 KiB chunks (`?chunked=1`: no Content-Length)
  range         a fixed 1000-byte body that honours `Range: bytes=a-b`
  sse           one event, then a second only once `sse_gate` is set, then the end
  slow          answers after `?delay_s=` seconds, or (`?gate=1`) once `slow_gate` is set
  status/<code> an empty response with that status (and a Location for 3xx)
  gzip          a gzip-encoded body with `Content-Encoding: gzip`
  cookies       sets a Jupyter-like `_xsrf` cookie and a cookie named like the gateway's
  hop           a response carrying hop-by-hop headers
  overreach     what a hostile notebook sends to reach past its origin: `Service-Worker-Allowed: ?scope=`,
                a cookie for a parent domain, one named like a gateway cookie with `__Host-`, and its own
  truncate/<n>  promises n bytes, sends a tenth of them, then cuts the connection
  ws            WebSocket echo (subprotocol v1.kernel.websocket.jupyter.org); text commands:
                  `close:<code>:<reason>`  close with that code and reason
                  `drop`                   cut the TCP connection without a close frame
                  `ping:<data>`            send a ping to the client
                  `handshake`              reply with the handshake's headers as JSON
  ws-refuse     403 instead of an upgrade
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

KERNEL_PROTOCOL = "v1.kernel.websocket.jupyter.org"
RANGE_BODY = bytes(i % 251 for i in range(1000))
CHUNK = b"\x5a" * 65536


@dataclass
class WsClose:
    code: int | None
    reason: str


@dataclass
class UpstreamState:
    """What the fake saw, for tests to inspect."""

    sse_gate: asyncio.Event = field(default_factory=asyncio.Event)
    ws_closes: list[WsClose] = field(default_factory=list)  # close frames received from the gateway
    ws_pongs: list[bytes] = field(default_factory=list)
    ws_open: int = 0
    slow_gate: asyncio.Event = field(default_factory=asyncio.Event)
    slow_waiting: int = 0  # `slow?gate=1` requests now held at the gate
    streams_open: int = 0  # `bytes/<n>` responses still being written


STATE = web.AppKey("state", UpstreamState)


def _rest(request: web.Request) -> str:
    """The path after /notebook/<ns>/<name>/ (still encoded)."""
    parts = request.raw_path.partition("?")[0].split("/", 4)
    return parts[4] if len(parts) == 5 else ""


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "raw_path": request.raw_path,
            "query": request.query_string,
            "headers": [[name, value] for name, value in request.headers.items()],
            "body": body.decode("utf-8", "replace"),
        }
    )


async def count(request: web.Request) -> web.Response:
    total = 0
    async for chunk in request.content.iter_any():
        total += len(chunk)
    return web.json_response(
        {
            "bytes": total,
            "content_length": request.headers.get("Content-Length"),
            "transfer_encoding": request.headers.get("Transfer-Encoding"),
        }
    )


async def stream_bytes(request: web.Request) -> web.StreamResponse:
    size = int(_rest(request).split("/")[1])
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    if request.query.get("chunked") != "1":
        response.content_length = size
    await response.prepare(request)
    remaining = 0 if request.method == "HEAD" else size
    request.app[STATE].streams_open += 1
    try:
        while remaining > 0:
            piece = CHUNK if remaining >= len(CHUNK) else CHUNK[:remaining]
            await response.write(piece)
            remaining -= len(piece)
    finally:
        request.app[STATE].streams_open -= 1
    await response.write_eof()
    return response


async def ranged(request: web.Request) -> web.Response:
    header = request.headers.get("Range", "")
    if not header.startswith("bytes="):
        return web.Response(body=RANGE_BODY, headers={"Accept-Ranges": "bytes"})
    first, _, last = header[len("bytes=") :].partition("-")
    start, end = int(first), min(int(last), len(RANGE_BODY) - 1)
    return web.Response(
        status=206,
        body=RANGE_BODY[start : end + 1],
        headers={"Content-Range": f"bytes {start}-{end}/{len(RANGE_BODY)}", "Accept-Ranges": "bytes"},
    )


async def sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    await response.write(b"data: first\n\n")
    await request.app[STATE].sse_gate.wait()
    await response.write(b"data: second\n\n")
    await response.write_eof()
    return response


async def slow(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.query.get("gate") == "1":
        state.slow_waiting += 1
        try:
            await state.slow_gate.wait()
        finally:
            state.slow_waiting -= 1
    else:
        await asyncio.sleep(float(request.query.get("delay_s", "30")))
    return web.Response(text="finally")


async def status(request: web.Request) -> web.Response:
    code = int(_rest(request).split("/")[1])
    headers = {"Location": "/elsewhere"} if 300 <= code < 400 else {}
    return web.Response(status=code, headers=headers)


async def gzipped(request: web.Request) -> web.Response:
    body = gzip.compress(b"compressed by the notebook " * 100)
    return web.Response(body=body, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})


async def cookies(request: web.Request) -> web.Response:
    response = web.Response(text="cookies")
    response.set_cookie("_xsrf", "2|abc", path="/")
    response.set_cookie("notebook_gateway_session", "planted", path="/")
    return response


async def overreach(request: web.Request) -> web.Response:
    response = web.Response(text="overreach", headers={"Service-Worker-Allowed": request.query.get("scope", "/")})
    response.set_cookie("tossed", "1", domain="localhost", path="/")
    response.set_cookie("__Host-notebook_gateway_notebook", "planted", path="/", secure=True)
    response.set_cookie("own", "1", path="/")
    return response


async def hop(request: web.Request) -> web.Response:
    return web.Response(
        text="hop",
        headers={"Connection": "X-Private", "X-Private": "secret", "Keep-Alive": "timeout=5", "X-Kept": "yes"},
    )


async def websocket(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    ws = web.WebSocketResponse(protocols=(KERNEL_PROTOCOL,), autoclose=False, autoping=False, max_msg_size=0)
    await ws.prepare(request)
    state.ws_open += 1
    try:
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.TEXT:
                await _command(request, ws, msg.data)
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
            elif msg.type is WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type is WSMsgType.PONG:
                state.ws_pongs.append(msg.data)
            elif msg.type is WSMsgType.CLOSE:
                reason = msg.extra or ""
                state.ws_closes.append(WsClose(msg.data, reason))
                await ws.close(code=msg.data, message=reason.encode())
                break
            else:
                break
    finally:
        state.ws_open -= 1
    return ws


async def _command(request: web.Request, ws: web.WebSocketResponse, text: str) -> None:
    if text.startswith("close:"):
        _, code, reason = text.split(":", 2)
        await ws.close(code=int(code), message=reason.encode())
    elif text == "drop":
        assert request.transport is not None
        request.transport.abort()
    elif text.startswith("ping:"):
        await ws.ping(text[len("ping:") :].encode())
    elif text == "handshake":
        await ws.send_str(json.dumps({name: value for name, value in request.headers.items()}))
    else:
        await ws.send_str(text)


async def truncate(request: web.Request) -> web.StreamResponse:
    promised = int(_rest(request).split("/")[1])
    response = web.StreamResponse()
    response.content_length = promised
    await response.prepare(request)
    await response.write(b"x" * (promised // 10))
    assert request.transport is not None
    request.transport.abort()  # dies mid-body: the client must not think it got everything
    return response


async def refuse(request: web.Request) -> web.Response:
    return web.Response(status=403, text="origin not allowed")


HANDLERS: dict[str, Callable[[web.Request], Any]] = {
    "echo": echo,
    "count": count,
    "bytes": stream_bytes,
    "range": ranged,
    "sse": sse,
    "slow": slow,
    "status": status,
    "cookies": cookies,
    "gzip": gzipped,
    "hop": hop,
    "overreach": overreach,
    "truncate": truncate,
    "ws": websocket,
    "ws-refuse": refuse,
}


async def dispatch(request: web.Request) -> web.StreamResponse:
    handler = HANDLERS.get(_rest(request).split("/")[0])
    if handler is None:
        return web.json_response({"error": "no such fake endpoint", "raw_path": request.raw_path}, status=404)
    response: web.StreamResponse = await handler(request)
    return response


def make_app() -> web.Application:
    app = web.Application(client_max_size=0)
    app[STATE] = UpstreamState()
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


class FakeUpstream:
    """A running fake notebook server: `url` is its origin, `state` what it saw."""

    def __init__(self, server: TestServer) -> None:
        self.server = server
        self.url = str(server.make_url("/")).rstrip("/")
        self.state = server.app[STATE] if server.app is not None else UpstreamState()

    @classmethod
    async def start(cls, aiohttp_server: Callable[..., Any]) -> FakeUpstream:
        # Test servers cancel a handler whose client left, so a `slow` one ends when the gateway gives up.
        server: TestServer = await aiohttp_server(make_app())
        return cls(server)
