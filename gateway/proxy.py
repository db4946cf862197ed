"""The catch-all handler: streams HTTP and WebSocket traffic to the notebook a path names."""

from __future__ import annotations

from aiohttp import web

from . import keys
from .errors import NotFound


async def handle(request: web.Request) -> web.StreamResponse:
    target = request[keys.NOTEBOOK_PATH]
    if target is None:
        raise NotFound()
    raise NotFound(f"proxying to {target.prefix} is being built")
