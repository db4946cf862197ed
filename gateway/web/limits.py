"""Request bodies the gateway reads itself: never inflated, and `100 Continue` only once a handler wants one.

The server is built with `auto_decompress=False` and `client_max_size` (see `app.py`): a compressed
body is never inflated by the gateway (a 388 KB gzip body once grew the process by 903 MiB), and
`request.post()` / `read()` stop at GATEWAY_BODY_MAX_BYTES with a 413. The notebook proxy streams
bodies through as the client encoded them, so this module leaves its route alone.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.http import HttpVersion11
from aiohttp.typedefs import Handler

from .. import keys
from ..errors import UnsupportedEncoding

PROXY_ROUTE = "proxy"  # the catch-all notebook route: bodies pass through to the notebook untouched


@web.middleware
async def refuse_encoded_bodies(request: web.Request, handler: Handler) -> web.StreamResponse:
    """415 for a body with a Content-Encoding on the gateway's own routes: refused, not inflated."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity") and request.match_info.route.name != PROXY_ROUTE:
        raise UnsupportedEncoding()
    return await handler(request)


async def defer_continue(request: web.Request) -> None:
    """The routes' `Expect` handler: refuse an expectation we cannot meet (417), but do not answer
    `100 Continue` yet. aiohttp's default answers it before any middleware ran, so an anonymous
    client was invited to send its body; here only `send_continue`, called by a handler once the
    request is authenticated and authorised, sends it. A client that gets a final status instead
    never sends the body; one that stops waiting (RFC 9110 §10.1.1) sends it to a bounded reader."""
    expect = request.headers.get("Expect", "")
    if expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect[:100]}")


async def send_continue(request: web.Request) -> None:
    """Answer `Expect: 100-continue` now: the handler is about to read the body it may send."""
    if request.version != HttpVersion11 or request.headers.get("Expect", "").lower() != "100-continue":
        return
    writer = request.writer
    if request.get(keys.CONTINUED) or writer.output_size:  # already sent, or the response has begun
        return
    request[keys.CONTINUED] = True
    await writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    writer.output_size = 0  # as aiohttp's own handler does: the response itself has not started
