"""A real Jupyter server and kernel behind the gateway: `print(6*7)` comes back as `42`.

Jupyter's own XSRF check stays on, so its `_xsrf` cookie and `X-XSRFToken` header must pass the proxy,
and its WebSocket Origin check sees the browser's Origin next to the Host the gateway preserved.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Client, JupyterServer

Routes = Callable[[dict[tuple[str, str], str]], Path]
KERNEL_PROTOCOL = "v1.kernel.websocket.jupyter.org"


def encode_v1(channel: str, parts: list[bytes]) -> bytes:
    """Jupyter's v1 kernel WebSocket framing: a count of offsets, the offsets, the channel, the parts."""
    sections = [channel.encode(), *parts]
    offsets = [8 * (len(sections) + 2)]
    for section in sections:
        offsets.append(offsets[-1] + len(section))
    return b"".join([len(offsets).to_bytes(8, "little"), *(o.to_bytes(8, "little") for o in offsets), *sections])


def decode_v1(frame: bytes) -> tuple[str, list[bytes]]:
    count = int.from_bytes(frame[:8], "little")
    offsets = [int.from_bytes(frame[8 * (i + 1) : 8 * (i + 2)], "little") for i in range(count)]
    sections = [frame[start:end] for start, end in zip(offsets, offsets[1:], strict=False)]
    return sections[0].decode(), sections[1:]


def execute_request(code: str) -> tuple[str, bytes]:
    msg_id = uuid.uuid4().hex
    header = {
        "msg_id": msg_id,
        "msg_type": "execute_request",
        "username": "test",
        "session": uuid.uuid4().hex,
        "version": "5.3",
        "date": datetime.now(UTC).isoformat(),
    }
    content = {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False}
    parts = [json.dumps(part).encode() for part in (header, {}, {}, content)]
    return msg_id, encode_v1("shell", parts)


async def stream_output(ws: aiohttp.ClientWebSocketResponse, msg_id: str) -> str:
    """The text of the first `stream` message the kernel sends in reply to `msg_id`."""
    while True:
        channel, parts = decode_v1(await ws.receive_bytes(timeout=60))
        header, parent = json.loads(parts[0]), json.loads(parts[1])
        if channel == "iopub" and header["msg_type"] == "stream" and parent.get("msg_id") == msg_id:
            text: str = json.loads(parts[3])["text"]
            return text


@pytest.mark.slow
async def test_a_real_kernel_runs_code_through_the_gateway(
    gateway_factory: Callable[..., Any], routes_file: Routes, jupyter: JupyterServer
) -> None:
    gateway: Client = await gateway_factory(routes_file=routes_file({("alice", "nb1"): jupyter.url}))
    page = await gateway.get(jupyter.prefix, headers={"Accept": "text/html"})
    xsrf = page.cookies["_xsrf"].value  # set by Jupyter, through the gateway; the client's jar keeps it
    created = await gateway.post(
        jupyter.prefix + "api/kernels", json={"name": "python3"}, headers={"X-XSRFToken": xsrf}
    )
    assert created.status == 201, await created.text()
    kernel = (await created.json())["id"]
    origin = f"http://{gateway.host}:{gateway.port}"  # what a browser on the gateway's page sends
    try:
        channels = f"{jupyter.prefix}api/kernels/{kernel}/channels"
        async with gateway.ws_connect(channels, protocols=(KERNEL_PROTOCOL,), headers={"Origin": origin}) as ws:
            assert ws.protocol == KERNEL_PROTOCOL
            msg_id, frame = execute_request("print(6*7)")
            await ws.send_bytes(frame)
            assert await stream_output(ws, msg_id) == "42\n"
    finally:
        await gateway.delete(f"{jupyter.prefix}api/kernels/{kernel}", headers={"X-XSRFToken": xsrf})


@pytest.mark.slow
async def test_jupyter_refuses_a_post_without_its_xsrf_token_through_the_gateway(
    gateway_factory: Callable[..., Any], routes_file: Routes, jupyter: JupyterServer
) -> None:
    gateway: Client = await gateway_factory(routes_file=routes_file({("alice", "nb1"): jupyter.url}))
    await gateway.get(jupyter.prefix, headers={"Accept": "text/html"})
    refused = await gateway.post(jupyter.prefix + "api/kernels", json={"name": "python3"})
    assert refused.status == 403  # the check is on: the token in the other test really passed
    # ... and it is Jupyter's refusal, naming its XSRF check, not one of the gateway's (`{"error": "forbidden", ...}`).
    body = await refused.text()
    assert "_xsrf" in body and '"error"' not in body, body
