"""The benchmark's upstream: 1 KiB answers to any GET and a WebSocket echo at `<prefix>ws`.

With `--jwks FILE` it also publishes OpenID discovery and that key set under `/idp`, so that the
gateway in `serve` mode can check the bench's bearer token. Run by `proxy_bench.py` in its own process.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aiohttp import WSMsgType, web

BODY = b"x" * 1024
PREFIX = "/notebook/bench/nb/"
IDP = "/idp"


async def page(request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="text/plain")


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=0)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


def identity_provider(port: int, jwks: dict[str, object]) -> web.RouteTableDef:
    """Just enough of a provider for bearer tokens: discovery and the key set."""
    issuer = f"http://127.0.0.1:{port}{IDP}"
    routes = web.RouteTableDef()

    @routes.get(f"{IDP}/.well-known/openid-configuration")
    async def discovery(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": issuer,
                "authorization_endpoint": f"{issuer}/authorize",
                "token_endpoint": f"{issuer}/token",
                "jwks_uri": f"{issuer}/jwks",
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    @routes.get(f"{IDP}/jwks")
    async def keys(request: web.Request) -> web.Response:
        return web.json_response(jwks)

    return routes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jwks", type=Path, help="a JWKS file to publish at /idp/jwks")
    args = parser.parse_args()
    app = web.Application()
    if args.jwks is not None:
        app.add_routes(identity_provider(args.port, json.loads(args.jwks.read_text())))
    app.router.add_get(f"{PREFIX}ws", echo)
    app.router.add_route("*", "/{tail:.*}", page)
    # No access log: the upstream is the reference, so it should cost as little as it can.
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
