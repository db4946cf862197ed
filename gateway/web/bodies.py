"""Reading a JSON request body: small, strictly JSON, and only with the JSON content type."""

from __future__ import annotations

import json
from decimal import Decimal

from aiohttp import web

from ..errors import BadRequest, PayloadTooLarge
from .limits import send_continue


async def read_json(request: web.Request, max_bytes: int) -> object:
    """The body as JSON, at most `max_bytes`. Requiring the JSON content type also keeps plain HTML
    forms on other sites from posting here (they cannot send it without CORS)."""
    if request.content_type != "application/json":
        raise BadRequest("Send the request body as JSON, with Content-Type: application/json.")
    too_large = PayloadTooLarge(f"The request body is larger than {max_bytes // 1024} KiB.")
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large
    await send_continue(request)  # authenticated, and the body is bounded: the client may send it
    raw = bytearray()
    async for chunk in request.content.iter_chunked(16 * 1024):
        raw += chunk
        if len(raw) > max_bytes:
            raise too_large
    try:
        # Decimal keeps 0.1 exactly 0.1; NaN, Infinity and repeated keys are refused, not guessed at.
        return json.loads(raw, parse_float=Decimal, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BadRequest(f"The request body is not valid JSON: {exc}") from None


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not allowed")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {key[:100]!r} appears twice")
        result[key] = value
    return result
