"""SIGTERM on a real gateway process: stop accepting, finish in-flight requests, close WebSockets with 1001."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSMsgType
from yarl import URL

from gateway.kube.reflector import stop as stop_task
from tests.conftest import unused_port, wait_until
from tests.fakes.node_idp import sign_in
from tests.fakes.upstream import FakeUpstream, WsClose
from tests.origins import loopback_connector

Routes = Callable[[dict[tuple[str, str], str]], Path]
GRACE_S = 10.0


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
async def gateway_process(
    routes_file: Routes, upstream: FakeUpstream, tmp_path: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """`python -m gateway dev` with the static backend routing alice/nb1 to the fake notebook.

    `dev` rather than `serve`, which also wants an external identity provider and Redis; both run the
    same aiohttp server, signal handling and shutdown sequence (`cli.run`). Users sign in through the
    built-in development provider."""
    port = unused_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "GATEWAY_BACKEND": "static",
        "GATEWAY_ROUTES_FILE": str(routes_file({("alice", "nb1"): upstream.url})),
        "GATEWAY_SHUTDOWN_GRACE_S": str(GRACE_S),
    }
    with (tmp_path / "gateway.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "dev", env=env, stdout=log, stderr=log, cwd=tmp_path
        )  # in tmp_path: dev keeps its policy file and audit log under ./.dev
    try:
        await wait_until(lambda: accepts(port) or proc.returncode is not None, timeout_s=30)
        assert proc.returncode is None, (tmp_path / "gateway.log").read_text()
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    # `dev` serves each notebook on its own *.localhost origin, which this resolver sends to loopback.
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True), connector=loopback_connector()
    ) as session:
        yield session


async def test_sigterm_drains_requests_and_closes_websockets(
    gateway_process: tuple[asyncio.subprocess.Process, str], upstream: FakeUpstream, browser: aiohttp.ClientSession
) -> None:
    proc, url = gateway_process
    nb_origin = f"http://nb1--alice.localhost:{url.rsplit(':', 1)[1]}"
    nb = nb_origin + "/notebook/alice/nb1/"
    callback = await sign_in(browser, URL(f"{url}/oauth2/start"), "alice@example.com", "any")
    assert (await browser.get(callback, allow_redirects=False)).status == 302
    # A page load on the notebook's origin fetches its credential (the handshake, through the gateway's host).
    assert (await browser.get(nb + "echo", headers={"Accept": "text/html"})).status == 200
    async with browser.ws_connect(nb + "ws", headers={"Origin": nb_origin}) as ws:
        await ws.send_str("before shutdown")
        assert await ws.receive_str() == "before shutdown"
        in_flight = asyncio.create_task(browser.get(nb + "slow?gate=1"))
        await wait_until(lambda: upstream.state.slow_waiting == 1)

        proc.send_signal(signal.SIGTERM)
        msg = await ws.receive()
        assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1001)
        await wait_until(lambda: not accepts(int(url.rsplit(":", 1)[1])))  # new connections refused
        assert not in_flight.done()

        upstream.state.slow_gate.set()  # let the in-flight request finish
        response = await in_flight
        assert (response.status, await response.text()) == (200, "finally")
    assert await asyncio.wait_for(proc.wait(), timeout=GRACE_S + 5) == 0
    # The notebook's side of the WebSocket heard the same "going away".
    assert upstream.state.ws_closes == [WsClose(1001, "gateway shutting down")]


async def test_a_background_task_that_drops_a_cancel_still_stops() -> None:
    """Python 3.11's wait_for can lose a cancel that lands as its wait ends; shutdown must not hang on it."""
    dropped = 0

    async def stubborn() -> None:
        nonlocal dropped
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if dropped:
                    raise
                dropped += 1  # the first cancel is lost, as it can be inside a library

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await stop_task(task)
    assert task.cancelled() and dropped == 1
