"""Server-rendered pages. For now, a landing page pointing at the notebook servers API."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from .. import keys

STATIC_DIR = Path(__file__).parent / "static"

routes = web.RouteTableDef()


@routes.get("/", name="index")
async def index(request: web.Request) -> web.Response:
    settings = request.app[keys.SETTINGS]
    template = request.app[keys.TEMPLATES].get_template("index.html")
    body = template.render(backend=request.app[keys.BACKEND].name, base_url=settings.base_url)
    return web.Response(text=body, content_type="text/html")
