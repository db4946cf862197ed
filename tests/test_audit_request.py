"""Events the real gateway writes for real requests: sign-in and sign-out, refusals, a session's
first access to a notebook server, WebSockets, and failed refreshes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app import create_app
from gateway.audit.verify import verify
from tests.fakes.idp import FakeIdP, Refresh
from tests.fakes.node_idp import sign_in
from tests.fakes.upstream import FakeUpstream

from .conftest import Client, make_settings, sign_in_dev, unused_port, wait_until

NB = "/notebook/alice/nb1/"
Factory = Callable[..., Any]


def events(directory: Path, action: str | None = None) -> list[dict[str, Any]]:
    lines = b"".join(p.read_bytes() for p in sorted(directory.glob("audit-*.jsonl"))).splitlines()
    found = [json.loads(line) for line in lines]
    return [e for e in found if action is None or e["action"] == action]


@pytest.fixture
def audit_dir(tmp_path: Path) -> Path:
    return tmp_path / "audit"


@pytest.fixture
def gateway(gateway_factory: Factory, routes_file: Any, upstream: FakeUpstream, audit_dir: Path) -> Factory:
    """Builds a gateway writing its audit files to `audit_dir`, routing alice/nb1 to the fake notebook."""

    async def build(**options: Any) -> Client:
        routes = routes_file({("alice", "nb1"): upstream.url, ("bob", "nb1"): upstream.url})
        client: Client = await gateway_factory(routes_file=routes, audit_dir=audit_dir, **options)
        return client

    return build


async def test_sign_in_and_sign_out_are_recorded_with_the_session_hash(gateway: Factory, audit_dir: Path) -> None:
    client = await gateway(groups="ml-team")
    await client.post("/oauth2/sign_out", allow_redirects=False)
    [login] = events(audit_dir, "auth.login")
    [logout] = events(audit_dir, "auth.logout")
    assert (login["outcome"], login["actor"], login["groups"]) == ("allowed", "alice@example.com", ["ml-team"])
    assert login["client_ip"] == "127.0.0.1" and login["user_agent"].startswith("Python")
    assert len(login["session"]) == 32 and logout["session"] == login["session"]
    assert verify(audit_dir).ok


async def test_a_failed_sign_in_is_recorded_with_its_reason(gateway: Factory, audit_dir: Path) -> None:
    client = await gateway(user=None)
    await client.get("/oauth2/callback?error=access_denied&state=x", allow_redirects=False)
    [failed] = events(audit_dir, "auth.login")
    assert (failed["outcome"], failed["actor"], failed["reason"]) == ("failed", "-", "provider said access_denied")


async def test_401_and_403_on_notebook_and_api_routes_are_access_denied(
    gateway: Factory, audit_dir: Path, http: aiohttp.ClientSession
) -> None:
    client = await gateway()
    assert (await client.get("/notebook/bob/nb1/api/status")).status == 403
    async with http.get(client.make_url("/api/namespaces/alice/notebooks")) as anonymous:  # no cookie
        assert anonymous.status == 401
    assert (await client.get("/healthz")).status == 200  # not a notebook or API route: nothing recorded
    forbidden, unauthenticated = events(audit_dir, "access.denied")
    assert (forbidden["actor"], forbidden["namespace"], forbidden["notebook"]) == ("alice@example.com", "bob", "nb1")
    assert forbidden["details"]["status"] == 403 and forbidden["session"] is not None
    assert (unauthenticated["actor"], unauthenticated["details"]["status"]) == ("-", 401)


async def test_a_sessions_first_request_to_a_notebook_is_recorded_once(gateway: Factory, audit_dir: Path) -> None:
    client = await gateway()
    for _ in range(3):
        assert (await client.get(NB + "echo?token=secret")).status == 200
    [access] = events(audit_dir, "notebook.access")
    assert (access["actor"], access["namespace"], access["notebook"]) == ("alice@example.com", "alice", "nb1")
    assert access["details"] == {"kind": "http", "method": "GET", "path": NB + "echo"}  # never the query


async def test_every_request_is_recorded_when_configured(gateway: Factory, audit_dir: Path) -> None:
    client = await gateway(audit_access_events="all")
    for _ in range(3):
        await client.get(NB + "echo")
    assert len(events(audit_dir, "notebook.access")) == 3


async def test_a_websocket_is_recorded_when_it_closes_with_its_bytes(gateway: Factory, audit_dir: Path) -> None:
    client = await gateway()
    async with client.ws_connect(NB + "ws") as ws:
        await ws.send_str("hello")
        assert await ws.receive_str() == "hello"
    await wait_until(lambda: events(audit_dir, "notebook.access"))
    [access] = events(audit_dir, "notebook.access")
    assert (access["details"]["kind"], access["details"]["bytes_in"], access["details"]["bytes_out"]) == (
        "websocket",
        5,
        5,
    )


async def test_a_refused_refresh_is_recorded(
    aiohttp_client: Any, aiohttp_server: Any, routes_file: Any, tmp_path: Path
) -> None:
    idp = await FakeIdP.start(aiohttp_server)
    port = unused_port()
    settings = make_settings(
        public_url=f"http://127.0.0.1:{port}",
        cookie_secret="s" * 32,
        session_store="memory",
        oidc_issuer=idp.issuer,
        oidc_client_id=idp.client_id,
        oidc_client_secret=idp.client_secret,
        audit_dir=tmp_path,
        routes_file=routes_file({}),
    )
    client: Client = await aiohttp_client(create_app(settings), server_kwargs={"port": port})
    idp.access_token_ttl_s = 30  # inside the refresh margin: the next request refreshes
    callback = await sign_in(client.session, client.make_url("/oauth2/start"), "", "")
    async with client.session.get(callback, allow_redirects=False) as signed_in:
        assert signed_in.status == 302
    idp.refresh = Refresh.INVALID_GRANT
    assert (await client.get("/oauth2/userinfo")).status == 401
    [refresh] = events(tmp_path, "auth.refresh_failed")
    assert (refresh["outcome"], refresh["details"]) == ("failed", {"session_ended": True})


def block(path: Path) -> None:
    path.write_text("a file where the audit directory should be")


def unblock(path: Path) -> None:
    path.unlink()


async def test_while_the_audit_file_cannot_be_written_sign_in_is_refused_and_readyz_says_why(
    gateway: Factory, audit_dir: Path
) -> None:
    block(audit_dir)
    client = await gateway(user=None)
    resp = await client.get("/readyz")
    assert resp.status == 503 and "cannot be written" in (await resp.json())["problems"]["audit"]
    with pytest.raises(AssertionError, match="503"):
        await sign_in_dev(client, "alice@example.com")
    unblock(audit_dir)
    assert (await client.get("/readyz")).status == 200
    await sign_in_dev(client, "alice@example.com")
    assert [e["outcome"] for e in events(audit_dir, "auth.login")] == ["allowed"]  # the refused one left nothing
