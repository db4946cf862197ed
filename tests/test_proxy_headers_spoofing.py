"""Headers that some upstream treats as identity or routing never reach a notebook from a client.

The list here is written from the threat (who believes which header), not imported from the code:
a header the gateway forgot to strip fails this test.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Client
from tests.fakes.upstream import FakeUpstream

Routes = Callable[[dict[tuple[str, str], str]], Path]

SPOOFED = [
    # URL rewrites believed by IIS, Symfony and Zend: the request would be served as another path
    "X-Original-URL",
    "X-Rewrite-URL",
    "X-Original-URI",
    "X-Forwarded-Prefix",
    "X-Forwarded-Uri",
    "X-HTTP-Method-Override",
    "X-Host",
    # client addresses believed by allow-lists and rate limits
    "True-Client-IP",
    "X-Client-IP",
    "X-Cluster-Client-IP",
    "CF-Connecting-IP",
    "Fastly-Client-IP",
    # identity believed by Grafana, Azure, Google IAP, AWS ALB, Cloudflare Access and home-grown apps
    "X-User",
    "X-WEBAUTH-USER",
    "X-Webauth-Email",
    "X-Authenticated-User",
    "X-MS-CLIENT-PRINCIPAL-NAME",
    "X-Goog-Authenticated-User-Email",
    "X-Amzn-Oidc-Identity",
    "Cf-Access-Authenticated-User-Email",
    "X_USER",  # underscores: some servers fold them into dashes
]


@pytest.fixture
async def upstream(aiohttp_server: Any) -> FakeUpstream:
    return await FakeUpstream.start(aiohttp_server)


@pytest.fixture
async def gateway(gateway_factory: Callable[..., Any], routes_file: Routes, upstream: FakeUpstream) -> Client:
    client: Client = await gateway_factory(routes_file=routes_file({("alice", "nb1"): upstream.url}))
    return client


async def test_identity_and_routing_headers_from_the_client_are_removed(gateway: Client) -> None:
    resp = await gateway.get("/notebook/alice/nb1/echo", headers={name: "admin" for name in SPOOFED})
    assert resp.status == 200
    seen = await resp.json()
    received = {name.lower().replace("_", "-") for name, _ in seen["headers"]}
    assert received.isdisjoint({name.lower().replace("_", "-") for name in SPOOFED})
    assert "admin" not in str(seen["headers"])
    assert seen["raw_path"] == "/notebook/alice/nb1/echo"


async def test_basic_authorization_and_host_pass_to_the_notebook(gateway: Client) -> None:
    # Basic (or Jupyter's `token`) is addressed to the notebook, not to the gateway; Host is what
    # Jupyter compares Origin with. Neither is read by the gateway as identity or for routing.
    resp = await gateway.get("/notebook/alice/nb1/echo", headers={"Authorization": "Basic dTpw"})
    headers = dict((await resp.json())["headers"])
    assert headers["Authorization"] == "Basic dTpw"
    assert headers["Host"] == f"{gateway.host}:{gateway.port}"
