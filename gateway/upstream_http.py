"""The proxy's HTTP/1.1 client for notebook servers: pooled keep-alive connections, bodies streamed both ways.

aiohttp's client did this job, but a request through it cost more CPU than the rest of the gateway's
work together (request objects, cookie jar, auto headers, timers per read, connector bookkeeping).
This one does only what a proxy leg needs: one write for the request head (the headers are
`proxy_headers`' policy, sent as given), the body as the client sends it, and the response parsed by
llhttp (`httptools`) straight off the socket, with flow control both ways.

A pooled connection goes back to the pool only after a complete response that allows keep-alive;
anything else closes it. A pooled connection the upstream closed meanwhile fails before the first
response byte: an idempotent request without a body is then sent once more on a new connection,
as browsers do; nothing else is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import Final, cast

import httptools
from multidict import CIMultiDict
from yarl import URL

# What a response body may hold in memory before the upstream socket is paused (it resumes when the
# reader has taken the buffer): the gateway's memory per stream stays near this, whatever the body's size.
BODY_BUFFER_BYTES: Final = 256 * 1024
# Retried once on a new connection when a pooled one turns out closed (RFC 9110 §9.2.2: idempotent).
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_HeaderItem = tuple[str, str]


class UpstreamError(Exception):
    """Base of the client's errors; `gateway.proxy.upstream_errors` turns each into a 502."""


class UpstreamConnectError(UpstreamError):
    """No connection: refused, unreachable, no such host."""


class UpstreamResetError(UpstreamError):
    """The connection closed or broke before the response was complete."""


class InvalidResponse(UpstreamError):
    """The upstream's bytes are not an HTTP/1.x response we can pass on."""


class _StaleConnection(UpstreamResetError):
    """A reused connection failed before any response byte: the upstream had closed it while idle."""


class UpstreamResponse:
    """One response: status, reason and headers once `UpstreamPool.request` returns, then the body.

    It is also the parser's callback object, so llhttp calls straight into it."""

    __slots__ = (
        "_body_sent",
        "_body_writer",
        "_buffered",
        "_chunks",
        "_complete",
        "_conn",
        "_error",
        "_head_only",
        "_headers_done",
        "_informational",
        "_keep_alive",
        "_parser",
        "_raw_headers",
        "_released",
        "_until_close",
        "_waiter",
        "content_length",
        "got_bytes",
        "headers",
        "reason",
        "status",
    )

    def __init__(self, conn: _Connection, head_only: bool) -> None:
        self._conn = conn
        self._parser = httptools.HttpResponseParser(self)
        self._head_only = head_only
        self._headers_done: asyncio.Future[None] = conn.loop.create_future()
        self._raw_headers: list[_HeaderItem] = []
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._informational = False
        self._until_close = False
        self._keep_alive = False
        self._error: BaseException | None = None
        self._released = False
        self._body_writer: asyncio.Task[None] | None = None
        self._body_sent = False
        self.got_bytes = False
        self.status = 0
        self.reason = ""
        self.headers: CIMultiDict[str] = CIMultiDict()
        self.content_length: int | None = None

    # -- the parser's callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:  # a second response to one request: the connection is out of step
            raise InvalidResponse("data after the end of the response")
        self._raw_headers = []
        self.reason = ""

    def on_status(self, status: bytes) -> None:
        self.reason += status.decode("utf-8", "surrogateescape")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw_headers.append((name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status == 101:
            raise InvalidResponse("101 Switching Protocols on a plain HTTP request")
        if status < 200:  # 100 Continue and other interim answers: the final one follows
            self._informational = True
            return
        self.status = status
        headers = self.headers = CIMultiDict(self._raw_headers)
        length = headers.get("Content-Length")
        if length is not None:
            self.content_length = int(length)  # llhttp has checked it is digits, and only one value
        no_body = self._head_only or status in (204, 304)
        self._until_close = not no_body and length is None and not _is_chunked(headers.get("Transfer-Encoding"))
        if no_body:  # llhttp does not know the method; a HEAD response ends with its headers
            self._finish(self._parser.should_keep_alive())
        self._headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._complete:  # bytes after a HEAD response, or after the end: the connection is unusable
            self._keep_alive = False
            return
        self._chunks.append(body)
        self._buffered += len(body)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if self._buffered >= BODY_BUFFER_BYTES:
            self._conn.pause_reading()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        if not self._complete:
            self._finish(self._parser.should_keep_alive())

    # -- fed by the connection ------------------------------------------------------------------

    def _finish(self, keep_alive: bool) -> None:
        self._complete = True
        self._keep_alive = keep_alive
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        self._keep_alive = False
        if self._error is None:
            self._error = exc
        if not self._headers_done.done():
            self._headers_done.set_exception(exc)
            self._headers_done.exception()  # retrieved: the requester may be gone
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def feed(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(InvalidResponse("the upstream switched protocols"))
            self._conn.close()
        except httptools.HttpParserError as exc:
            cause = exc.__context__ if isinstance(exc.__context__, InvalidResponse) else exc
            self._fail(InvalidResponse(str(cause)))
            self._conn.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._complete:
            return
        if exc is None and self._until_close and self._headers_done.done():
            self._finish(False)  # a body without length or chunking ends where the connection does
            return
        if not self.got_bytes and self._conn.reused:
            self._fail(_StaleConnection("the pooled connection was closed by the upstream"))
        else:
            self._fail(UpstreamResetError(str(exc) if exc else "the upstream closed the connection"))

    # -- the body, for the proxy ------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Body bytes read from the upstream and not yet taken by the reader."""
        return self._buffered

    @property
    def upstream_paused(self) -> int:
        """How often this response's connection stopped reading because the reader fell behind."""
        return self._conn.times_paused

    async def readany(self) -> bytes:
        """The next part of the body as it arrives (all that is buffered); b"" at its end."""
        while True:
            chunks = self._chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                self._chunks = []
                self._buffered = 0
                self._conn.resume_reading()
                return data
            if self._complete:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait()

    async def read(self) -> bytes:
        """The whole body (for responses known to be small)."""
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _wait(self) -> None:
        conn = self._conn
        waiter = self._waiter = conn.loop.create_future()
        timer = conn.loop.call_later(conn.read_timeout_s, _time_out, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def release(self) -> None:
        """Done with the response: its connection goes back to the pool when reusable, else is closed."""
        if self._released:
            return
        self._released = True
        writer = self._body_writer
        if writer is not None and not writer.done():
            writer.cancel()  # the upstream answered before it had the whole body: that connection is done
        reusable = self._complete and self._keep_alive and self._error is None
        if writer is not None and not self._body_sent:
            reusable = False
        del self._parser  # it holds our bound methods: no cycle left for the garbage collector
        self._conn.pool_release(reusable)

    def close(self) -> None:
        """Done with the response before its end: its connection is closed."""
        self._keep_alive = False
        self._conn.close()
        self.release()


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _is_chunked(transfer_encoding: str | None) -> bool:
    return transfer_encoding is not None and transfer_encoding.rsplit(",", 1)[-1].strip().lower() == "chunked"


class _Connection(asyncio.Protocol):
    """One TCP connection to an upstream; the response in progress gets what the socket reads."""

    def __init__(self, host: _HostPool, loop: asyncio.AbstractEventLoop, read_timeout_s: float) -> None:
        self.host = host
        self.loop = loop
        self.read_timeout_s = read_timeout_s
        self.transport: asyncio.Transport | None = None
        self.response: UpstreamResponse | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self.reading_paused = False
        self.times_paused = 0  # how often a slow reader held the upstream back (tests, diagnostics)
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio's classes, but alike
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):  # small writes go out now, not after 40 ms
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # an idle connection the upstream talks on (a 408, say): not ours to reuse
            self.close()
            return
        response.feed(data)

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.response is not None:
            self.response.connection_lost(exc)
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(UpstreamResetError("the upstream closed the connection while receiving the body"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drain(self) -> None:
        if self.closed:
            raise UpstreamResetError("the upstream closed the connection while receiving the body")
        if self._write_paused:
            self._drain_waiter = self.loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.times_paused += 1
            self.host.pool.times_paused += 1
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            if self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise UpstreamResetError("the upstream closed the connection")
        self.transport.write(data)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def pool_release(self, reusable: bool) -> None:
        self.response = None
        self.resume_reading()
        self.host.release(self, reusable and not self.closed)


class _HostPool:
    """The connections to one (host, port): idle ones newest first, and a cap on those in use."""

    def __init__(self, pool: UpstreamPool, host: str, port: int, tls: bool) -> None:
        self.pool = pool
        self.host = host
        self.port = port
        self.tls = tls
        self.idle: deque[_Connection] = deque()
        self.in_use = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self, *, fresh: bool = False) -> _Connection:
        while True:
            if not fresh:
                idle = self.idle
                expired = self.pool.loop.time() - self.pool.keepalive_s
                while idle:
                    conn = idle.pop()
                    if not conn.closed and conn.idle_since > expired:
                        self.in_use += 1
                        conn.reused = True
                        return conn
                    conn.close()
            if self.in_use < self.pool.limit_per_host:
                break
            waiter = self.pool.loop.create_future()
            self.waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # our turn, but we are gone: pass it on
                raise
            finally:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(waiter)
        self.in_use += 1
        try:
            return await self._connect()
        except BaseException:
            self.in_use -= 1
            self._wake_one()
            raise

    async def _connect(self) -> _Connection:
        pool = self.pool
        loop = pool.loop
        try:
            async with asyncio.timeout(pool.connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, loop, pool.read_timeout_s),
                    self.host,
                    self.port,
                    ssl=pool.ssl_context() if self.tls else None,
                )
        except OSError as exc:  # refused, unreachable, no such name, TLS failure
            raise UpstreamConnectError(str(exc) or type(exc).__name__) from exc
        return conn

    def release(self, conn: _Connection, reusable: bool) -> None:
        self.in_use -= 1
        if reusable and not self.pool.closed:
            conn.idle_since = self.pool.loop.time()
            self.idle.append(conn)
            self.pool.schedule_sweep()
        else:
            conn.close()
        self._wake_one()

    def _wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def sweep(self, before: float) -> float | None:
        """Close connections idle since before `before`; when the oldest left became idle."""
        idle = self.idle
        while idle and (idle[0].closed or idle[0].idle_since <= before):
            idle.popleft().close()
        return idle[0].idle_since if idle else None


class UpstreamPool:
    """Keep-alive connections per (host, port), at most `limit_per_host` in use at once."""

    def __init__(
        self,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        limit_per_host: int = 256,
        keepalive_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s  # the longest silence inside a response body
        self.limit_per_host = limit_per_host
        self.keepalive_s = keepalive_s
        self.closed = False
        self.times_paused = 0  # how often a slow reader held an upstream back (tests, diagnostics)
        self._hosts: dict[tuple[str, int, bool], _HostPool] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._ssl = ssl_context  # https:// upstreams: the system's CAs unless given one

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def request(
        self, method: str, url: URL, headers: CIMultiDict[str], body: AsyncIterator[bytes] | None = None
    ) -> UpstreamResponse:
        """Send a request and wait for its response's headers. The caller must `release()` the response
        (or `close()` it), and bounds the wait: a response's headers have no timeout here."""
        if self.closed:
            raise UpstreamConnectError("the upstream client is closed")
        tls = url.scheme == "https"
        port = url.port or (443 if tls else 80)
        host = url.raw_host or ""
        key = (host, port, tls)
        pool = self._hosts.get(key)
        if pool is None:
            pool = self._hosts[key] = _HostPool(self, host, port, tls)
        chunked = body is not None and "Content-Length" not in headers
        head = _encode_head(method, url, headers, chunked)
        conn = await pool.acquire()
        try:
            return await _exchange(conn, method, head, body, chunked)
        except _StaleConnection:
            if body is not None or method not in IDEMPOTENT_METHODS:
                raise UpstreamResetError("the upstream closed a pooled connection as the request went out") from None
        conn = await pool.acquire(fresh=True)
        return await _exchange(conn, method, head, None, False)

    def schedule_sweep(self, delay_s: float | None = None) -> None:
        """One timer for the whole pool, not one per idle connection."""
        if self._sweep is None:
            self._sweep = self.loop.call_later(self.keepalive_s if delay_s is None else delay_s, self._run_sweep)

    def _run_sweep(self) -> None:
        self._sweep = None
        now = self.loop.time()
        oldest = [since for host in self._hosts.values() if (since := host.sweep(now - self.keepalive_s)) is not None]
        if oldest:
            self.schedule_sweep(min(oldest) + self.keepalive_s - now)

    def connections(self) -> int:
        """Open connections, idle or in use (tests, diagnostics)."""
        return sum(host.in_use + len(host.idle) for host in self._hosts.values())

    async def close(self) -> None:
        self.closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for host in self._hosts.values():
            while host.idle:
                host.idle.pop().close()
        await asyncio.sleep(0)  # let the transports' close callbacks run


async def _exchange(
    conn: _Connection, method: str, head: bytes, body: AsyncIterator[bytes] | None, chunked: bool
) -> UpstreamResponse:
    response = conn.response = UpstreamResponse(conn, method == "HEAD")
    try:
        conn.write(head)
        if body is not None:
            # The body goes out beside the wait for the answer: an upstream may answer (413, 401)
            # before it has read the body, and release() then closes the connection.
            response._body_writer = asyncio.ensure_future(_send_body(conn, response, body, chunked))
        await response._headers_done
    except BaseException:
        response.close()
        raise
    return response


async def _send_body(conn: _Connection, response: UpstreamResponse, body: AsyncIterator[bytes], chunked: bool) -> None:
    try:
        async for chunk in body:
            if not chunk:
                continue
            if chunked:
                conn.write(b"%x\r\n" % len(chunk))
                conn.write(chunk)
                conn.write(b"\r\n")
            else:
                conn.write(chunk)
            await conn.drain()
        if chunked:
            conn.write(b"0\r\n\r\n")
        response._body_sent = True
    except Exception as exc:  # the client's body broke off, or the upstream's connection did
        # The requester waits for headers that will not come: it gets the reason instead.
        response._fail(exc if not isinstance(exc, OSError) else UpstreamResetError(str(exc)))
        conn.close()


def _encode_head(method: str, url: URL, headers: CIMultiDict[str], chunked: bool) -> bytes:
    """The request line and headers, in one buffer; CR or LF inside any of them is refused (a header
    value that could start a header of its own, or a request of its own)."""
    lines = [f"{method} {url.raw_path_qs} HTTP/1.1"]
    if headers:
        lines.append("\r\n".join(map(": ".join, headers.items())))
    if "Host" not in headers:
        lines.append(f"Host: {url.raw_authority}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
    line_ends = len(lines) + max(len(headers), 1)  # each line's CRLF, and the blank line's
    if head.count(b"\n") != line_ends or head.count(b"\r") != line_ends:
        raise ValueError("a CR or LF inside the request line or a header")
    return head
