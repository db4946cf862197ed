"""`GET /api/audit/export` (every matching event, streamed: CSV, JSON lines, ECS JSON lines),
`/api/audit/activity` (events per hour for the chart) and `/api/audit/schema`, on the real gateway."""

from __future__ import annotations

import csv
import io
import json
import tempfile
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from gateway.audit.chain import GENESIS, Sealer, seal
from gateway.audit.events import SCHEMA_PATH, AuditEvent

from .conftest import Client, sign_in_dev

pytestmark = pytest.mark.usefixtures("openapi_checked")

ADMIN, ALICE = "admin@example.com", "alice@example.com"
Factory = Callable[..., Any]


@pytest.fixture
def gateways(gateway_factory: Factory, routes_file: Any) -> Factory:
    async def build(user: str = ADMIN, **options: Any) -> Client:
        client: Client = await gateway_factory(
            user=user, bootstrap_admins=ADMIN, routes_file=routes_file({}), **options
        )
        return client

    return build


async def alice_refused_three_times(admin: Client, aiohttp_client: Any) -> None:
    origin = str(admin.make_url("/").origin())
    alice: Client = await aiohttp_client(admin.server, headers={"Origin": origin})
    await sign_in_dev(alice, ALICE)
    for _ in range(3):
        assert (await alice.get("/api/namespaces/bob/notebooks")).status == 403


async def test_each_format_exports_the_same_events_and_the_read_is_recorded(
    gateways: Factory, aiohttp_client: Any
) -> None:
    admin = await gateways()
    await alice_refused_three_times(admin, aiohttp_client)
    query = f"user={ALICE}&outcome=denied"

    resp = await admin.get(f"/api/audit/export?format=csv&{query}")
    assert (resp.status, resp.content_type) == (200, "text/csv")
    assert resp.headers["Content-Disposition"] == 'attachment; filename="audit.csv"'
    rows = list(csv.DictReader(io.StringIO(await resp.text())))

    resp = await admin.get(f"/api/audit/export?format=jsonl&{query}")
    assert resp.content_type == "application/x-ndjson"
    lines = [json.loads(line) for line in (await resp.text()).splitlines()]
    validator = Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
    assert all(validator.is_valid(line) for line in lines)  # the stored events, chain fields and all

    resp = await admin.get(f"/api/audit/export?format=ecs&{query}")
    ecs = [json.loads(line) for line in (await resp.text()).splitlines()]

    assert len(rows) == len(lines) == len(ecs) == 3
    assert [row["event_id"] for row in rows] == [line["event_id"] for line in lines]
    assert [doc["event"]["id"] for doc in ecs] == [line["event_id"] for line in lines]
    denied = next(doc for doc in ecs if doc["event"]["action"] == "access.denied")
    assert denied["user"]["name"] == ALICE and denied["event"]["outcome"] == "failure"
    assert denied["event"]["type"] == ["denied"] and denied["http"]["response"]["status_code"] == 403
    assert denied["url"]["path"] == "/api/namespaces/bob/notebooks" and denied["@timestamp"].endswith("Z")
    assert denied["notebook_gateway"]["outcome"] == "denied" and denied["ecs"]["version"].startswith("8.")

    reads = [
        json.loads(line)
        for line in (await (await admin.get("/api/audit/export?format=jsonl&action=audit.read")).text()).splitlines()
    ]
    exports = [e["details"] for e in reads if e["details"].get("export")]
    assert [(d["format"], d["returned"], d["complete"]) for d in reversed(exports)] == [
        ("csv", 3, True),
        ("jsonl", 3, True),
        ("ecs", 3, True),
    ]


async def test_an_export_is_refused_to_non_auditors_and_in_an_unknown_format(
    gateways: Factory, aiohttp_client: Any
) -> None:
    admin = await gateways()
    resp = await admin.get("/api/audit/export?format=xml")
    assert (resp.status, (await resp.json())["field"]) == (400, "format")
    origin = str(admin.make_url("/").origin())
    alice: Client = await aiohttp_client(admin.server, headers={"Origin": origin})
    await sign_in_dev(alice, ALICE)
    assert (await alice.get("/api/audit/export")).status == 403
    assert (await alice.get("/api/audit/activity")).status == 403


def write_events(directory: Path, count: int, start: datetime) -> None:
    """`count` events, one a second from `start`, sealed into a chain as the gateway seals them (1 in
    10 denied), written in one go: appending them one by one through `ChainedFile` takes a minute."""
    prev, lines = GENESIS, []
    for n in range(count):
        when = start + timedelta(seconds=n)
        denied = n % 10 == 0
        record = AuditEvent(
            action="access.denied" if denied else "notebook.access",
            outcome="denied" if denied else "allowed",
            actor=f"user{n % 50}@example.com",
            namespace="team",
            notebook="nb",
            client_ip="10.0.0.1",
            user_agent="Mozilla/5.0",
            time=when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            details={"kind": "http", "method": "GET", "path": f"/notebook/team/nb/api/contents/{n}"},
        ).to_record()
        sealed = seal(record, n + 1, prev, Sealer())
        prev = sealed.hash
        lines.append(sealed.line)
    (directory / "audit-00000001.jsonl").write_bytes(b"".join(lines))


@pytest.mark.timeout(600)  # 100,000 events indexed, read and sent, under tracemalloc; no time is asserted
async def test_an_export_of_100000_events_streams_in_bounded_memory(gateways: Factory) -> None:
    directory = Path(tempfile.mkdtemp(prefix="gateway-test-export-"))
    write_events(directory, 100_000, datetime(2026, 1, 1, tzinfo=UTC))
    admin = await gateways(audit_dir=directory)
    assert (await admin.get("/api/audit?limit=1")).status == 200  # the index has caught up with the files

    tracemalloc.start()
    try:
        resp = await admin.get("/api/audit/export?format=jsonl&until=2026-01-03")
        assert resp.status == 200 and resp.headers.get("Transfer-Encoding") == "chunked"
        size = lines = chunks = 0
        async for chunk in resp.content.iter_any():  # read and dropped, as a download to disk would
            size += len(chunk)
            lines += chunk.count(b"\n")
            chunks += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lines == 100_000 and size > 40_000_000
    assert chunks > 100  # it came in pieces, not as one body built first
    # Gateway and client together held a few pages at a time (about 8 MB measured), not the export
    # (65 MB as bytes, several times that as parsed events).
    assert peak < size / 4, f"peak {peak / 1e6:.1f} MB for {size / 1e6:.1f} MB exported"


async def test_activity_counts_events_per_hour_by_action_and_outcome(gateways: Factory) -> None:
    directory = Path(tempfile.mkdtemp(prefix="gateway-test-activity-"))
    write_events(directory, 3 * 3600, datetime(2026, 1, 1, 10, tzinfo=UTC))  # 10:00 to 13:00
    admin = await gateways(audit_dir=directory)
    resp = await admin.get("/api/audit/activity?namespace=team&since=2026-01-01T09:00:00Z&until=2026-01-01T14:00:00Z")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert [hour["hour"] for hour in body["hours"]] == [f"2026-01-01T{h:02d}:00:00Z" for h in range(9, 14)]
    assert [(hour["allowed"], hour["denied"], hour["failed"]) for hour in body["hours"]] == [
        (0, 0, 0),
        (3240, 360, 0),
        (3240, 360, 0),
        (3240, 360, 0),
        (0, 0, 0),
    ]
    assert body["hours"][1]["actions"] == {"access.denied": {"denied": 360}, "notebook.access": {"allowed": 3240}}
    assert body["complete"] and not body["clamped"] and body["events"] == 3 * 3600
    denied_only = await (
        await admin.get(
            "/api/audit/activity?namespace=team&outcome=denied&since=2026-01-01T09:00:00Z&until=2026-01-01T14:00:00Z"
        )
    ).json()
    assert [hour["allowed"] for hour in denied_only["hours"]] == [0] * 5
    assert sum(hour["denied"] for hour in denied_only["hours"]) == 1080


async def test_the_schema_is_served_to_anyone_signed_in(gateways: Factory) -> None:
    alice = await gateways(user=ALICE)
    resp = await alice.get("/api/audit/schema")
    assert resp.status == 200 and resp.content_type == "application/schema+json"
    assert (await resp.json())["$id"] == "urn:notebook-gateway:audit-event:v1"
