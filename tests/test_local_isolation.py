"""Local Jupyter servers accept only the gateway: a token only it holds, loopback Host names only,
and no credential for the server ever handed to the browser."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway import keys
from gateway.backends.local import LocalBackend
from tests.conftest import Client, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
async def gateway(gateway_factory: Callable[..., Any], tmp_path: Path) -> Client:
    client: Client = await gateway_factory(backend="local", local_dir=tmp_path)
    resp = await client.post("/api/namespaces/alice/notebooks", json={"name": "nb1"})
    assert resp.status == 200, await resp.text()

    async def ready() -> bool:
        status = await client.get("/notebook/alice/nb1/api/status")
        return status.status == 200

    await wait_until(ready, timeout_s=60)
    return client


def jupyter_url(client: Client) -> str:
    url = client.app[keys.BACKEND].route("alice", "nb1")
    assert url is not None
    return str(url.with_path("/notebook/alice/nb1/api/contents"))


async def test_a_local_process_without_the_gateway_is_refused(gateway: Client, http: aiohttp.ClientSession) -> None:
    url = jupyter_url(gateway)
    async with http.get(url) as resp:  # any local process: same machine, no token
        assert resp.status == 403
    async with http.get(url, headers={"Authorization": "token guessed"}) as resp:
        assert resp.status == 403


async def test_a_dns_rebinding_page_is_refused_by_host(gateway: Client, http: aiohttp.ClientSession) -> None:
    # A page on evil.example whose name now resolves to 127.0.0.1 sends its own Host: refused before
    # any token is looked at, and it has none anyway.
    async with http.get(jupyter_url(gateway), headers={"Host": "evil.example"}) as resp:
        assert resp.status == 403


async def test_through_the_gateway_no_token_or_upstream_login_reaches_the_browser(gateway: Client) -> None:
    resp = await gateway.get("/notebook/alice/nb1/api/contents")
    assert resp.status == 200
    backend = gateway.app[keys.BACKEND]
    assert isinstance(backend, LocalBackend)
    token = backend.upstream_token("alice", "nb1")
    assert token and token not in str(resp.headers) and token not in await resp.text()
    page = await gateway.get("/notebook/alice/nb1/lab")  # JupyterLab writes its own token into its pages
    assert page.status == 200 and token not in await page.text()
    assert not [value for value in resp.headers.getall("Set-Cookie", []) if "upstream_login" in value]
    assert "upstream_login" not in str(gateway.session.cookie_jar.filter_cookies(gateway.make_url("/")))
