"""`RootServer`: stands in for the servers Kubeflow runs behind a path rewrite, which serve from `/`
and know nothing of `/notebook/<ns>/<name>/`: code-server (VS Code) and, with `root_path_header`,
RStudio, which also needs `X-RStudio-Root-Path` to build its links and refuses to work without it.

Paths (anything else, the `/notebook/...` prefix included, is a 404, as code-server answers):
  /        JSON of the path, query and headers it received (a 400 without the root-path header when required)
  /echo    the same
  /ws      WebSocket: sends the handshake's path and headers as JSON, then echoes text frames
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

ROOT_PATH_HEADER = "X-RStudio-Root-Path"
SEEN: web.AppKey[list[dict[str, Any]]] = web.AppKey("seen", list)


def make_app(*, root_path_header: bool) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        seen = _seen(request)
        request.app[SEEN].append(seen)
        if root_path_header and ROOT_PATH_HEADER not in request.headers:
            return web.Response(status=400, text=f"{ROOT_PATH_HEADER} is required")
        return web.json_response(seen)

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json(_seen(request))
        async for message in ws:
            await ws.send_str(message.data)
        return ws

    app = web.Application()
    app[SEEN] = []
    app.router.add_get("/", echo)
    app.router.add_get("/echo", echo)
    app.router.add_get("/ws", websocket)
    return app


def _seen(request: web.Request) -> dict[str, Any]:
    return {"path": request.path, "query": request.query_string, "headers": dict(request.headers)}


class RootServer:
    """A running root-serving server: `url` is its origin, `seen` the requests it answered."""

    def __init__(self, server: TestServer) -> None:
        self.server = server
        self.url = str(server.make_url("/")).rstrip("/")
        assert server.app is not None
        self.seen: list[dict[str, Any]] = server.app[SEEN]

    @classmethod
    async def start(cls, aiohttp_server: Callable[..., Any], *, root_path_header: bool = False) -> RootServer:
        return cls(await aiohttp_server(make_app(root_path_header=root_path_header)))
