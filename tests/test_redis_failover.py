"""The gateway on Redis Sentinel, with real servers: a master dies while a signed-in user keeps working; they see
a bounded run of 503s (never a 401 or a 500), then the same session works on the new master."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from gateway.config import RedisAddress, Settings

from .conftest import Client, session_headers, wait_until
from .fakes.upstream import FakeUpstream
from .redis_sentinel import MASTER_NAME, SentinelSet, sentinel_set  # noqa: F401  (a fixture)

Factory = Callable[..., Any]


def test_sentinel_addresses_are_read_from_a_comma_separated_list() -> None:
    settings = Settings(redis_sentinels="10.0.0.1:26379, [fd00::2]:26380,redis-s3:26379")
    assert settings.redis_sentinels == (
        RedisAddress(host="10.0.0.1", port=26379),
        RedisAddress(host="fd00::2", port=26380),
        RedisAddress(host="redis-s3", port=26379),
    )


def recovered(seen: list[tuple[float, int]], killed_at: float) -> bool:
    refusals = [t for t, s in seen if t > killed_at and s == 503]
    return bool(refusals) and any(t > refusals[0] and s == 200 for t, s in seen[-5:])


async def test_a_master_failover_costs_a_bounded_run_of_503s_and_no_session(
    gateway_factory: Factory,
    routes_file: Callable[[dict[tuple[str, str], str]], Path],
    aiohttp_server: Any,
    sentinel_set: SentinelSet,  # noqa: F811
) -> None:
    upstream = await FakeUpstream.start(aiohttp_server)
    gateway: Client = await gateway_factory(
        routes_file=routes_file({("alice", "nb1"): upstream.url}),
        session_store="redis",
        redis_url="redis://unused/0",  # with sentinels only the database number is read from it
        redis_sentinels=sentinel_set.sentinels,
        redis_sentinel_master=MASTER_NAME,
    )
    headers = session_headers(gateway)
    sentinel_set.wait_replicated()  # the session the sign-in wrote is on the replica too
    seen: list[tuple[float, int]] = []

    async def keep_working(http: aiohttp.ClientSession) -> None:
        while True:
            async with http.get(gateway.make_url("/notebook/alice/nb1/echo"), headers=headers) as resp:
                seen.append((time.monotonic(), resp.status))
            await asyncio.sleep(0.02)

    async with aiohttp.ClientSession() as http:
        user = asyncio.create_task(keep_working(http))
        try:
            await wait_until(lambda: len(seen) >= 20)
            old_master = sentinel_set.master()
            sentinel_set.kill("master")
            killed_at = time.monotonic()
            # Recovered: a success after the kill that follows at least one refusal.
            # (The session cache may answer for a moment after the kill, before it stops trusting itself.)
            await wait_until(lambda: recovered(seen, killed_at), timeout_s=60)
        finally:
            user.cancel()
    after = [(t, s) for t, s in seen if t > killed_at]
    statuses = Counter(s for _, s in after)
    assert set(statuses) <= {200, 503}, statuses  # never a 401 (session lost) and never a 500
    refused = [t for t, s in after if s == 503]
    window_s = (refused[-1] - killed_at) if refused else 0.0
    print(f"failover: {statuses[503]} requests refused with 503 over {window_s:.2f} s")  # shown with -s
    assert sentinel_set.master() != old_master  # the replica was promoted, and the gateway follows it
    async with aiohttp.ClientSession() as http, http.get(gateway.make_url("/oauth2/userinfo"), headers=headers) as r:
        assert r.status == 200 and (await r.json())["user"] == "alice@example.com"
