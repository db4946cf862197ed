"""The audit log on /metrics of the real gateway: events written by action and outcome, failed
writes, whether the file can be written, and the backlog waiting for Redis."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.test_audit_fail_closed import BOB_EDIT, audit_unwritable

from .conftest import Client, RedisServer, wait_until

Factory = Callable[..., Any]


async def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on /metrics, by name and labels, parsed as Prometheus would."""
    resp = await client.get("/metrics")
    assert resp.status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(await resp.text())
        for sample in family.samples
    }


def events_written(samples: dict[Any, float], action: str, outcome: str) -> float:
    return samples[("notebook_gateway_audit_events_total", (("action", action), ("outcome", outcome)))]


async def test_audit_metrics_are_exported_at_zero_from_the_start(gateway_factory: Factory, routes_file: Any) -> None:
    client: Client = await gateway_factory(user=None, routes_file=routes_file({}))
    samples = await scrape(client)
    assert events_written(samples, "notebook.delete", "denied") == 0
    assert events_written(samples, "notebook.discovered", "allowed") == 0
    assert samples[("notebook_gateway_audit_write_failures_total", (("sink", "file"),))] == 0
    assert samples[("notebook_gateway_audit_writable", ())] == 1
    assert samples[("notebook_gateway_audit_waiting_events", ())] == 0
    assert samples[("notebook_gateway_audit_dropped_events_total", ())] == 0
    assert not [name for name, _ in samples if name == "notebook_gateway_audit_spooled_events"]  # no Redis, no stream


async def test_events_and_failures_are_counted_and_writable_follows_the_file(
    gateway_factory: Factory, routes_file: Any, tmp_path: Path
) -> None:
    audit_dir = tmp_path / "audit"
    client: Client = await gateway_factory(audit_dir=audit_dir, routes_file=routes_file({}))
    samples = await scrape(client)
    assert events_written(samples, "auth.login", "allowed") == 1  # the factory signed alice in
    grants = events_written(samples, "policy.grant", "allowed")  # her own namespace, granted at sign-in
    with audit_unwritable(audit_dir):
        assert (await client.post("/api/policies", json=BOB_EDIT)).status == 503
        samples = await scrape(client)
        assert samples[("notebook_gateway_audit_writable", ())] == 0
        assert samples[("notebook_gateway_audit_write_failures_total", (("sink", "file"),))] >= 1
    assert (await client.post("/api/policies", json=BOB_EDIT)).status == 200
    samples = await scrape(client)
    assert samples[("notebook_gateway_audit_writable", ())] == 1
    assert events_written(samples, "policy.grant", "allowed") == grants + 1


async def test_events_waiting_for_redis_are_the_spooled_backlog(
    gateway_factory: Factory, routes_file: Any, own_redis_server: RedisServer
) -> None:
    client: Client = await gateway_factory(
        user=None,
        session_store="redis",
        redis_url=own_redis_server.url,
        routes_file=routes_file({}),
        audit_anonymous_refusals="all",  # each 401 below is one event, not sampled
    )

    async def spooled() -> float:
        return (await scrape(client))[("notebook_gateway_audit_spooled_events", ())]

    assert await spooled() == 0
    assert (await client.get("/api/namespaces/alice/notebooks")).status == 401  # access.denied, shipped at once
    await wait_until(lambda: spooled_is(spooled, 0))
    own_redis_server.stop()
    for _ in range(3):
        assert (await client.get("/api/namespaces/alice/notebooks")).status == 401
    await wait_until(lambda: spooled_is(spooled, 3))

    async def shipping_failed() -> bool:  # the shipper's next attempt, which may come after the scrape above
        return (await scrape(client))[("notebook_gateway_audit_write_failures_total", (("sink", "redis"),))] >= 1

    await wait_until(shipping_failed)
    own_redis_server.start()  # same port: the shipper reconnects and replays the backlog
    await wait_until(lambda: spooled_is(spooled, 0), timeout_s=40)


async def spooled_is(spooled: Callable[[], Any], value: float) -> bool:
    return bool(await spooled() == value)
