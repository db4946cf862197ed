"""`GET /api/audit` on the real gateway: who may read it, filters, pages, CSV, every read recorded,
and the cluster-wide view through Redis."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

import pytest

from .conftest import Client, RedisServer, sign_in_dev, wait_until

# Every JSON answer these tests see must match /api/openapi.json (tests/openapi_check.py).
pytestmark = pytest.mark.usefixtures("openapi_checked")

ADMIN, ALICE = "admin@example.com", "alice@example.com"
Factory = Callable[..., Any]


async def another(aiohttp_client: Any, gateway: Client, username: str) -> Client:
    """A second browser on the same gateway, signed in as `username`."""
    origin = str(gateway.make_url("/").origin())
    client: Client = await aiohttp_client(gateway.server, headers={"Origin": origin})
    await sign_in_dev(client, username)
    return client


@pytest.fixture
def gateways(gateway_factory: Factory, routes_file: Any) -> Factory:
    """Builds a gateway (no notebook servers), signed in as `user`: the admin by default."""

    async def build(user: str = ADMIN, **options: Any) -> Client:
        client: Client = await gateway_factory(
            user=user, bootstrap_admins=ADMIN, routes_file=routes_file({}), **options
        )
        return client

    return build


async def read(client: Client, query: str = "", **headers: str) -> dict[str, Any]:
    resp = await client.get(f"/api/audit?{query}", headers=headers)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def test_an_admin_pages_through_one_users_events_newest_first(gateways: Factory, aiohttp_client: Any) -> None:
    admin = await gateways()
    alice = await another(aiohttp_client, admin, ALICE)
    for _ in range(3):
        assert (await alice.get("/api/namespaces/bob/notebooks")).status == 403
    first = await read(admin, f"user={ALICE}&limit=2")
    assert set(first) == {"events", "next_cursor", "scanned", "source", "filters"}
    assert [e["action"] for e in first["events"]] == ["access.denied", "access.denied"]
    assert first["source"] == "files" and first["filters"] == {"user": ALICE}
    rest = await read(admin, f"user={ALICE}&cursor={first['next_cursor']}")
    assert [e["action"] for e in rest["events"]][:1] == ["access.denied"]
    assert rest["events"][-1]["action"] == "auth.login" and rest["next_cursor"] is None
    assert first["events"][0]["time"] >= first["events"][1]["time"] >= rest["events"][0]["time"]


async def test_csv_by_accept_header_or_format_parameter(gateways: Factory) -> None:
    admin = await gateways()
    resp = await admin.get("/api/audit?action=auth.login", headers={"Accept": "text/csv"})
    assert resp.status == 200 and resp.content_type == "text/csv"
    assert "attachment" in resp.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [(row["action"], row["actor"], row["outcome"]) for row in rows] == [("auth.login", ADMIN, "allowed")]
    resp = await admin.get("/api/audit?format=csv&action=auth.login")
    assert resp.content_type == "text/csv"


async def test_only_auditors_may_read_and_a_refusal_is_recorded(gateways: Factory, aiohttp_client: Any) -> None:
    admin = await gateways()
    alice = await another(aiohttp_client, admin, ALICE)
    resp = await alice.get("/api/audit")
    assert resp.status == 403
    denied = await read(admin, f"action=access.denied&user={ALICE}")
    assert [e["details"]["path"] for e in denied["events"]] == ["/api/audit"]


async def test_every_read_is_itself_recorded(gateways: Factory) -> None:
    admin = await gateways()
    await read(admin, "namespace=alice&outcome=denied&format=json")
    reads = await read(admin, "action=audit.read")
    [earlier] = [e for e in reads["events"] if e["details"]["filters"] == {"namespace": "alice", "outcome": "denied"}]
    assert (earlier["actor"], earlier["details"]["format"], earlier["details"]["returned"]) == (ADMIN, "json", 0)


async def test_a_bad_filter_is_a_400_naming_it(gateways: Factory) -> None:
    admin = await gateways()
    resp = await admin.get("/api/audit?since=last+tuesday")
    body = await resp.json()
    assert (resp.status, body["field"]) == (400, "since")
    resp = await admin.get("/api/audit?cursor=nonsense")
    assert (resp.status, (await resp.json())["field"]) == (400, "cursor")


async def test_with_redis_every_replica_sees_every_replicas_events(
    gateways: Factory, own_redis_server: RedisServer
) -> None:
    shared = {"session_store": "redis", "redis_url": own_redis_server.url}
    await gateways(user=ALICE, **shared)  # replica one: alice signs in there
    admin = await gateways(**shared)  # replica two, its own audit directory
    query = f"user={ALICE}&action=auth.login"

    async def shipped() -> bool:  # shipping to Redis follows the file within a second or so
        return bool((await read(admin, query))["events"])

    await wait_until(shipped)
    body = await read(admin, query)
    assert body["source"] == "redis"
    assert [e["actor"] for e in body["events"]] == [ALICE]
