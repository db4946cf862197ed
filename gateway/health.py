"""`/healthz` (the process is alive), `/readyz` (ready to serve; lists what is not) and `/metrics`."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import keys

routes = web.RouteTableDef()


@routes.get("/healthz", name="healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz", name="readyz")
async def readyz(request: web.Request) -> web.Response:
    backend = request.app[keys.BACKEND]
    problems: dict[str, str] = {}
    if not backend.synced:
        problems["backend"] = f"the {backend.name} backend has not synced yet"
    if request.app[keys.HTTP].closed:
        problems["upstream_client"] = "the upstream HTTP client is closed"
    status = 503 if problems else 200
    return web.json_response({"ready": not problems, "backend": backend.name, "problems": problems}, status=status)


@routes.get("/metrics", name="metrics")
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[keys.METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
