"""Last activity: what the proxy sees (HTTP requests, WebSocket messages either way) becomes each server's
`last_activity` in the list API and page and a metric, shared by replicas through a real Redis."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as redis
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from gateway import keys
from gateway.activity import REDIS_KEY, Activity, rfc3339
from tests.fakes.upstream import KERNEL_PROTOCOL, FakeUpstream

from .conftest import Client, RedisServer

Routes = Callable[[dict[tuple[str, str], str]], Any]
NB = "/notebook/alice/nb1/"


class Clock:
    """A wall clock the test moves by hand (sessions read it too, so it starts at the real time)."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


def with_clock(clock: Clock) -> Callable[[web.Application], None]:
    def configure(app: web.Application) -> None:
        now: Callable[[], float] = clock
        app[keys.CLOCK] = now

    return configure


async def listed(gateway: Client, name: str = "nb1") -> dict[str, Any]:
    resp = await gateway.get("/api/namespaces/alice/notebooks")
    assert resp.status == 200, await resp.text()
    items = {item["name"]: item for item in (await resp.json())["notebooks"]}
    item: dict[str, Any] = items[name]
    return item


async def test_a_request_to_a_server_is_its_last_activity_in_the_api_and_the_metric(
    gateway_factory: Callable[..., Any], routes_file: Routes, upstream: FakeUpstream
) -> None:
    clock = Clock()
    routes = routes_file({("alice", "nb1"): upstream.url, ("alice", "nb2"): upstream.url})
    gateway = await gateway_factory(routes_file=routes, configure=with_clock(clock))
    assert (await listed(gateway))["last_activity"] == ""  # never opened: empty, as the web app shows it

    clock.now += 60
    assert (await gateway.get(NB + "echo")).status == 200
    first = clock.now
    clock.now += 3600
    item = await listed(gateway)
    assert item["last_activity"] == rfc3339(first)  # RFC 3339 in UTC, as Kubeflow's culler writes it
    assert (await listed(gateway, "nb2"))["last_activity"] == ""  # only the server that was used

    assert await last_activity_metric(gateway) == {("alice", "nb1"): first}  # nb2 was never used: no series


async def last_activity_metric(gateway: Client) -> dict[tuple[str, str], float]:
    text = await (await gateway.get("/metrics")).text()
    return {
        (sample.labels["namespace"], sample.labels["notebook"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "notebook_gateway_notebook_last_activity_timestamp_seconds"
        for sample in family.samples
    }


async def test_the_front_ends_background_polls_are_not_activity(
    gateway_factory: Callable[..., Any], routes_file: Routes, upstream: FakeUpstream
) -> None:
    clock = Clock()
    gateway = await gateway_factory(
        routes_file=routes_file({("alice", "nb1"): upstream.url}), configure=with_clock(clock)
    )
    for poll in ("api/kernels", "api/sessions", "api/terminals", "api/kernelspecs", "api/me", "api/status"):
        await gateway.get(NB + poll)
    assert (await listed(gateway))["last_activity"] == ""
    await gateway.post(NB + "api/kernels")  # starting a kernel is use
    assert (await listed(gateway))["last_activity"] == rfc3339(clock.now)


async def test_websocket_messages_either_way_are_activity(
    gateway_factory: Callable[..., Any], routes_file: Routes, upstream: FakeUpstream
) -> None:
    clock = Clock()
    gateway = await gateway_factory(
        routes_file=routes_file({("alice", "nb1"): upstream.url}), configure=with_clock(clock)
    )
    async with gateway.ws_connect(NB + "ws", protocols=(KERNEL_PROTOCOL,)) as ws:
        opened = clock.now
        clock.now += 600  # a kernel left open but silent: only its opening counts
        assert (await listed(gateway))["last_activity"] == rfc3339(opened)
        await ws.send_str("hello")
        assert (await ws.receive()).data == "hello"
        assert (await listed(gateway))["last_activity"] == rfc3339(clock.now)


async def test_replicas_share_activity_and_an_older_time_never_wins(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    await client.delete(REDIS_KEY)
    clock_a, clock_b = Clock(), Clock()
    a, b = Activity(client, clock_a), Activity(client, clock_b)
    try:
        clock_a.now += 100
        a.touch("alice", "nb1")
        clock_b.now += 50
        b.touch("alice", "nb1")  # seen later by the other replica, but with an older time
        assert await b.last([("alice", "nb1")]) == {("alice", "nb1"): clock_b.now}  # unflushed: its own view
        await a.flush()
        await b.flush()
        assert await b.last([("alice", "nb1"), ("alice", "nb2")]) == {("alice", "nb1"): clock_a.now}
        fresh = Activity(client, Clock())  # a replica that started after both
        assert await fresh.last([("alice", "nb1")]) == {("alice", "nb1"): clock_a.now}
        await fresh.forget("alice", "nb1")  # deleted: a new server of that name starts with no history
        assert await Activity(client, Clock()).last([("alice", "nb1")]) == {}
    finally:
        await client.delete(REDIS_KEY)
        await client.aclose()


async def test_without_redis_a_replica_keeps_its_own_view_and_retries_the_flush(own_redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(own_redis_server.url)
    clock = Clock()
    activity = Activity(client, clock)
    try:
        activity.touch("alice", "nb1")
        own_redis_server.stop()
        await activity.flush()  # fails: kept for the next flush
        assert await activity.last([("alice", "nb1")]) == {("alice", "nb1"): clock.now}
        own_redis_server.start()
        await activity.flush()
        assert await Activity(client, Clock()).last([("alice", "nb1")]) == {("alice", "nb1"): clock.now}
    finally:
        await client.aclose()


def test_the_hot_path_is_bounded() -> None:
    activity = Activity(None, Clock(), max_tracked=2)
    for name in ("nb1", "nb2", "nb3"):
        activity.touch("alice", name)
    assert set(activity.snapshot()) == {("alice", "nb1"), ("alice", "nb2")}
    activity.touch("alice", "nb1")  # known servers are still timed
    assert len(activity.snapshot()) == 2
