"""The WebSocket relay on the wire: frames pass as bytes, checked only by their headers.

A notebook and a client written by hand on loopback sockets, so that the test sees the exact bytes
each side receives: fragments and the pings between them arrive as they were sent, a frame over the
size limit is refused from its header, a client that does not read holds up the notebook instead of
the gateway's memory, and no extension is negotiated on either leg.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway import keys
from gateway.proxy_ws import Relay
from tests.conftest import wait_until
from tests.origins import OriginClient

Routes = Callable[[dict[tuple[str, str], str]], Path]
WS = "/notebook/alice/nb1/ws"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MiB = 1024 * 1024


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    """One frame as RFC 6455 section 5.2 lays it out (masked, as a client's must be, unless `mask=False`)."""
    head = bytes(((0x80 if fin else 0) | opcode,))
    bit = 0x80 if mask else 0
    if len(payload) < 126:
        head += bytes((bit | len(payload),))
    elif len(payload) < 1 << 16:
        head += bytes((bit | 126,)) + struct.pack("!H", len(payload))
    else:
        head += bytes((bit | 127,)) + struct.pack("!Q", len(payload))
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(byte ^ key[index % 4] for index, byte in enumerate(payload))


def close_of(data: bytes) -> tuple[int, bytes]:
    """The code and reason of the close frame `data` starts with (masked or not)."""
    assert data[0] == 0x88, data[:16]
    length = data[1] & 0x7F
    if data[1] & 0x80:
        key, payload = data[2:6], data[6 : 6 + length]
        payload = bytes(byte ^ key[index % 4] for index, byte in enumerate(payload))
    else:
        payload = data[2 : 2 + length]
    return struct.unpack("!H", payload[:2])[0], payload[2:]


class RawNotebook:
    """A notebook server by hand: answers the upgrade itself, then records every byte it receives;
    the test writes to `writer` whatever the notebook should send."""

    def __init__(self, *, answer_extension: str | None = None, send_buffer: int | None = None) -> None:
        self.answer_extension = answer_extension
        self.send_buffer = send_buffer
        self.request = b""
        self.received = bytearray()
        self.writer: asyncio.StreamWriter | None = None
        self.connected = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.request = await reader.readuntil(b"\r\n\r\n")
        headers = dict(
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(":") for line in self.request.decode().split("\r\n")[1:] if line)
        )
        accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + GUID).digest()).decode()
        extra = f"Sec-WebSocket-Extensions: {self.answer_extension}\r\n" if self.answer_extension else ""
        writer.write(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n".encode()
        )
        if self.send_buffer is not None:  # a small kernel buffer, so that backpressure shows soon
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)
        self.writer = writer
        self.connected.set()
        while data := await reader.read(65536):
            self.received += data
        writer.close()

    async def stop(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def notebook() -> Any:
    raw = RawNotebook()
    yield raw
    await raw.stop()


Open = Callable[..., Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]]]


@pytest.fixture
async def open_raw(gateway_factory: Callable[..., Any], routes_file: Routes) -> Any:
    """A gateway routing alice/nb1 to `notebook`, and a WebSocket to it opened by hand: (reader, writer, 101)."""

    async def open_(
        notebook: RawNotebook, *, extra: str = "", receive_buffer: int | None = None, **settings: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
        url = await notebook.start()
        client: OriginClient = await gateway_factory(routes_file=routes_file({("alice", "nb1"): url}), **settings)
        open_.client = client  # type: ignore[attr-defined]
        signed_in = await client.raw_headers(WS)
        sock = socket.socket()
        if receive_buffer is not None:  # before connecting, so that the window stays small
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        assert client.port is not None
        await asyncio.get_running_loop().sock_connect(sock, (client.host, client.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        headers = "".join(f"{name}: {value}\r\n" for name, value in signed_in.items())
        writer.write(
            f"GET {WS} HTTP/1.1\r\n{headers}Upgrade: websocket\r\nConnection: Upgrade\r\n{extra}"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        writers.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        return reader, writer, head

    writers: list[asyncio.StreamWriter] = []
    yield open_
    for writer in writers:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def stalled(count: Callable[[], int], quiet_s: float = 0.5) -> Callable[[], Awaitable[bool]]:
    """For wait_until: true once `count()` has not changed for `quiet_s`."""

    async def check() -> bool:
        before = count()
        await asyncio.sleep(quiet_s)
        return count() == before

    return check


def open_websockets(client: OriginClient) -> set[Callable[[int, bytes], Awaitable[None]]]:
    """How the gateway closes each of its open WebSockets (what shutdown calls)."""
    app = getattr(client.server, "app", None)
    assert isinstance(app, web.Application)
    return app[keys.WEBSOCKETS]


def the_relay(client: OriginClient) -> Relay:
    (close,) = open_websockets(client)
    relay = getattr(close, "__self__")  # noqa: B009 (a bound method's object, which mypy does not know)
    assert isinstance(relay, Relay)
    return relay


async def test_fragments_and_a_ping_between_them_arrive_as_the_same_bytes(
    open_raw: Open, notebook: RawNotebook
) -> None:
    reader, writer, head = await open_raw(notebook)
    assert head.startswith(b"HTTP/1.1 101")
    # The client's masked frames reach the notebook unchanged: same fragments, same ping between, same masks.
    sent = frame(0x1, b"hel", fin=False) + frame(0x9, b"still there?") + frame(0x0, "lo wörld".encode())
    writer.write(sent)
    await wait_until(lambda: len(notebook.received) >= len(sent))
    assert bytes(notebook.received) == sent
    # And the notebook's unmasked frames reach the client unchanged.
    assert notebook.writer is not None
    back = frame(0x2, b"\x00" * 200, fin=False, mask=False) + frame(0xA, b"pong", mask=False)
    back += frame(0x0, b"\xff" * 70000, mask=False)  # a 64-bit length field
    notebook.writer.write(back)
    assert await asyncio.wait_for(reader.readexactly(len(back)), 5) == back


async def test_a_frame_over_the_limit_is_refused_from_its_header_before_its_payload(
    open_raw: Open, notebook: RawNotebook
) -> None:
    reader, writer, _ = await open_raw(notebook, websocket_max_message_bytes=MiB)
    small = frame(0x2, b"x" * 1000)
    writer.write(small)
    await wait_until(lambda: len(notebook.received) == len(small))
    # Only the header of a 2 MiB frame: nothing of its payload is ever sent.
    writer.write(bytes((0x82, 0x80 | 127)) + struct.pack("!Q", 2 * MiB) + os.urandom(4))
    answer = await asyncio.wait_for(reader.read(256), 5)
    assert close_of(answer) == (1009, b"message too big")
    # The notebook got nothing of that frame, then the same close (masked, as from a client).
    await wait_until(lambda: len(notebook.received) > len(small))
    assert close_of(bytes(notebook.received[len(small) :])) == (1009, b"message too big")
    assert notebook.received[len(small) + 1] & 0x80  # masked


async def test_a_message_over_the_limit_in_fragments_is_refused_at_the_fragment_that_crosses_it(
    open_raw: Open, notebook: RawNotebook
) -> None:
    reader, writer, _ = await open_raw(notebook, websocket_max_message_bytes=MiB)
    first = frame(0x2, b"a" * (600 * 1024), fin=False)
    writer.write(first)
    await wait_until(lambda: len(notebook.received) == len(first))
    writer.write(bytes((0x80, 0x80 | 127)) + struct.pack("!Q", 600 * 1024) + os.urandom(4))  # its header alone
    assert close_of(await asyncio.wait_for(reader.read(256), 5)) == (1009, b"message too big")
    await wait_until(lambda: len(notebook.received) > len(first))
    assert close_of(bytes(notebook.received[len(first) :])) == (1009, b"message too big")


async def test_a_client_that_does_not_read_holds_up_the_notebook_not_the_gateways_memory(
    open_raw: Open,
) -> None:
    notebook = RawNotebook(send_buffer=64 * 1024)
    try:
        reader, writer, _ = await open_raw(notebook, receive_buffer=64 * 1024)
        relay = the_relay(open_raw.client)  # type: ignore[attr-defined]
        assert notebook.writer is not None
        chunk = frame(0x2, b"k" * (256 * 1024), mask=False)
        total = 128  # 32 MiB, far more than the sockets' buffers on the way hold
        sent = 0

        async def flood() -> None:
            nonlocal sent
            assert notebook.writer is not None
            for _ in range(total):
                notebook.writer.write(chunk)
                await notebook.writer.drain()
                sent += 1

        sending = asyncio.create_task(flood())
        await wait_until(lambda: not relay.outbound.source.is_reading())  # the notebook's connection is paused
        await wait_until(stalled(lambda: sent))  # the kernel's buffers on the way may still grow for a while
        assert sent < total  # the notebook can send no more
        # What the gateway holds for the client: about its high-water mark, not what the notebook sent.
        assert relay.inbound.source.get_write_buffer_size() <= 2 * MiB
        # Once the client reads, everything arrives and the notebook is read again.
        received = await asyncio.wait_for(reader.readexactly(total * len(chunk)), 30)
        assert received == chunk * total
        await asyncio.wait_for(sending, 5)
        assert relay.outbound.source.is_reading()
    finally:
        await notebook.stop()


async def test_both_connections_send_small_frames_at_once(open_raw: Open, notebook: RawNotebook) -> None:
    await open_raw(notebook)
    relay = the_relay(open_raw.client)  # type: ignore[attr-defined]
    for transport in (relay.inbound.source, relay.outbound.source):
        assert transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


async def test_no_extension_is_negotiated_on_either_leg(open_raw: Open, notebook: RawNotebook) -> None:
    offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    _, writer, head = await open_raw(notebook, extra=offer)
    assert head.startswith(b"HTTP/1.1 101")
    assert b"sec-websocket-extensions" not in head.lower()  # compressed frames could not pass unchanged
    assert b"sec-websocket-extensions" not in notebook.request.lower()


async def test_a_notebook_that_answers_with_an_extension_nobody_offered_is_a_502(open_raw: Open) -> None:
    notebook = RawNotebook(answer_extension="permessage-deflate")
    try:
        _, writer, head = await open_raw(notebook)
        assert head.startswith(b"HTTP/1.1 502"), head
    finally:
        await notebook.stop()


async def test_a_close_is_relayed_as_it_is_and_nothing_after_it(open_raw: Open, notebook: RawNotebook) -> None:
    reader, writer, _ = await open_raw(notebook)
    close = frame(0x8, struct.pack("!H", 4001) + b"bye now")
    writer.write(close + frame(0x1, b"too late"))  # in one write: the relay must cut between them
    await wait_until(lambda: len(notebook.received) >= len(close))
    await asyncio.sleep(0.2)
    assert bytes(notebook.received) == close
    assert notebook.writer is not None
    answer = frame(0x8, struct.pack("!H", 4001) + b"bye now", mask=False)
    notebook.writer.write(answer)
    assert await asyncio.wait_for(reader.read(), 5) == answer  # then the gateway closes the connection


async def test_the_gateways_own_close_waits_for_the_end_of_the_frame_in_flight(
    open_raw: Open, notebook: RawNotebook
) -> None:
    reader, _, _ = await open_raw(notebook)
    client: OriginClient = open_raw.client  # type: ignore[attr-defined]
    assert notebook.writer is not None
    payload = os.urandom(100_000)
    whole = frame(0x2, payload, mask=False)
    notebook.writer.write(whole[:50_000])  # half a frame
    assert await asyncio.wait_for(reader.readexactly(50_000), 5) == whole[:50_000]
    (close,) = open_websockets(client)

    async def shut_down() -> None:
        await close(1001, b"gateway shutting down")  # as at shutdown

    closing = asyncio.create_task(shut_down())
    # Both sides hear it: the notebook at once, as a masked close ...
    await wait_until(lambda: len(notebook.received) > 0)
    assert close_of(bytes(notebook.received)) == (1001, b"gateway shutting down")
    # ... the client only after the rest of the frame it is in the middle of.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(1), 0.3)
    notebook.writer.write(whole[50_000:])
    assert await asyncio.wait_for(reader.readexactly(len(whole) - 50_000), 5) == whole[50_000:]
    assert close_of(await asyncio.wait_for(reader.read(256), 5)) == (1001, b"gateway shutting down")
    closing.cancel()
