"""Probes and metrics, against the real app with the static backend."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from gateway import health, keys
from gateway.kube.watch_health import WatchHealth
from tests.fakes.kube_api import FakeKubeAPI

from .conftest import Client, RedisServer, wait_until

RoutesFile = Callable[[dict[tuple[str, str], str]], Path]


async def static_gateway(gateway_factory: Callable[..., Any], routes_file: RoutesFile) -> Client:
    path = routes_file({("alice", "nb1"): "http://127.0.0.1:9"})
    client: Client = await gateway_factory(backend="static", routes_file=path)
    return client


def request_count(text: str, **labels: str) -> float:
    """The value of notebook_gateway_requests_total for exactly these labels, 0 when absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "notebook_gateway_requests_total" and sample.labels == labels:
                return sample.value
    return 0.0


async def test_healthz_answers_ok(gateway_factory: Callable[..., Any], routes_file: RoutesFile) -> None:
    gateway = await static_gateway(gateway_factory, routes_file)
    resp = await gateway.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}


async def test_readyz_is_ready_once_the_backend_has_synced(
    gateway_factory: Callable[..., Any], routes_file: RoutesFile
) -> None:
    gateway = await static_gateway(gateway_factory, routes_file)
    resp = await gateway.get("/readyz")
    assert resp.status == 200
    body = await resp.json()
    assert body["ready"] is True
    assert body["problems"] == {}
    assert body["checks"] == {"backend": "ok", "upstream_client": "ok", "sessions": "ok", "audit": "ok"}


async def test_readyz_lists_what_is_not_ready(aiohttp_client: Callable[..., Any]) -> None:
    app = web.Application()  # neither a backend nor an upstream client has started
    app.add_routes(health.routes)
    client: Client = await aiohttp_client(app)
    resp = await client.get("/readyz")
    assert resp.status == 503
    body = await resp.json()
    assert body["ready"] is False
    assert set(body["problems"]) == {"backend", "upstream_client", "sessions", "audit"}
    assert "not started" in body["problems"]["backend"]


async def test_readyz_follows_redis_down_and_back(
    gateway_factory: Callable[..., Any], routes_file: RoutesFile, own_redis_server: RedisServer
) -> None:
    path = routes_file({("alice", "nb1"): "http://127.0.0.1:9"})
    gateway = await gateway_factory(user=None, session_store="redis", redis_url=own_redis_server.url, routes_file=path)
    assert (await gateway.get("/readyz")).status == 200
    own_redis_server.stop()
    resp = await gateway.get("/readyz")
    assert resp.status == 503
    assert "session store does not answer" in (await resp.json())["problems"]["sessions"]
    own_redis_server.start()  # same port: the gateway reconnects by itself
    await wait_until(lambda: readyz_status(gateway), timeout_s=20)


async def readyz_status(gateway: Client) -> bool:
    return (await gateway.get("/readyz")).status == 200


async def test_readyz_reports_a_failing_or_hung_check(
    gateway_factory: Callable[..., Any], routes_file: RoutesFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(app: web.Application) -> str | None:
        raise ConnectionRefusedError

    async def hung(app: web.Application) -> str | None:
        await asyncio.Event().wait()
        return None

    monkeypatch.setitem(health.READINESS_CHECKS, "redis", broken)
    monkeypatch.setitem(health.READINESS_CHECKS, "policies", hung)
    monkeypatch.setattr(health, "CHECK_TIMEOUT_S", 0.1)
    gateway = await static_gateway(gateway_factory, routes_file)
    resp = await gateway.get("/readyz")
    assert resp.status == 503
    body = await resp.json()
    assert body["problems"] == {"redis": "check failed: ConnectionRefusedError", "policies": "no answer within 0.1s"}
    assert body["checks"]["backend"] == "ok"


async def test_metrics_count_requests_by_class_and_status(
    gateway_factory: Callable[..., Any], routes_file: RoutesFile
) -> None:
    gateway = await static_gateway(gateway_factory, routes_file)
    assert (await gateway.get("/healthz")).status == 200
    assert (await gateway.get("/notebook/alice/nobody/")).status == 404
    resp = await gateway.get("/metrics")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    text = await resp.text()
    assert request_count(text, route_class="health", method="GET", status="200") == 1
    assert request_count(text, route_class="proxy", method="GET", status="404") == 1
    assert "notebook_gateway_request_duration_seconds_bucket" in text
    assert "notebook_gateway_websockets_open 0.0" in text


async def test_responses_carry_a_request_id(gateway_factory: Callable[..., Any], routes_file: RoutesFile) -> None:
    gateway = await static_gateway(gateway_factory, routes_file)
    first = await gateway.get("/healthz")
    second = await gateway.get("/notebook/alice/nobody/")
    ids = {first.headers["X-Request-Id"], second.headers["X-Request-Id"]}
    assert len(ids) == 2 and all(len(i) >= 16 for i in ids)
    # A client's own id is never taken for ours: it could name another request's events in the audit log.
    offered = await gateway.get("/healthz", headers={"X-Request-Id": "trace-0123456789"})
    assert offered.headers["X-Request-Id"] not in ("trace-0123456789", *ids)


# -- watches of the Kubernetes API -----------------------------------------------------------------


async def readyz(gateway: Client) -> tuple[int, dict[str, Any]]:
    resp = await gateway.get("/readyz")
    body: dict[str, Any] = await resp.json()
    return resp.status, body


async def test_readyz_waits_for_the_first_notebook_list_then_stays_ready_through_an_api_outage(
    gateway_factory: Callable[..., Any], kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    await kube_api.go_down("503")  # the replica starts while the API server is failing
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")
    gateway = await gateway_factory(user=None, backend="kubernetes", kubeconfig=kubeconfig)
    status, body = await readyz(gateway)
    assert status == 503  # it would route nothing yet
    assert "first list of notebooks" in body["problems"]["notebook_watch"]
    assert body["watches"]["notebook_watch"]["state"] == "not_synced"
    await kube_api.come_back()
    await wait_until(lambda: readyz_status(gateway), timeout_s=20)
    status, body = await readyz(gateway)
    assert (body["checks"]["notebook_watch"], body["degraded"]) == ("ok", {})

    await kube_api.go_down("503")  # synced once: the last known routes keep serving
    await wait_until(lambda: degraded(gateway, "notebook_watch"), timeout_s=20)
    status, body = await readyz(gateway)
    assert (status, body["ready"], body["problems"]) == (200, True, {})
    assert "serving the last view" in body["degraded"]["notebook_watch"]
    assert "503" in body["watches"]["notebook_watch"]["error"]
    assert body["watches"]["notebook_watch"]["last_sync_age_s"] >= 0
    await kube_api.come_back()
    await wait_until(lambda: not_degraded(gateway), timeout_s=20)


async def test_readyz_waits_for_kubeflows_roles_then_reports_their_watch_degraded(
    gateway_factory: Callable[..., Any], routes_file: RoutesFile, kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    await kube_api.go_down("refuse")
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")
    path = routes_file({("alice", "nb1"): "http://127.0.0.1:9"})
    gateway = await gateway_factory(user=None, routes_file=path, kubeflow_policies=True, kubeconfig=kubeconfig)
    status, body = await readyz(gateway)
    assert status == 503  # without its roles every Kubeflow user would be refused
    assert "Kubeflow's Profiles and RoleBindings" in body["problems"]["kubeflow_watch"]
    await kube_api.come_back()
    await wait_until(lambda: readyz_status(gateway), timeout_s=20)
    await kube_api.go_down("refuse")
    await wait_until(lambda: degraded(gateway, "kubeflow_watch"), timeout_s=20)
    status, body = await readyz(gateway)
    assert (status, body["problems"]) == (200, {})


async def test_readyz_reports_the_policy_configmap_watch_degraded_but_stays_ready(
    gateway_factory: Callable[..., Any], routes_file: RoutesFile, kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    kube_api.add_namespace("kubeflow")
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")
    path = routes_file({("alice", "nb1"): "http://127.0.0.1:9"})
    gateway = await gateway_factory(
        user=None, routes_file=path, policy_store="configmap", policy_namespace="kubeflow", kubeconfig=kubeconfig
    )
    status, body = await readyz(gateway)
    assert (status, body["checks"]["policy_watch"]) == (200, "ok")
    assert "notebook_watch" not in body["watches"]  # the static backend watches nothing
    await kube_api.go_down("refuse")
    await wait_until(lambda: degraded(gateway, "policy_watch"), timeout_s=20)
    status, body = await readyz(gateway)
    assert (status, body["ready"]) == (200, True)
    assert "the policy ConfigMap kubeflow/notebook-gateway-policies" in body["degraded"]["policy_watch"]
    assert body["checks"]["policy_watch"].startswith("degraded: ")


async def test_readyz_asks_whichever_backend_there_is_for_its_watch(
    gateway_factory: Callable[..., Any], routes_file: RoutesFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe asks the backend protocol (`watch_health()`), not for one class: a backend whose
    watch has not listed yet makes the replica unready, whichever backend it is."""
    gateway = await static_gateway(gateway_factory, routes_file)
    assert "notebook_watch" not in (await readyz(gateway))[1]["watches"]  # the static backend: None
    backend = gateway.app[keys.BACKEND]
    monkeypatch.setattr(backend, "watch_health", lambda: WatchHealth("notebooks", synced=False, error="503 down"))
    status, body = await readyz(gateway)
    assert status == 503
    assert "first list of notebooks" in body["problems"]["notebook_watch"]
    assert body["watches"]["notebook_watch"] == {"state": "not_synced", "last_sync_age_s": None, "error": "503 down"}


async def degraded(gateway: Client, name: str) -> bool:
    _, body = await readyz(gateway)
    return name in body["degraded"]


async def not_degraded(gateway: Client) -> bool:
    status, body = await readyz(gateway)
    return status == 200 and body["degraded"] == {}
