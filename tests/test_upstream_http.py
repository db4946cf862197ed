"""The proxy's own HTTP/1.1 client (gateway/upstream_http.py) against real sockets: a scripted upstream
that answers with exactly the bytes a test gives it, so that pooling, framing and faults are seen from
the upstream's side of the wire; and the same faults through the gateway, as the 502s clients get."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvloop
from multidict import CIMultiDict
from yarl import URL

from gateway import keys
from gateway.upstream_http import (
    BODY_BUFFER_BYTES,
    InvalidResponse,
    UpstreamConnectError,
    UpstreamPool,
    UpstreamResetError,
)
from tests.conftest import unused_port
from tests.fakes.tls import local_tls

Routes = Callable[[dict[tuple[str, str], str]], Path]
NB = "/notebook/alice/nb1/"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Exchange:
    head: bytes  # the request line and headers as received
    body: bytes
    connection: int  # which accepted connection (0, 1, ...) carried it
    index: int  # its place on that connection (0 for the first request)


@dataclass
class ScriptedUpstream:
    """A TCP server that reads each request (Content-Length or chunked body) and answers it with
    `answer(exchange)`: raw response bytes, or None to close the connection without a word."""

    answer: Callable[[Exchange], bytes | None]
    close_after_answer: bool = False
    exchanges: list[Exchange] = field(default_factory=list)
    connections: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    server: asyncio.Server | None = None

    @property
    def url(self) -> URL:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return URL(f"http://127.0.0.1:{port}/notebook/alice/nb1/x")

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.connections
        self.connections += 1
        self.writers.append(writer)
        index = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                body = await read_body(reader, head)
                exchange = Exchange(head, body, number, index)
                self.exchanges.append(exchange)
                index += 1
                answer = self.answer(exchange)
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
                if self.close_after_answer or b"connection: close" in answer[:200].lower():
                    return
        except ConnectionError:
            return
        finally:
            writer.close()


async def read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            body += await reader.readexactly(size + 2)
            if size == 0:
                return body[:-2]
            body = body[:-2]
    for line in lower.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return await reader.readexactly(int(line.split(b":")[1]))
    return b""


@contextlib.asynccontextmanager
async def scripted(answer: Callable[[Exchange], bytes | None], **options: Any) -> AsyncIterator[ScriptedUpstream]:
    upstream = ScriptedUpstream(answer, **options)
    upstream.server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    try:
        yield upstream
    finally:
        upstream.server.close()
        for writer in upstream.writers:
            writer.close()
        await upstream.server.wait_closed()


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    client = UpstreamPool(connect_timeout_s=5, read_timeout_s=5)
    yield client
    await client.close()


def headers(**values: str) -> CIMultiDict[str]:
    return CIMultiDict({"Host": "nb.example", **values})


async def get(pool: UpstreamPool, url: URL, method: str = "GET") -> tuple[int, bytes]:
    response = await pool.request(method, url, headers())
    try:
        return response.status, await response.read()
    finally:
        response.release()


async def body_of(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_sequential_requests_share_one_upstream_connection(pool: UpstreamPool) -> None:
    async with scripted(lambda _: OK) as upstream:
        for _ in range(5):
            assert await get(pool, upstream.url) == (200, b"ok")
        assert upstream.connections == 1
        assert [exchange.index for exchange in upstream.exchanges] == [0, 1, 2, 3, 4]
        first = upstream.exchanges[0].head
        assert first.startswith(b"GET /notebook/alice/nb1/x HTTP/1.1\r\n") and b"Host: nb.example\r\n" in first


async def test_a_response_without_keep_alive_is_not_pooled(pool: UpstreamPool) -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    async with scripted(lambda _: closing, close_after_answer=True) as upstream:
        for _ in range(3):
            assert await get(pool, upstream.url) == (200, b"ok")
        assert upstream.connections == 3


async def test_a_response_left_unread_closes_its_connection(pool: UpstreamPool) -> None:
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n" + b"x" * 2_000_000
    async with scripted(lambda _: big) as upstream:
        response = await pool.request("GET", upstream.url, headers())
        response.release()  # mid-body: those bytes would be read as the next response
        assert await get(pool, upstream.url) == (200, b"x" * 2_000_000)
        assert upstream.connections == 2


async def test_bytes_after_a_response_end_its_connection(pool: UpstreamPool) -> None:
    # A second response nobody asked for: on a reused connection it would answer the next request.
    extra = OK + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nXX"
    async with scripted(lambda _: extra) as upstream:
        assert await get(pool, upstream.url) == (200, b"ok")
        await asyncio.sleep(0.05)
        assert await get(pool, upstream.url) == (200, b"ok")
        assert upstream.connections == 2


# An upstream whose keep-alive timer fired as the next request arrived: it reads it and hangs up.
def hangs_up_on_reuse(exchange: Exchange) -> bytes | None:
    return OK if exchange.index == 0 else None


async def test_a_get_on_a_connection_the_upstream_closed_is_sent_again_on_a_new_one(pool: UpstreamPool) -> None:
    async with scripted(hangs_up_on_reuse) as upstream:
        assert await get(pool, upstream.url) == (200, b"ok")
        assert await get(pool, upstream.url) == (200, b"ok")
        assert [(exchange.connection, exchange.index) for exchange in upstream.exchanges] == [(0, 0), (0, 1), (1, 0)]


async def test_a_post_with_a_body_is_never_sent_twice(pool: UpstreamPool) -> None:
    async with scripted(hangs_up_on_reuse) as upstream:
        assert await get(pool, upstream.url) == (200, b"ok")
        with pytest.raises(UpstreamResetError):
            await pool.request("POST", upstream.url, headers(), body_of(b"once only"))
        assert [exchange.body for exchange in upstream.exchanges] == [b"", b"once only"]


async def test_a_fresh_connection_that_breaks_is_not_retried(pool: UpstreamPool) -> None:
    async with scripted(lambda _: None) as upstream:
        with pytest.raises(UpstreamResetError):
            await pool.request("GET", upstream.url, headers())
        assert len(upstream.exchanges) == 1


async def test_bodies_keep_their_length_or_go_chunked(pool: UpstreamPool) -> None:
    async with scripted(lambda _: OK) as upstream:
        sized = await pool.request("PUT", upstream.url, headers(**{"Content-Length": "6"}), body_of(b"abc", b"def"))
        sized.release()
        streamed = await pool.request("POST", upstream.url, headers(), body_of(b"abc", b"", b"defg"))
        streamed.release()
        first, second = upstream.exchanges
        assert b"Content-Length: 6\r\n" in first.head and b"transfer-encoding" not in first.head.lower()
        assert b"Transfer-Encoding: chunked\r\n" in second.head and b"content-length" not in second.head.lower()
        assert (first.body, second.body) == (b"abcdef", b"abcdefg")
        assert upstream.connections == 1  # both bodies were sent whole: the connection was reused


async def test_chunked_and_close_delimited_responses(pool: UpstreamPool) -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
    async with scripted(lambda _: chunked) as upstream:
        response = await pool.request("GET", upstream.url, headers())
        assert response.content_length is None and await response.read() == b"abcdefg"
        response.release()
        assert await get(pool, upstream.url) == (200, b"abcdefg")
        assert upstream.connections == 1  # chunked framing ends a response on a reusable connection
    until_close = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"y" * 300_000
    async with scripted(lambda _: until_close, close_after_answer=True) as upstream:
        assert await get(pool, upstream.url) == (200, b"y" * 300_000)
        assert await get(pool, upstream.url) == (200, b"y" * 300_000)
        assert upstream.connections == 2  # the end of the body was the end of the connection


async def test_head_204_and_304_have_no_body_and_keep_the_connection(pool: UpstreamPool) -> None:
    answers = {
        b"HEAD": b"HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n",
        b"GET /notebook/alice/nb1/x?nc": b"HTTP/1.1 204 No Content\r\n\r\n",
        b"GET /notebook/alice/nb1/x?nm": b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 99\r\n\r\n',
    }

    def answer(exchange: Exchange) -> bytes:
        return next(value for key, value in answers.items() if exchange.head.startswith(key))

    async with scripted(answer) as upstream:
        head = await pool.request("HEAD", upstream.url, headers())
        assert (head.status, head.content_length, await head.read()) == (200, 12345, b"")
        head.release()
        assert await get(pool, upstream.url.with_query("nc")) == (204, b"")
        not_modified = await pool.request("GET", upstream.url.with_query("nm"), headers())
        assert (not_modified.status, not_modified.headers["ETag"], await not_modified.read()) == (304, '"v1"', b"")
        not_modified.release()
        assert upstream.connections == 1


async def test_interim_responses_are_skipped_and_101_is_refused(pool: UpstreamPool) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nX-A: 1\r\nContent-Length: 1\r\n\r\n!"
    async with scripted(lambda _: interim) as upstream:
        response = await pool.request("GET", upstream.url, headers())
        assert (response.status, response.reason, response.headers["X-A"], await response.read()) == (
            201,
            "Created",
            "1",
            b"!",
        )
        response.release()
    switching = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    async with scripted(lambda _: switching) as upstream:
        with pytest.raises(InvalidResponse):
            await pool.request("GET", upstream.url, headers())


@pytest.mark.parametrize(
    "garbage",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nX-Bad\x00: 1\r\n\r\n",
    ],
)
async def test_malformed_responses_are_invalid(pool: UpstreamPool, garbage: bytes) -> None:
    async with scripted(lambda _: garbage) as upstream:
        with pytest.raises(InvalidResponse):
            await pool.request("GET", upstream.url, headers())


async def test_bad_chunking_breaks_the_body(pool: UpstreamPool) -> None:
    bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n"
    async with scripted(lambda _: bad) as upstream:
        response = await pool.request("GET", upstream.url, headers())
        with pytest.raises(InvalidResponse):
            await response.read()
        response.release()


async def test_refused_connection(pool: UpstreamPool) -> None:
    with pytest.raises(UpstreamConnectError):
        await pool.request("GET", URL(f"http://127.0.0.1:{unused_port()}/"), headers())


async def test_https_upstreams_are_verified(tmp_path: Path) -> None:
    tls = local_tls(tmp_path)
    upstream = ScriptedUpstream(lambda _: OK)
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0, ssl=tls.server_context)
    url = URL(f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/x")
    untrusting = UpstreamPool(connect_timeout_s=5, read_timeout_s=5)
    trusting = UpstreamPool(
        connect_timeout_s=5, read_timeout_s=5, ssl_context=ssl.create_default_context(cafile=tls.ca_file)
    )
    try:
        with pytest.raises(UpstreamConnectError):  # a certificate nobody vouched for: no request sent
            await untrusting.request("GET", url, headers())
        assert await get(trusting, url) == (200, b"ok")
        assert await get(trusting, url) == (200, b"ok")
        # The refused handshake never reached the server's handler; the two requests shared one connection.
        assert [(exchange.connection, exchange.index) for exchange in upstream.exchanges] == [(0, 0), (0, 1)]
    finally:
        await untrusting.close()
        await trusting.close()
        for writer in upstream.writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_header_value_cannot_smuggle_a_header(pool: UpstreamPool) -> None:
    async with scripted(lambda _: OK) as upstream:
        with pytest.raises(ValueError):
            await pool.request("GET", upstream.url, headers(**{"X-Remote-User": "alice\r\nX-Admin: 1"}))
        assert upstream.exchanges == []


async def test_a_slow_reader_pauses_the_upstream_socket(pool: UpstreamPool) -> None:
    size = 16 * 1024 * 1024
    body = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"z" * size
    async with scripted(lambda _: body) as upstream:
        response = await pool.request("GET", upstream.url, headers())
        await asyncio.sleep(0.3)  # the reader dawdles: what it holds stays near the bound, not at 16 MiB
        assert response.upstream_paused >= 1
        assert response.buffered <= BODY_BUFFER_BYTES + 256 * 1024  # the bound and at most one socket read
        received = 0
        while chunk := await response.readany():
            received += len(chunk)
            assert response.buffered <= BODY_BUFFER_BYTES + 256 * 1024
        assert received == size
        response.release()
        assert upstream.connections == 1


async def test_the_pool_caps_connections_per_host() -> None:
    pool = UpstreamPool(connect_timeout_s=5, read_timeout_s=5, limit_per_host=2)
    try:
        async with scripted(lambda _: OK) as upstream:
            held = [await pool.request("GET", upstream.url, headers()) for _ in range(2)]
            third = asyncio.ensure_future(get(pool, upstream.url))
            await asyncio.sleep(0.1)
            assert not third.done() and upstream.connections == 2
            held[0].release()
            assert await third == (200, b"ok")
            held[1].release()
            assert upstream.connections == 2
    finally:
        await pool.close()


async def test_idle_connections_expire() -> None:
    pool = UpstreamPool(connect_timeout_s=5, read_timeout_s=5, keepalive_s=0.2)
    try:
        async with scripted(lambda _: OK) as upstream:
            assert await get(pool, upstream.url) == (200, b"ok")
            assert pool.connections() == 1
            await asyncio.sleep(0.5)
            assert pool.connections() == 0  # closed by the pool's sweep, with no request to notice
            assert await get(pool, upstream.url) == (200, b"ok")
            assert upstream.connections == 2
    finally:
        await pool.close()


ON_UVLOOP = [
    test_sequential_requests_share_one_upstream_connection,
    test_a_get_on_a_connection_the_upstream_closed_is_sent_again_on_a_new_one,
    test_a_post_with_a_body_is_never_sent_twice,
    test_bodies_keep_their_length_or_go_chunked,
    test_chunked_and_close_delimited_responses,
    test_head_204_and_304_have_no_body_and_keep_the_connection,
    test_a_slow_reader_pauses_the_upstream_socket,
]


@pytest.mark.parametrize("scenario", ON_UVLOOP, ids=lambda scenario: scenario.__name__.removeprefix("test_"))
def test_on_uvloop(scenario: Callable[[UpstreamPool], Any]) -> None:
    """`serve` runs on uvloop, whose transports are not asyncio's classes: the same cases there."""

    async def run() -> None:
        pool = UpstreamPool(connect_timeout_s=5, read_timeout_s=5)
        try:
            await scenario(pool)
        finally:
            await pool.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())


# -- the same faults through the gateway: the answers clients get -----------------------------------


async def gateway_to(gateway_factory: Callable[..., Any], routes_file: Routes, upstream: ScriptedUpstream) -> Any:
    origin = str(upstream.url.origin())
    return await gateway_factory(routes_file=routes_file({("alice", "nb1"): origin}))


async def test_gateway_answers_a_malformed_response_with_502(
    gateway_factory: Callable[..., Any], routes_file: Routes
) -> None:
    async with scripted(lambda _: b"HTTP/1.1 2x0 Nope\r\n\r\n") as upstream:
        gateway = await gateway_to(gateway_factory, routes_file, upstream)
        resp = await gateway.get(NB + "api/status")
        body = await resp.json()
        assert (resp.status, body["error"]) == (502, "upstream_unavailable")
        assert body["message"] == "Notebook server alice/nb1 did not answer: invalid response."


async def test_gateway_retries_a_get_on_a_closed_pooled_connection_but_not_a_post(
    gateway_factory: Callable[..., Any], routes_file: Routes
) -> None:
    async with scripted(hangs_up_on_reuse) as upstream:
        gateway = await gateway_to(gateway_factory, routes_file, upstream)
        assert (await gateway.get(NB + "a")).status == 200
        assert (await gateway.get(NB + "b")).status == 200  # the hang-up was retried on a new connection
        resp = await gateway.post(NB + "c", data=b"upload")
        body = await resp.json()
        assert (resp.status, body["error"]) == (502, "upstream_unavailable")
        assert body["message"] == "Notebook server alice/nb1 did not answer: connection reset."
        assert [exchange.body for exchange in upstream.exchanges if exchange.head.startswith(b"POST")] == [b"upload"]
        metrics = await (await gateway.get("/metrics")).text()
        assert 'notebook_gateway_upstream_errors_total{kind="reset"} 1.0' in metrics


async def test_gateway_passes_close_delimited_and_chunked_bodies(
    gateway_factory: Callable[..., Any], routes_file: Routes
) -> None:
    def answer(exchange: Exchange) -> bytes:
        if exchange.head.startswith(b"GET /notebook/alice/nb1/chunked"):
            return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        return b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"q" * 100_000

    async with scripted(answer) as upstream:
        gateway = await gateway_to(gateway_factory, routes_file, upstream)
        chunked = await gateway.get(NB + "chunked")
        assert (chunked.status, await chunked.read()) == (200, b"hello world")
        until_close = await gateway.get(NB + "until-close")
        assert (until_close.status, await until_close.read()) == (200, b"q" * 100_000)


async def test_a_slow_client_holds_the_upstream_back_through_the_gateway(
    gateway_factory: Callable[..., Any], routes_file: Routes
) -> None:
    size = 32 * 1024 * 1024
    body = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"w" * size
    async with scripted(lambda _: body) as upstream:
        gateway = await gateway_to(gateway_factory, routes_file, upstream)
        resp = await gateway.get(NB + "big")
        assert resp.status == 200
        received = len(await resp.content.readany())
        await asyncio.sleep(0.5)  # the client stops reading: the gateway must stop reading the notebook
        assert gateway.app[keys.HTTP].times_paused >= 1
        while chunk := await resp.content.readany():
            received += len(chunk)
        assert received == size
