"""WebSocket relay through the gateway to a fake notebook: frames, subprotocols, pings, closes."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from tests.conftest import Client, wait_until
from tests.fakes.upstream import KERNEL_PROTOCOL, FakeUpstream, WsClose
from tests.origins import OriginClient, in_both_origin_modes  # noqa: F401  (fixture: every test here runs in both)
from tests.test_proxy import CLIENT_IDENTITY, serving

Routes = Callable[[dict[tuple[str, str], str]], Path]
WS = "/notebook/alice/nb1/ws"


@pytest.fixture
async def gateway(gateway_factory: Callable[..., Any], routes_file: Routes, upstream: FakeUpstream) -> Client:
    client: Client = await gateway_factory(routes_file=routes_file({("alice", "nb1"): upstream.url}))
    return client


async def test_text_and_binary_frames_echo_with_the_kernel_subprotocol(gateway: Client) -> None:
    async with gateway.ws_connect(WS, protocols=("v9.unknown", KERNEL_PROTOCOL)) as ws:
        assert ws.protocol == KERNEL_PROTOCOL  # the one the notebook chose
        await ws.send_str("héllo")
        assert await ws.receive_str() == "héllo"
        await ws.send_bytes(b"\x00\x01\xff")
        assert await ws.receive_bytes() == b"\x00\x01\xff"


async def test_no_subprotocol_offered_none_chosen(gateway: Client) -> None:
    async with gateway.ws_connect(WS) as ws:
        assert ws.protocol is None
        await ws.send_str("plain")
        assert await ws.receive_str() == "plain"


async def test_messages_larger_than_aiohttps_default_cap_pass(gateway: Client) -> None:
    big = bytes(range(256)) * (6 * 4096)  # 6 MiB, over aiohttp's 4 MiB default
    async with gateway.ws_connect(WS, max_msg_size=0) as ws:
        await ws.send_bytes(big)
        assert await ws.receive_bytes() == big


async def test_client_ping_is_answered_by_the_notebook(gateway: Client) -> None:
    async with gateway.ws_connect(WS, autoping=False) as ws:
        await ws.ping(b"are-you-there")
        msg = await ws.receive()
        assert (msg.type, msg.data) == (WSMsgType.PONG, b"are-you-there")


async def test_notebook_ping_reaches_the_client_and_its_pong_goes_back(gateway: Client, upstream: FakeUpstream) -> None:
    async with gateway.ws_connect(WS, autoping=False) as ws:
        await ws.send_str("ping:hi")
        msg = await ws.receive()
        assert (msg.type, msg.data) == (WSMsgType.PING, b"hi")
        await ws.pong(b"hi")
        await wait_until(lambda: upstream.state.ws_pongs == [b"hi"])


async def test_client_close_code_and_reason_reach_the_notebook(gateway: Client, upstream: FakeUpstream) -> None:
    ws = await gateway.ws_connect(WS)
    await ws.close(code=4001, message=b"bye now")
    assert upstream.state.ws_closes == [WsClose(4001, "bye now")]
    assert ws.close_code == 4001  # the notebook's echo came back
    await wait_until(lambda: upstream.state.ws_open == 0)


async def test_notebook_close_code_and_reason_reach_the_client(gateway: Client) -> None:
    async with gateway.ws_connect(WS) as ws:
        await ws.send_str("close:4002:kernel restarted")
        msg = await ws.receive()
        assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 4002, "kernel restarted")


async def test_notebook_vanishing_closes_the_client_with_1011(gateway: Client) -> None:
    async with gateway.ws_connect(WS) as ws:
        await ws.send_str("drop")
        msg = await ws.receive()
        assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1011)


async def vanish_after_handshake(host: str, port: int, signed_in: dict[str, str]) -> None:
    """Open a WebSocket by hand, then drop the TCP connection without a close frame."""
    reader, writer = await asyncio.open_connection(host, port)
    signed_in = {"Host": f"{host}:{port}", **signed_in}  # a notebook origin's Host, when given
    extra = "".join(f"{name}: {value}\r\n" for name, value in signed_in.items())
    writer.write(
        f"GET {WS} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    writer.close()
    await writer.wait_closed()


async def test_client_vanishing_closes_the_notebook_side(gateway: OriginClient, upstream: FakeUpstream) -> None:
    assert gateway.port is not None
    await vanish_after_handshake(gateway.host, gateway.port, await gateway.raw_headers(WS))
    await wait_until(lambda: upstream.state.ws_closes == [WsClose(1001, "client went away")])


async def test_client_vanishing_closes_the_notebook_side_without_handler_cancellation(
    routes_file: Routes, upstream: FakeUpstream
) -> None:
    async with serving(routes_file({("alice", "nb1"): upstream.url})) as (url, signed_in):
        host, port = url.removeprefix("http://").split(":")
        await vanish_after_handshake(host, int(port), signed_in)
        await wait_until(lambda: upstream.state.ws_closes == [WsClose(1001, "client went away")])


async def test_handshake_headers_are_filtered_like_http(gateway: Client) -> None:
    origin = str(gateway.make_url(WS).origin())  # the notebook's own origin when it has one
    # the session cookie comes from the jar; the identity headers are the HTTP test's own literal list
    headers = {"Cookie": "_xsrf=2|x", **CLIENT_IDENTITY}
    async with gateway.ws_connect(WS, headers=headers) as ws:
        await ws.send_str("handshake")
        seen = {name.lower().replace("_", "-"): value for name, value in json.loads(await ws.receive_str()).items()}
    assert seen["origin"] == origin
    assert seen["cookie"] == "_xsrf=2|x"
    assert seen["host"] == f"{gateway.make_url(WS).host}:{gateway.port}"
    sent = {name.lower().replace("_", "-") for name in CLIENT_IDENTITY}
    assert {name for name in seen if name in sent} == {"kubeflow-userid", "kubeflow-groups"}
    assert seen["kubeflow-userid"] == "alice@example.com" and "admin" not in str(seen)


async def test_refused_upgrade_passes_the_notebooks_status(gateway: Client) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await gateway.ws_connect("/notebook/alice/nb1/ws-refuse")
    assert refused.value.status == 403


async def test_websocket_to_unknown_notebook_is_404(gateway: Client) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await gateway.ws_connect("/notebook/alice/nb9/ws")
    assert refused.value.status == 404


async def test_open_websockets_are_counted_and_audited_when_closed(
    gateway: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.audit")
    async with gateway.ws_connect(WS) as ws:
        await ws.send_str("12345")
        await ws.receive_str()
        metrics = await (await gateway.get("/metrics")).text()
        assert "notebook_gateway_websockets_open 1.0" in metrics
    await wait_until(lambda: any("websocket" in r.getMessage() for r in caplog.records))
    event = json.loads(next(r.getMessage() for r in caplog.records if "websocket" in r.getMessage()))
    assert (event["action"], event["namespace"], event["notebook"]) == ("notebook.access", "alice", "nb1")
    assert (event["details"]["bytes_in"], event["details"]["bytes_out"]) == (5, 5)
    assert "notebook_gateway_websockets_open 0.0" in await (await gateway.get("/metrics")).text()
