"""WebSocket frames as bytes (RFC 6455 section 5.2): the little a relay needs to know about them.

The proxy passes frames on without decoding them; it reads only each frame's header (for the
message size limit, the traffic count and the closing handshake) and writes its own close frames.
"""

from __future__ import annotations

import base64
import hashlib
import os

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
FIN = 0x80
RSV = 0x70  # the bits an extension may use: none is ever negotiated through the gateway
OPCODE = 0x0F
MASKED = 0x80
# The longest header: 2 bytes, an 8-byte extended length and a 4-byte mask key.
MAX_HEADER = 14
# A control frame's payload (close, ping, pong) holds at most this much.
MAX_CONTROL_PAYLOAD = 125


def parse_header(data: bytes | bytearray | memoryview, pos: int) -> tuple[int, int, int] | None:
    """The header at `pos`: (first byte, payload length, header size), or None until it is complete."""
    avail = len(data) - pos
    if avail < 2:
        return None
    second = data[pos + 1]
    length = second & 0x7F
    size = 6 if second & MASKED else 2
    if length == 126:
        size += 2
        if avail < size:
            return None
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
    elif length == 127:
        size += 8
        if avail < size:
            return None
        length = int.from_bytes(data[pos + 2 : pos + 10], "big")  # the top bit set is refused by the caller
    elif avail < size:
        return None
    return data[pos], length, size


def close_frame(code: int, reason: bytes, *, masked: bool) -> bytes:
    """A close frame with `code` and `reason` (cut to fit), masked as a client's must be."""
    payload = code.to_bytes(2, "big") + reason[: MAX_CONTROL_PAYLOAD - 2]
    if not masked:
        return bytes((FIN | OP_CLOSE, len(payload))) + payload
    key = os.urandom(4)
    body = bytes(byte ^ key[index % 4] for index, byte in enumerate(payload))
    return bytes((FIN | OP_CLOSE, MASKED | len(payload))) + key + body


# RFC 6455 section 1.3: what the server appends to the client's key before hashing it.
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_key(key: bytes) -> str:
    """The Sec-WebSocket-Accept that answers a Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1(key + _ACCEPT_GUID).digest()).decode()  # the RFC's hash, not a secret
