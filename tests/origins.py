"""Test clients for notebook origins: a resolver that sends `*.localhost` and `*.nb.test` to loopback
(as Chromium and curl do for `*.localhost`; glibc does not), and a `TestClient` that addresses a
notebook path to the notebook's own origin when the app isolates notebooks, going round the
handshake first as a browser would. The existing proxy tests then run unchanged in both modes.
"""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from gateway import keys, routing
from gateway.cookies import NOTEBOOK_COOKIE, SESSION_COOKIE
from gateway.origins import NotebookOrigins

LOOPBACK_SUFFIXES = (".localhost", ".nb.test")
BROWSER = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}


class LoopbackResolver(AbstractResolver):
    """`localhost`, `*.localhost` and `*.nb.test` are 127.0.0.1; anything else as the system says."""

    def __init__(self) -> None:
        self._default = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host == "localhost" or host.endswith(LOOPBACK_SUFFIXES):
            return [ResolveResult(hostname=host, host="127.0.0.1", port=port, family=socket.AF_INET, proto=0, flags=0)]
        return await self._default.resolve(host, port, family)

    async def close(self) -> None:
        await self._default.close()


@pytest.fixture(params=["isolated", "single"], name="notebook_origins")
def in_both_origin_modes(request: pytest.FixtureRequest) -> str:
    """Imported by a test module, it runs every test there with each notebook on its own origin, and on
    the gateway's (it overrides conftest's `notebook_origins`)."""
    return str(request.param)


def loopback_connector() -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(resolver=LoopbackResolver())


class OriginClient(TestClient[web.Request, web.Application]):
    """A `TestClient` that, when the app isolates notebooks, sends `/notebook/<ns>/<name>/...` to that
    notebook's origin with that Origin header, after a handshake if it has a session but no credential there."""

    def __init__(self, server: TestServer, **kwargs: Any) -> None:
        kwargs.setdefault("connector", loopback_connector())
        super().__init__(server, **kwargs)

    @property
    def origins(self) -> NotebookOrigins | None:
        app = getattr(self.server, "app", None)
        origins = app.get(keys.ORIGINS) if isinstance(app, web.Application) else None
        return origins if origins is not None and origins.isolated else None

    def notebook_origin(self, path: Any) -> str | None:
        """The notebook origin `path` goes to, or None for a gateway path (or in single-origin mode)."""
        origins = self.origins
        if origins is None:
            return None
        raw = path.raw_path_qs if isinstance(path, URL) else str(path)
        try:
            target = routing.parse(raw)
        except Exception:
            return None
        return origins.origin(target.namespace, target.name) if target is not None else None

    def make_url(self, path: Any) -> URL:
        origin = self.notebook_origin(path)
        if origin is None:
            return super().make_url(path)
        relative = path if isinstance(path, URL) else URL(str(path))
        return URL(origin).join(relative)

    async def _request(self, method: str, path: Any, **kwargs: Any) -> aiohttp.ClientResponse:
        origin = self.notebook_origin(path)
        if origin is not None:
            await self.handshake(origin, path)
            kwargs["headers"] = {"Origin": origin, **(kwargs.get("headers") or {})}
        return await super()._request(method, path, **kwargs)

    async def _ws_connect(self, path: Any, **kwargs: Any) -> Any:
        origin = self.notebook_origin(path)
        if origin is not None:
            await self.handshake(origin, path)
            kwargs["headers"] = {"Origin": origin, **(kwargs.get("headers") or {})}
        return await super()._ws_connect(path, **kwargs)

    async def handshake(self, origin: str, path: Any) -> None:
        """Get the notebook's credential as a browser would: page load, gateway host, callback."""
        jar = self.session.cookie_jar
        if SESSION_COOKIE not in jar.filter_cookies(super().make_url("/")):
            return  # nobody signed in: the request goes as it is
        if NOTEBOOK_COOKIE in jar.filter_cookies(URL(origin)):
            return
        url = self.make_url(path)
        for _ in range(3):  # notebook origin -> gateway host -> callback
            async with self.session.get(url, headers=BROWSER, allow_redirects=False) as resp:
                location = resp.headers.get("Location")
                if resp.status != 302 or location is None:
                    return
                url = url.join(URL(location))

    async def raw_headers(self, path: str) -> dict[str, str]:
        """Host, Cookie and Origin for a hand-written request to `path`, as this client would send them."""
        url = self.make_url(path)
        origin = self.notebook_origin(path)
        if origin is not None:
            await self.handshake(origin, path)
        cookies = self.session.cookie_jar.filter_cookies(url)
        return {
            "Host": f"{url.host}:{url.port}",
            "Cookie": "; ".join(f"{name}={morsel.value}" for name, morsel in cookies.items()),
            "Origin": str(url.origin()),
        }
