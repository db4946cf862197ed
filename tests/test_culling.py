"""Idle culling against the fake API server (Notebooks checked by the CRD schema) and a real Redis, with
a short idle time and a clock the test moves: no test waits for the wall clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis
from aiohttp import web

from gateway import keys
from gateway.activity import REDIS_KEY, Activity, rfc3339
from gateway.audit import AuditEvent, AuditLog
from gateway.backends.kubernetes import KubernetesBackend
from gateway.backends.notebook_resource import CULL_EXEMPT_ANNOTATION
from gateway.config import ConfigError, Settings
from gateway.culling import ACTION, LEASE_KEY, Culler, CullPolicy
from gateway.kube.kubeflow_names import STOP_ANNOTATION
from tests.fakes.kube_api import FakeKubeAPI
from tests.fakes.kube_controller import KubeController

from .conftest import Client, RedisServer, make_settings, wait_until
from .test_backend_kubernetes import nb_spec

IDLE_S = 600.0


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class RecordingAudit(AuditLog):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[AuditEvent] = []

    def emit(self, event: AuditEvent) -> None:
        self.events.append(event)


@pytest.fixture
async def shared_redis(redis_server: RedisServer) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    await client.delete(REDIS_KEY, LEASE_KEY)
    try:
        yield client
    finally:
        await client.delete(REDIS_KEY, LEASE_KEY)
        await client.aclose()


async def running(backend: KubernetesBackend, kube_api: FakeKubeAPI, *names: str, exempt: str = "") -> None:
    controller = KubeController(kube_api)
    for name in names:
        await backend.create("alice", nb_spec(name), creator="alice@example.com")
        if name == exempt:
            kube_api.patch("notebooks", "alice", name, {"metadata": {"annotations": {CULL_EXEMPT_ANNOTATION: "true"}}})
        controller.mark_ready("alice", name)
    await wait_until(lambda: all(backend.route("alice", name) is not None for name in names))


def stopped(kube_api: FakeKubeAPI, name: str) -> bool:
    notebook = kube_api.get("notebooks", "alice", name)
    assert notebook is not None
    return STOP_ANNOTATION in notebook["metadata"].get("annotations", {})


def culler(backend: KubernetesBackend, client: redis.Redis | None, clock: Clock, **policy: Any) -> Culler:
    activity = Activity(client, clock)
    return Culler(CullPolicy(IDLE_S, **policy), backend, activity, RecordingAudit(), client, clock)


async def test_an_idle_server_is_stopped_a_used_one_and_an_exempt_one_are_kept(
    backend: KubernetesBackend, kube_api: FakeKubeAPI, shared_redis: redis.Redis
) -> None:
    await running(backend, kube_api, "idle", "used", "exempt", exempt="exempt")
    clock = Clock()
    one = culler(backend, shared_redis, clock)
    assert await one.run_once() == []  # just started: nobody opened them yet, and that is no reason to stop them

    clock.now += IDLE_S - 60
    one.activity.touch("alice", "used")  # someone worked in it a minute before the others ran out of time
    clock.now += 120
    assert await one.run_once() == [("alice", "idle")]
    assert stopped(kube_api, "idle")
    assert not stopped(kube_api, "used") and not stopped(kube_api, "exempt")

    audit = one.audit
    assert isinstance(audit, RecordingAudit)
    [event] = audit.events
    assert (event.action, event.outcome, event.namespace, event.notebook) == (ACTION, "allowed", "alice", "idle")
    assert event.details["idle_after_seconds"] == IDLE_S and event.details["last_activity"] is None
    assert int(event.details["idle_seconds"]) >= IDLE_S  # type: ignore[call-overload]

    clock.now += IDLE_S  # past ten minutes after its last use; the stopped one is left alone
    assert await one.run_once() == [("alice", "used")]
    assert audit.events[-1].details["last_activity"] == rfc3339(clock.now - IDLE_S - 120)
    assert not stopped(kube_api, "exempt")


async def test_a_namespace_can_be_exempt(backend: KubernetesBackend, kube_api: FakeKubeAPI) -> None:
    await running(backend, kube_api, "nb1")
    clock = Clock()
    clock.now += 10 * IDLE_S
    assert await culler(backend, None, clock, exempt_namespaces=frozenset({"alice"})).run_once() == []
    assert await culler(backend, None, clock, exempt_namespaces=frozenset({"bob"})).run_once() == [("alice", "nb1")]


async def test_activity_seen_by_another_replica_keeps_a_server(
    backend: KubernetesBackend, kube_api: FakeKubeAPI, shared_redis: redis.Redis
) -> None:
    await running(backend, kube_api, "nb1")
    clock = Clock()
    elsewhere = Activity(shared_redis, clock)  # the replica the user's WebSocket goes through
    clock.now += IDLE_S - 10
    elsewhere.touch("alice", "nb1")
    await elsewhere.flush()
    clock.now += 20
    one = culler(backend, shared_redis, clock)
    assert await one.run_once() == []
    # Deleted with kubectl, not through the gateway: the next round leaves no time of it in Redis.
    await backend.delete("alice", "nb1")
    await wait_until(lambda: backend.watcher.notebook("alice", "nb1") is None)
    assert await Activity(shared_redis, Clock()).last([("alice", "nb1")]) != {}
    await one.run_once()
    assert await Activity(shared_redis, Clock()).last([("alice", "nb1")]) == {}


async def test_replicas_cull_once(backend: KubernetesBackend, kube_api: FakeKubeAPI, shared_redis: redis.Redis) -> None:
    await running(backend, kube_api, "nb1")
    clock = Clock()
    clock.now += 2 * IDLE_S
    replicas = [culler(backend, shared_redis, clock) for _ in range(3)]
    results = await asyncio.gather(*(replica.run_once() for replica in replicas))
    assert sorted(map(len, results)) == [0, 0, 1]
    events = [event for replica in replicas for event in replica.audit.events]  # type: ignore[attr-defined]
    assert [(event.action, event.notebook) for event in events] == [(ACTION, "nb1")]
    holder = next(replica for replica, result in zip(replicas, results, strict=True) if result)
    others = [replica for replica in replicas if replica is not holder]
    # The holder keeps the lease round after round; the others never run one while it lives.
    await wait_until(lambda: backend.route("alice", "nb1") is None)
    assert await holder.run_once() == []  # stopped already: nothing to do
    KubeController(kube_api).mark_ready("alice", "nb1")
    kube_api.patch("notebooks", "alice", "nb1", {"metadata": {"annotations": {STOP_ANNOTATION: None}}})
    await wait_until(lambda: backend.route("alice", "nb1") is not None)
    clock.now += 2 * IDLE_S
    assert [await other.run_once() for other in others] == [[], []]
    assert await holder.run_once() == [("alice", "nb1")]


async def test_the_api_says_when_an_idle_server_will_be_stopped(
    gateway_factory: Callable[..., Any], kubeconfig: Path, kube_api: FakeKubeAPI
) -> None:
    clock = Clock()

    def configure(app: web.Application) -> None:
        now: Callable[[], float] = clock
        app[keys.CLOCK] = now

    gateway: Client = await gateway_factory(
        backend="kubernetes", kubeconfig=kubeconfig, cull_idle_after="10m", configure=configure
    )
    clock.now += 60  # a minute after the API server's creationTimestamp (its own wall clock)
    created = await gateway.post("/api/namespaces/alice/notebooks", json={"name": "nb1"})
    assert created.status == 200
    answered = (await created.json())["notebook"]  # the answer to the create says it already
    assert (answered["last_activity"], answered["cull_at"]) == (rfc3339(clock.now), rfc3339(clock.now + IDLE_S))
    resp = await gateway.get("/api/namespaces/alice/notebooks/nb1")
    item = (await resp.json())["notebook"]
    assert item["last_activity"] == rfc3339(clock.now)  # creating it is use
    assert item["cull_at"] == rfc3339(clock.now + IDLE_S)
    clock.now += 120
    started = await gateway.patch("/api/namespaces/alice/notebooks/nb1", json={"stopped": False})
    assert started.status == 200
    assert (await started.json())["notebook"]["cull_at"] == rfc3339(clock.now + IDLE_S)  # a start is use too
    page = await (await gateway.get("/notebooks?ns=alice", headers={"Accept": "text/html"})).text()
    assert 'data-cull-warning-s="3600"' in page


def test_culling_is_off_by_default_and_takes_a_duration() -> None:
    assert Settings.model_fields["cull_idle_after"].default is None
    assert Settings(cull_idle_after="90m").cull_idle_after == 5400
    assert Settings(cull_idle_after="2d").cull_idle_after == 2 * 86400
    for bad in ("soon", "-5m", "0", "1w"):
        with pytest.raises(ValueError, match="duration"):
            Settings(cull_idle_after=bad)


async def test_the_static_backend_cannot_cull(routes_file: Callable[..., Path]) -> None:
    from gateway.app import create_app

    settings = make_settings(routes_file=routes_file({}), cull_idle_after="1h", dev_provider=True)
    runner = web.AppRunner(create_app(settings))
    try:
        with pytest.raises(ConfigError, match="GATEWAY_CULL_IDLE_AFTER"):
            await runner.setup()
    finally:
        await runner.cleanup()
