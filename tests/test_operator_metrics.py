"""What operators alert on, scraped the way Prometheus scrapes it: from the metrics port
(GATEWAY_METRICS_PORT) of a running gateway, while the user port no longer serves /metrics."""

from __future__ import annotations

import platform
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway import keys
from gateway.backends import NotebookSpec
from gateway.metrics import ActiveUsers, Metrics
from tests.fakes.kube_api import FakeKubeAPI
from tests.fakes.kube_controller import KubeController

from .conftest import Client, unused_port, wait_until

RoutesFile = Callable[[dict[tuple[str, str], str]], Path]
IMAGE = "ghcr.io/kubeflow/kubeflow/notebook-servers/jupyter-scipy:v1.10.0"


async def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample on the metrics port, by name and labels."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        text = await resp.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_metrics_leave_the_user_port_for_their_own(
    gateway_factory: Callable[..., Any], routes_file: RoutesFile
) -> None:
    port = unused_port()
    path = routes_file({("alice", "nb1"): "http://127.0.0.1:9"})
    gateway: Client = await gateway_factory(backend="static", routes_file=path, metrics_port=port)

    refused = await gateway.get("/metrics")
    assert refused.status == 404
    assert "notebook_gateway" not in await refused.text()

    samples = await scrape(port)
    build = [labels for (name, labels), v in samples.items() if name == "notebook_gateway_build_info" and v == 1]
    assert len(build) == 1
    assert {("version", metadata.version("notebook-gateway")), ("python", platform.python_version())} <= build[0]
    # Every name carries the prefix, as oauth2-proxy's and JupyterHub's do (process_* is the client library's).
    names = {name for name, _ in samples}
    assert all(name.startswith(("notebook_gateway_", "process_", "python_")) for name in names), names


async def test_what_operators_alert_on_is_counted(gateway_factory: Callable[..., Any], routes_file: RoutesFile) -> None:
    port = unused_port()
    path = routes_file({("alice", "nb1"): "http://127.0.0.1:9"})
    gateway: Client = await gateway_factory(backend="static", routes_file=path, metrics_port=port)  # alice signed in
    assert (await gateway.get("/api/namespaces/alice/notebooks")).status == 200
    assert (await gateway.get("/notebook/bob/nb1/")).status == 403  # alice may not connect in bob's namespace
    assert (await gateway.get("/oauth2/callback", params={"error": "access_denied"}, allow_redirects=False)).status in (
        400,
        401,
    )

    samples = await scrape(port)
    assert value(samples, "notebook_gateway_signins_total") == 1
    assert value(samples, "notebook_gateway_signin_failures_total", reason="provider_refused") == 1
    assert value(samples, "notebook_gateway_authz_denials_total", action="connect") == 1
    assert value(samples, "notebook_gateway_authz_denials_total", action="create") is None  # nothing else refused
    # The sign-in asked the provider for its discovery document, its keys and tokens, and each was timed.
    for request in ("discovery", "keys", "token"):
        count = value(samples, "notebook_gateway_idp_request_duration_seconds_count", request=request)
        assert count is not None and count >= 1, request
        assert value(samples, "notebook_gateway_idp_errors_total", request=request, kind="connection") == 0
    loads = value(samples, "notebook_gateway_session_store_duration_seconds_count", operation="load")
    assert loads is not None and loads >= 2  # each request after sign-in loaded the session
    assert value(samples, "notebook_gateway_session_store_errors_total", operation="load") == 0
    assert value(samples, "notebook_gateway_active_users") == 1  # a count, never a label per user
    assert value(samples, "notebook_gateway_notebooks", phase="ready") == 1
    assert value(samples, "notebook_gateway_notebooks", phase="waiting") == 0
    assert value(samples, "notebook_gateway_websockets_open") == 0
    assert value(samples, "notebook_gateway_audit_writable") == 1


async def test_a_failing_provider_is_counted_by_request_and_kind(aiohttp_server: Callable[..., Any]) -> None:
    """The trace on the provider's client: a 503 is a `status` error, no answer a `connection` error."""

    async def failing(_: web.Request) -> web.Response:
        return web.Response(status=503)

    provider = web.Application()
    provider.router.add_route("*", "/{tail:.*}", failing)
    server = await aiohttp_server(provider)
    metrics = Metrics()
    async with aiohttp.ClientSession(trace_configs=[metrics.provider_trace()]) as http:
        async with http.get(server.make_url("/realms/x/.well-known/openid-configuration")) as resp:
            assert resp.status == 503
        async with http.post(server.make_url("/token"), data={"grant_type": "refresh_token"}) as resp:
            assert resp.status == 503
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.get(f"http://127.0.0.1:{unused_port()}/jwks"):
                pass
    text = generate_latest(metrics.registry).decode()
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert value(samples, "notebook_gateway_idp_errors_total", request="discovery", kind="status") == 1
    assert value(samples, "notebook_gateway_idp_errors_total", request="token", kind="status") == 1
    assert value(samples, "notebook_gateway_idp_errors_total", request="keys", kind="connection") == 1
    assert value(samples, "notebook_gateway_idp_errors_total", request="keys", kind="status") == 0
    for request in ("discovery", "keys", "token"):
        assert value(samples, "notebook_gateway_idp_request_duration_seconds_count", request=request) == 1


async def test_notebooks_by_phase_watch_state_and_time_to_ready(
    gateway_factory: Callable[..., Any], kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    port = unused_port()
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")
    gateway: Client = await gateway_factory(user=None, backend="kubernetes", kubeconfig=kubeconfig, metrics_port=port)
    app = gateway.app
    assert app is not None
    await app[keys.BACKEND].create("alice", NotebookSpec(name="nb1", image=IMAGE), creator=None)
    await wait_until(lambda: app[keys.BACKEND].phase_counts().get("waiting") == 1)
    samples = await scrape(port)
    assert value(samples, "notebook_gateway_notebooks", phase="waiting") == 1
    assert value(samples, "notebook_gateway_notebook_startup_seconds_count") == 0
    assert value(samples, "notebook_gateway_watch_state", watch="notebook_watch", state="ok") == 1
    assert value(samples, "notebook_gateway_watch_state", watch="notebook_watch", state="degraded") == 0
    lag = value(samples, "notebook_gateway_watch_last_sync_age_seconds", watch="notebook_watch")
    assert lag is not None and lag >= 0

    KubeController(kube_api).mark_ready("alice", "nb1")
    await wait_until(lambda: app[keys.BACKEND].phase_counts().get("ready") == 1)
    samples = await scrape(port)
    assert value(samples, "notebook_gateway_notebooks", phase="ready") == 1
    assert value(samples, "notebook_gateway_notebooks", phase="waiting") == 0
    assert value(samples, "notebook_gateway_notebook_startup_seconds_count") == 1  # timed once, when first ready

    await kube_api.go_down("503")  # the API stops answering: the watch is degraded, and says so
    await wait_until(lambda: getattr(app[keys.BACKEND].watch_health(), "error", None) is not None, timeout_s=20)
    samples = await scrape(port)
    assert value(samples, "notebook_gateway_watch_state", watch="notebook_watch", state="degraded") == 1
    assert value(samples, "notebook_gateway_watch_state", watch="notebook_watch", state="ok") == 0
    await kube_api.come_back()


def test_active_users_count_each_user_once_within_the_window_and_forget_the_rest() -> None:
    now = [1000.0]
    active = ActiveUsers(window_s=900, clock=lambda: now[0])
    for _ in range(3):
        active.seen("alice@example.com")
    active.seen("bob@example.com")
    assert active.count() == 2
    now[0] += 600
    active.seen("bob@example.com")
    now[0] += 400  # alice last seen 1000 s ago, bob 400 s ago
    assert active.count() == 1
    # Without scrapes, memory stays bounded by the users of the window: old entries go as new ones come.
    for i in range(5000):
        now[0] += 1
        active.seen(f"user{i}@example.com")
    assert len(active._last_seen) <= 2 * 900 + 1024
