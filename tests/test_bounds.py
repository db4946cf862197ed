"""Every endpoint bounded: bodies, compressed bodies, slow clients, `Expect: 100-continue`,
WebSocket message sizes and per-user connection caps, each against the real app on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from tests.conftest import Client, session_headers, wait_until
from tests.fakes.upstream import FakeUpstream

Routes = Callable[[dict[tuple[str, str], str]], Path]
NB = "/notebook/alice/nb1/"
MiB = 1024 * 1024


@pytest.fixture
async def upstream(aiohttp_server: Any) -> FakeUpstream:
    return await FakeUpstream.start(aiohttp_server)


@pytest.fixture
def start(gateway_factory: Callable[..., Any], routes_file: Routes, upstream: FakeUpstream) -> Callable[..., Any]:
    """A gateway routing alice/nb1 to the fake notebook, signed in as `user`, with extra settings."""

    async def build(**overrides: Any) -> Client:
        client: Client = await gateway_factory(routes_file=routes_file({("alice", "nb1"): upstream.url}), **overrides)
        return client

    return build


async def exchange(client: Client, request: bytes, *, read_s: float = 5.0) -> bytes:
    """Send raw bytes on a fresh connection and return what comes back before `read_s` of silence."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        received = b""
        with contextlib.suppress(TimeoutError):
            while chunk := await asyncio.wait_for(reader.read(65536), read_s):
                received += chunk
        return received
    finally:
        writer.close()


def signed_in(client: Client) -> bytes:
    """The session cookie and Origin header lines of a signed-in test client."""
    return b"".join(f"{name}: {value}\r\n".encode() for name, value in session_headers(client).items())


# -- bodies the gateway reads itself ---------------------------------------------------------------


async def test_a_compressed_body_to_a_public_route_is_refused_not_inflated(start: Callable[..., Any]) -> None:
    client = await start(user=None)
    bomb = gzip.compress(b"logout_token=" + b"a" * (64 * MiB))  # ~64 KB on the wire, 64 MiB inflated
    resp = await client.post(
        "/oauth2/backchannel-logout",
        data=bomb,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 415
    assert "Content-Encoding" in (await resp.json())["message"]


async def test_a_large_form_to_a_public_route_is_413_naming_the_limit(start: Callable[..., Any]) -> None:
    client = await start(user=None, body_max_bytes=64 * 1024)
    resp = await client.post(
        "/oauth2/backchannel-logout",
        data=io.BytesIO(b"logout_token=" + b"a" * MiB),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 413
    assert "65536" in await resp.text()


async def test_a_compressed_upload_reaches_the_notebook_as_sent(start: Callable[..., Any]) -> None:
    client = await start()
    packed = gzip.compress(b"x" * MiB)
    resp = await client.put(NB + "echo", data=packed, headers={"Content-Encoding": "gzip"})
    assert resp.status == 200
    seen = await resp.json()
    assert ["Content-Encoding", "gzip"] in seen["headers"]
    assert ["Content-Length", str(len(packed))] in seen["headers"]  # the compressed bytes went on, as sent


# -- slow and idle clients ---------------------------------------------------------------------------


async def test_a_client_sending_headers_a_byte_at_a_time_is_cut_off(start: Callable[..., Any]) -> None:
    client = await start(user=None, client_idle_timeout_s=1.0)
    reader, writer = await asyncio.open_connection(client.host, client.port)
    closed = False
    try:
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.2)
            with contextlib.suppress(TimeoutError):
                if reader.at_eof() or await asyncio.wait_for(reader.read(1), 0.01) == b"":
                    closed = True
                    break
    except ConnectionError:
        closed = True
    finally:
        writer.close()
    assert closed  # the server hung up long before the 100 header bytes were all sent


async def test_an_idle_keep_alive_connection_is_closed(start: Callable[..., Any]) -> None:
    client = await start(user=None, client_idle_timeout_s=1.0)
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
    try:
        rest = await asyncio.wait_for(reader.read(), 30)  # returns at EOF: the server closed the connection
    except ConnectionResetError:  # or it reset it: closed all the same
        rest = b""
    writer.close()
    assert b"HTTP/1.1" not in rest


async def test_many_slow_clients_do_not_stop_others_being_served(start: Callable[..., Any]) -> None:
    client = await start(client_idle_timeout_s=30.0)
    slow = [await asyncio.open_connection(client.host, client.port) for _ in range(200)]
    for _, writer in slow:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    resp = await client.get(NB + "echo")
    assert resp.status == 200
    for _, writer in slow:
        writer.close()


# -- Expect: 100-continue ----------------------------------------------------------------------------


async def test_an_anonymous_client_is_not_invited_to_send_its_body(start: Callable[..., Any]) -> None:
    client = await start(user=None)
    answer = await exchange(
        client,
        b"PUT " + NB.encode() + b"count HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n"
        b"Expect: 100-continue\r\nAccept: application/json\r\n\r\n",
        read_s=1.0,
    )
    assert not answer.startswith(b"HTTP/1.1 100")
    assert answer.startswith(b"HTTP/1.1 401")


async def test_a_forbidden_client_is_not_invited_to_send_its_body(
    gateway_factory: Callable[..., Any], routes_file: Routes, upstream: FakeUpstream
) -> None:
    client: Client = await gateway_factory(
        user="mallory@example.com", routes_file=routes_file({("alice", "nb1"): upstream.url}), auto_profile=True
    )
    answer = await exchange(
        client,
        b"PUT " + NB.encode() + b"count HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n"
        b"Expect: 100-continue\r\nAccept: application/json\r\n" + signed_in(client) + b"\r\n",
        read_s=1.0,
    )
    assert not answer.startswith(b"HTTP/1.1 100")
    assert answer.startswith(b"HTTP/1.1 403")


async def test_an_authorised_client_gets_100_continue_and_its_upload_arrives(start: Callable[..., Any]) -> None:
    client = await start()
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        b"PUT "
        + NB.encode()
        + b"count HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
        + signed_in(client)
        + b"\r\n"
    )
    await writer.drain()
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"hello")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    body = await asyncio.wait_for(reader.read(1000), 10)
    writer.close()
    assert head.startswith(b"HTTP/1.1 200")
    assert b'"bytes": 5' in body


# -- WebSockets --------------------------------------------------------------------------------------


async def test_a_websocket_message_over_the_limit_closes_with_1009(
    start: Callable[..., Any], upstream: FakeUpstream
) -> None:
    client = await start(websocket_max_message_bytes=MiB)
    async with client.ws_connect(NB + "ws", max_msg_size=0) as ws:
        await ws.send_bytes(b"x" * 1000)
        assert await ws.receive_bytes() == b"x" * 1000  # under the limit: relayed
        await ws.send_bytes(b"x" * (300 * MiB // 100))  # 3 MiB: refused from its header, not read whole
        msg = await ws.receive()
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
        assert ws.close_code == 1009
    await wait_until(lambda: [close.code for close in upstream.state.ws_closes] == [1009])  # the notebook hears why


async def test_one_user_cannot_hold_more_websockets_than_the_cap(
    gateway_factory: Callable[..., Any], routes_file: Routes, upstream: FakeUpstream
) -> None:
    routes = routes_file({("alice", "nb1"): upstream.url, ("bob", "nb1"): upstream.url})
    alice: Client = await gateway_factory(routes_file=routes, websockets_per_user=3)
    open_sockets = [await alice.ws_connect(NB + "ws") for _ in range(3)]
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await alice.ws_connect(NB + "ws")
    assert refused.value.status == 429
    resp = await alice.get(NB + "echo")  # plain requests still go through
    assert resp.status == 200
    await open_sockets.pop().close()
    again = await alice.ws_connect(NB + "ws")  # a freed slot can be used again
    await again.close()
    for ws in open_sockets:
        await ws.close()


async def test_one_users_requests_in_flight_are_capped_with_a_clear_429(start: Callable[..., Any]) -> None:
    client = await start(upstream_requests_per_user=2)
    slow = [asyncio.create_task(client.get(NB + "slow?delay_s=2")) for _ in range(2)]
    await asyncio.sleep(0.5)
    resp = await client.get(NB + "echo")
    assert resp.status == 429
    body = await resp.json()
    assert body["error"] == "too_many_connections"
    assert "(2)" in body["message"]
    assert resp.headers["Retry-After"]
    for task in slow:
        assert (await task).status == 200
    assert (await client.get(NB + "echo")).status == 200
