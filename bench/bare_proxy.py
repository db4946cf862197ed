"""The reference for proxy_bench.py: a bare aiohttp reverse proxy, no sign-in, log or metrics.
One shared ClientSession, bodies streamed both ways, WebSockets relayed, uvloop when importable.
Usage: `bare_proxy.py PORT PREFIX=URL [PREFIX=URL ...]` (the longest matching prefix wins)."""

import asyncio
import sys
from typing import Any

from aiohttp import ClientSession, WSMsgType, web

HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "host", "te", "trailer"}
ROUTES = sorted((arg.split("=", 1) for arg in sys.argv[2:]), key=lambda route: -len(route[0]))


async def relay(source: Any, sink: Any) -> None:  # a server or a client WebSocket
    async for msg in source:
        await (sink.send_str(msg.data) if msg.type == WSMsgType.TEXT else sink.send_bytes(msg.data))
    await sink.close()


async def proxy(request: web.Request) -> web.StreamResponse:
    url = next((u for p, u in ROUTES if request.path.startswith(p)), None)
    if url is None:
        raise web.HTTPNotFound()
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP and not k.startswith("Sec-WebSocket")}
    if request.headers.get("Upgrade", "").lower() == "websocket":
        async with request.app["client"].ws_connect(url + request.path_qs, headers=headers) as up:
            down = web.WebSocketResponse()
            await down.prepare(request)
            await asyncio.gather(relay(down, up), relay(up, down))
            return down
    body = request.content if request.body_exists else None
    client = request.app["client"]
    async with client.request(
        request.method, url + request.path_qs, headers=headers, data=body, allow_redirects=False
    ) as up:
        resp = web.StreamResponse(
            status=up.status, headers={k: v for k, v in up.headers.items() if k.lower() not in HOP}
        )
        await resp.prepare(request)
        async for chunk in up.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp


async def make_app() -> web.Application:
    app = web.Application()
    app["client"] = ClientSession(auto_decompress=False, skip_auto_headers=("User-Agent",))
    app.on_cleanup.append(lambda app: app["client"].close())
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


if __name__ == "__main__":
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    web.run_app(make_app(), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
