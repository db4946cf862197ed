"""`create_app(settings)`: the only module that constructs things.

No I/O happens here: resources open in the cleanup contexts, in order, and close in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
import jinja2
from aiohttp import WSCloseCode, web

from . import health, keys, proxy
from .audit import AuditLog
from .authz import OpenAuthorizer
from .backends import NotebookBackend
from .backends.local import LocalBackend
from .backends.static import StaticBackend
from .config import ConfigError, Settings
from .metrics import Metrics
from .middlewares import canonical_path, error_pages, identify, measure, request_context
from .spawner import SpawnerConfig
from .web import api, pages

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> web.Application:
    """Build the gateway for `settings`."""
    app = web.Application(
        middlewares=[request_context, measure, error_pages, canonical_path, identify],
        # Uploads are streamed to the notebook, never read whole, so no size cap applies to them.
        client_max_size=0,
    )
    app[keys.SETTINGS] = settings
    app[keys.METRICS] = Metrics()
    app[keys.AUDIT] = AuditLog()
    app[keys.AUTHZ] = OpenAuthorizer()
    app[keys.WEBSOCKETS] = set()
    app[keys.TEMPLATES] = jinja2.Environment(
        loader=jinja2.PackageLoader("gateway", "web/templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    app[keys.SPAWNER] = SpawnerConfig.load(settings.spawner_config)
    app.cleanup_ctx.extend([http_client, notebook_backend])
    app.on_shutdown.append(close_websockets)
    app.add_routes([*health.routes, *api.routes, *pages.routes])
    app.router.add_static("/static/", pages.STATIC_DIR, name="static")
    app.router.add_route("*", "/{tail:.*}", proxy.handle, name="proxy")  # last: it matches everything
    return app


async def http_client(app: web.Application) -> AsyncIterator[None]:
    """One pooled client for every upstream notebook server."""
    settings = app[keys.SETTINGS]
    timeout = aiohttp.ClientTimeout(
        total=None,  # streams and WebSockets may last for hours
        sock_connect=settings.upstream_connect_timeout_s,
        sock_read=settings.upstream_idle_timeout_s,
    )
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=256, keepalive_timeout=30)
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,  # bodies pass through as the notebook encoded them
        cookie_jar=aiohttp.DummyCookieJar(),  # the gateway keeps no upstream cookies of its own
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
    ) as session:
        app[keys.HTTP] = session
        yield


def build_backend(settings: Settings) -> NotebookBackend:
    if settings.backend == "local":
        return LocalBackend(settings.local_dir)
    if settings.backend == "static":
        if settings.routes_file is None:
            raise ConfigError(["GATEWAY_ROUTES_FILE: required when GATEWAY_BACKEND=static"])
        return StaticBackend(settings.routes_file)
    raise ConfigError(["GATEWAY_BACKEND: the kubernetes backend is not available in this release yet"])


async def notebook_backend(app: web.Application) -> AsyncIterator[None]:
    backend = build_backend(app[keys.SETTINGS])
    await backend.open()  # never serve from an empty view
    app[keys.BACKEND] = backend
    try:
        yield
    finally:
        await backend.close()


async def close_websockets(app: web.Application) -> None:
    """On shutdown, tell every relayed WebSocket that the gateway is going away (1001)."""
    sockets = [*app[keys.WEBSOCKETS]]
    if sockets:
        log.info("closing %d WebSocket(s) for shutdown", len(sockets))
    with contextlib.suppress(Exception):
        await asyncio.gather(
            *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"gateway shutting down") for ws in sockets),
            return_exceptions=True,
        )
