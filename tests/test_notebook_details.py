"""A server's detail page and its JSON routes (JWA's /pod, /pod/<pod>/logs, /events), against the fake API
server: every event listed, the log's tail bounded, hostile text escaped, `view` required, and under the
gateway's own RBAC from deploy/ (pods/log get, events list; never pods themselves)."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import markupsafe
import pytest
import yaml

from gateway.backends import LOG_TAIL_LINES
from gateway.backends.kubernetes import KubernetesBackend
from gateway.errors import KubernetesForbidden
from gateway.kube.client import Kind, KubeClient
from tests.fakes.kube_api import FakeKubeAPI, kube_client
from tests.fakes.kube_controller import KubeController

from .conftest import Client, wait_until
from .test_backend_kubernetes import nb_spec
from .test_deploy import apply_access, render

pytestmark = pytest.mark.usefixtures("openapi_checked")

API = "/api/namespaces/alice/notebooks/nb1"
HOSTILE = '<script>alert("log")</script><img src=x onerror=alert(1)>'
PODS = Kind("", "v1", "pods", "pod")


def add_pod(kube_api: FakeKubeAPI, log: str) -> None:
    """The pod the notebook controller's StatefulSet makes, with istio's sidecar beside the notebook."""
    containers = [{"name": "nb1", "image": "jupyter"}, {"name": "istio-proxy", "image": "proxyv2"}]
    kube_api.create("pods", {"metadata": {"name": "nb1-0"}, "spec": {"containers": containers}}, "alice")
    kube_api.set_log("alice", "nb1-0", "nb1", log)
    kube_api.set_log("alice", "nb1-0", "istio-proxy", "sidecar chatter\n")


async def running_notebook(gateway: Client, kube_api: FakeKubeAPI) -> None:
    resp = await gateway.post("/api/namespaces/alice/notebooks", json={"name": "nb1"})
    assert resp.status == 200, await resp.text()
    controller = KubeController(kube_api)
    controller.mark_ready("alice", "nb1")
    controller.warn("alice", "nb1", "FailedScheduling", "0/3 nodes are available", at="2024-05-01T12:00:00Z")
    controller.warn("alice", "nb1", "BackOff", HOSTILE, at="2024-05-01T12:05:00Z")
    notebook = kube_api.get("notebooks", "alice", "nb1")
    assert notebook is not None
    normal = {
        "metadata": {"name": "nb1.normal", "namespace": "alice"},
        "involvedObject": {"kind": "Notebook", "name": "nb1", "uid": notebook["metadata"]["uid"]},
        "type": "Normal",
        "reason": "Started",
        "message": "Started container nb1",
        "lastTimestamp": "2024-05-01T12:10:00Z",
    }
    kube_api.create("events", normal, "alice")
    other = {**normal, "metadata": {"name": "nb2.normal", "namespace": "alice"}}
    other["involvedObject"] = {"kind": "Notebook", "name": "nb2"}
    kube_api.create("events", other, "alice")


async def test_the_json_routes_give_the_events_the_pod_and_the_logs_tail(
    gateway_factory: Callable[..., Any], kubeconfig: Path, kube_api: FakeKubeAPI
) -> None:
    gateway: Client = await gateway_factory(backend="kubernetes", kubeconfig=kubeconfig)
    await running_notebook(gateway, kube_api)
    add_pod(kube_api, "".join(f"line {n}\n" for n in range(5000)))

    events = (await (await gateway.get(API + "/events")).json())["events"]
    # All of them, not only the newest warning, newest first; none about another server.
    assert [event["reason"] for event in events] == ["Started", "BackOff", "FailedScheduling"]

    pod = (await (await gateway.get(API + "/pod")).json())["pod"]
    assert pod["metadata"] == {"name": "nb1-0", "namespace": "alice"}
    assert "containerState" in pod["status"]

    logs = (await (await gateway.get(API + "/pod/nb1-0/logs")).json())["logs"]
    assert len(logs) == LOG_TAIL_LINES and logs[-1] == "line 4999"  # the notebook's container, bounded
    logs = (await (await gateway.get(API + "/pod/nb1-0/logs?tail=3")).json())["logs"]
    assert logs == ["line 4997", "line 4998", "line 4999"]
    for tail in ("0", "100000", "-1", "x"):
        assert (await gateway.get(API + f"/pod/nb1-0/logs?tail={tail}")).status == 400
    # Only this server's pod: another pod of the namespace is not this route's to read.
    assert (await gateway.get("/api/namespaces/alice/notebooks/nb1/pod/other-0/logs")).status == 404

    resource = (await (await gateway.get(API + "/resource")).json())["resource"]
    assert resource["kind"] == "Notebook" and "managedFields" not in resource["metadata"]


async def test_a_huge_log_is_cut_in_bytes_too(
    gateway_factory: Callable[..., Any], kubeconfig: Path, kube_api: FakeKubeAPI
) -> None:
    gateway: Client = await gateway_factory(backend="kubernetes", kubeconfig=kubeconfig)
    await running_notebook(gateway, kube_api)
    add_pod(kube_api, "x" * (4 * 1024 * 1024) + "\n")  # one 4 MiB line
    logs = (await (await gateway.get(API + "/pod/nb1-0/logs")).json())["logs"]
    assert sum(map(len, logs)) <= 256 * 1024


async def test_the_detail_page_has_tabs_and_escapes_what_it_shows(
    gateway_factory: Callable[..., Any], kubeconfig: Path, kube_api: FakeKubeAPI
) -> None:
    gateway: Client = await gateway_factory(backend="kubernetes", kubeconfig=kubeconfig)
    await running_notebook(gateway, kube_api)
    add_pod(kube_api, f"starting\n{HOSTILE}\n")
    page = await (await gateway.get("/notebooks/alice/nb1", headers={"Accept": "text/html"})).text()
    for panel in ("overview", "events", "logs", "yaml"):
        assert f'id="{panel}"' in page
    assert HOSTILE not in page and "<img src=x" not in page
    assert page.count(str(markupsafe.escape(HOSTILE))) >= 2  # in the log and in the event, as text
    assert "0/3 nodes are available" in page and "Started container nb1" in page
    yaml_text = html.unescape(page.split('<pre class="yaml" tabindex="0">', 1)[1].split("</pre>", 1)[0])
    assert yaml.safe_load(yaml_text)["metadata"]["name"] == "nb1"


async def test_without_view_the_details_are_refused_as_the_list_is(
    gateway_factory: Callable[..., Any], kubeconfig: Path, kube_api: FakeKubeAPI
) -> None:
    owner: Client = await gateway_factory(backend="kubernetes", kubeconfig=kubeconfig)
    await running_notebook(owner, kube_api)
    add_pod(kube_api, "secret output\n")
    stranger: Client = await gateway_factory(
        backend="kubernetes", kubeconfig=kubeconfig, user="mallory@example.com", owns_namespace=False
    )
    assert (await stranger.get("/api/namespaces/alice/notebooks")).status == 403
    for path in (API + "/events", API + "/pod", API + "/pod/nb1-0/logs", API + "/resource"):
        resp = await stranger.get(path)
        assert resp.status == 403, path
        assert "secret output" not in await resp.text()
    page = await stranger.get("/notebooks/alice/nb1", headers={"Accept": "text/html"})
    assert page.status == 403 and "secret output" not in await page.text()
    # A server that does not exist is refused alike: the answer does not tell which exist.
    assert (await stranger.get("/api/namespaces/alice/notebooks/nope/events")).status == 403


async def test_the_static_backend_has_no_details(
    gateway_factory: Callable[..., Any], routes_file: Callable[..., Path]
) -> None:
    gateway: Client = await gateway_factory(routes_file=routes_file({("alice", "nb1"): "http://127.0.0.1:9"}))
    assert (await gateway.get(API + "/events")).status == 405


@pytest.fixture
async def as_gateway(kube_api: FakeKubeAPI, tmp_path: Path) -> AsyncIterator[KubeClient]:
    """A KubeClient with the gateway's ServiceAccount token, under deploy/base's RBAC."""
    token = apply_access(kube_api, render("base"))
    async with kube_client(kube_api, tmp_path, token=token) as client:
        yield client


async def test_the_gateways_rbac_reads_events_and_the_log_but_no_pod(
    as_gateway: KubeClient, kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    (tmp_path / "admin").mkdir()
    async with kube_client(kube_api, tmp_path / "admin") as admin:
        backend = KubernetesBackend(admin)
        await backend.open()
        try:
            await backend.create("alice", nb_spec(), creator=None)
        finally:
            await backend.close()
    KubeController(kube_api).warn("alice", "nb1", "BackOff", "restarting")
    add_pod(kube_api, "hello\n")
    backend = KubernetesBackend(as_gateway)
    await backend.open()
    try:
        await wait_until(lambda: backend.watcher.notebook("alice", "nb1") is not None)
        assert [event["reason"] for event in await backend.events("alice", "nb1")] == ["BackOff"]
        assert (await backend.logs("alice", "nb1")).lines == ("hello",)
    finally:
        await backend.close()
    with pytest.raises(KubernetesForbidden):
        await as_gateway.get(PODS, "alice", "nb1-0")  # the pod itself (its spec, its environment): never
