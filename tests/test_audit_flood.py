"""A flood of anonymous refusals is recorded as a flood: the first per client in full, then counts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import Client, wait_until
from tests.fakes.upstream import FakeUpstream

NB = "/notebook/alice/nb1/"


def events(directory: Path, action: str) -> list[dict[str, Any]]:
    lines = b"".join(p.read_bytes() for p in sorted(directory.glob("audit-*.jsonl"))).splitlines()
    return [record for line in lines if (record := json.loads(line))["action"] == action]


async def test_a_flood_of_anonymous_refusals_is_one_event_per_client_and_a_count(
    gateway_factory: Callable[..., Any], routes_file: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    upstream = await FakeUpstream.start(aiohttp_server)
    audit_dir = tmp_path / "audit"
    client: Client = await gateway_factory(
        user=None,
        routes_file=routes_file({("alice", "nb1"): upstream.url}),
        audit_dir=audit_dir,
        trusted_proxies=("127.0.0.1/32",),  # the test client stands in for a load balancer
        audit_refusal_window_s=1.0,
    )

    async def knock(ip: str) -> None:
        resp = await client.get(NB + "api/contents", headers={"X-Forwarded-For": ip})
        assert resp.status == 401

    await asyncio.gather(*(knock("203.0.113.9") for _ in range(300)), knock("198.51.100.7"))
    await wait_until(lambda: events(audit_dir, "access.denied_summary"), timeout_s=10)

    denied = events(audit_dir, "access.denied")
    assert sorted(e["client_ip"] for e in denied) == ["198.51.100.7", "203.0.113.9"]  # one each, not 301
    [summary] = events(audit_dir, "access.denied_summary")
    details = summary["details"]
    assert (details["refusals"], details["recorded_in_full"], details["counted_only"]) == (301, 2, 299)
    assert details["top_clients"]["203.0.113.9"] == 300
