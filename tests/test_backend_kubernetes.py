"""The kubernetes backend against the fake API server, through the official client: every Notebook it
writes is checked by the real CRD schema; the test controller plays Kubeflow's notebook controller."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from yarl import URL

from gateway import keys
from gateway.app import create_app
from gateway.authz.configmap import ConfigMapPolicyStore
from gateway.authz.kubeflow import KubeflowPolicies
from gateway.backends import NotebookSpec, Volume
from gateway.backends.kubernetes import KubernetesBackend
from gateway.backends.notebook_watcher import service_resolver
from gateway.backoff import Uniform
from gateway.config import ConfigError
from gateway.errors import Conflict, InvalidNotebookSpec, NotebookExists, NotebookNotFound, NotFound, ServiceUnavailable
from gateway.kube.client import KubeClient
from gateway.kube.reflector import MAX_BACKOFF_S
from tests.fakes.kube_api import FakeKubeAPI
from tests.fakes.kube_controller import KubeController

from .conftest import Client, JupyterServer, make_settings, wait_until

IMAGE = "ghcr.io/kubeflow/kubeflow/notebook-servers/jupyter-scipy:v1.10.0"


def nb_spec(name: str = "nb1", **changes: Any) -> NotebookSpec:
    values: dict[str, Any] = {
        "name": name,
        "image": IMAGE,
        "cpu": "0.5",
        "memory": "1.0Gi",
        "cpu_limit": "0.6",
        "memory_limit": "1.2Gi",
        "workspace": Volume(f"{name}-workspace", "/home/jovyan", size="5Gi"),
    }
    return NotebookSpec(**{**values, **changes})


def notebook_body(name: str, **annotations: str) -> dict[str, Any]:
    """A Notebook as someone else (kubectl, another web app) might create it."""
    container = {"name": name, "image": IMAGE}
    spec = {"template": {"spec": {"containers": [container]}}}
    return {"metadata": {"name": name, "annotations": annotations}, "spec": spec}


@pytest.fixture
def controller(kube_api: FakeKubeAPI) -> KubeController:
    return KubeController(kube_api)


def later(backend: KubernetesBackend) -> None:
    """Read statuses 11 s from now: past the web app's 10 s of "waiting" for a notebook with no status yet."""
    backend.clock = lambda: datetime.now(UTC) + timedelta(seconds=11)


def api_calls(kube_api: FakeKubeAPI, method: str = "GET", *, watch: bool = False) -> list[dict[str, str]]:
    """The queries of the notebook list (or watch) requests the fake saw."""
    return [
        r.query
        for r in kube_api.requests
        if r.method == method
        and r.path.endswith("/notebooks")
        and (r.query.get("watch", "").lower() == "true") == watch
    ]


# -- create ---------------------------------------------------------------------------------------


async def test_create_makes_the_notebook_the_web_app_makes(backend: KubernetesBackend, kube_api: FakeKubeAPI) -> None:
    await backend.create("alice", nb_spec(), creator="alice@example.com")
    notebook = kube_api.get("notebooks", "alice", "nb1")
    assert notebook is not None
    assert notebook["metadata"]["labels"] == {"app": "nb1"}
    assert notebook["metadata"]["annotations"]["notebooks.kubeflow.org/creator"] == "alice@example.com"
    pod = notebook["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "default-editor"
    [container] = pod["containers"]
    assert (container["name"], container["image"]) == ("nb1", IMAGE)
    assert container["env"] == []  # NB_PREFIX is the controller's to set
    assert container["resources"] == {
        "requests": {"cpu": "0.5", "memory": "1.0Gi"},
        "limits": {"cpu": "0.6", "memory": "1.2Gi"},
    }
    assert not any(r.warnings for r in kube_api.requests)  # the CRD schema knew every field we sent


async def test_create_mounts_new_and_existing_claims_and_makes_the_new_ones(
    backend: KubernetesBackend, kube_api: FakeKubeAPI
) -> None:
    data = Volume("shared-data", "/home/jovyan/data", size="20Gi", access_mode="ReadWriteMany")
    existing = Volume("datasets", "/home/jovyan/datasets", existing=True)
    await backend.create("alice", nb_spec(data_volumes=(data, existing)), creator=None)
    pod = kube_api.get("notebooks", "alice", "nb1")["spec"]["template"]["spec"]  # type: ignore[index]
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts == {
        "/home/jovyan": "nb1-workspace",
        "/home/jovyan/data": "shared-data",
        "/home/jovyan/datasets": "datasets",
    }
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
    assert claims == {"nb1-workspace": "nb1-workspace", "shared-data": "shared-data", "datasets": "datasets"}
    pvcs = {p["metadata"]["name"]: p["spec"] for p in kube_api.objects("persistentvolumeclaims", "alice")}
    assert pvcs == {
        "nb1-workspace": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}},
        "shared-data": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "20Gi"}}},
    }


async def test_a_notebook_refused_after_its_volumes_were_made_leaves_nothing(
    backend: KubernetesBackend, kube_api: FakeKubeAPI
) -> None:
    # An admission webhook that refuses the real create (it is not consulted on dry runs).
    kube_api.fail_next("POST", "notebooks", 400, "BadRequest", 'admission webhook "quota" denied the request')
    with pytest.raises(InvalidNotebookSpec, match="denied the request"):
        await backend.create("alice", nb_spec(), creator=None)
    assert any(r.method == "POST" and "persistentvolumeclaims" in r.path and not r.query for r in kube_api.requests)
    assert kube_api.objects("persistentvolumeclaims") == []
    assert kube_api.objects("notebooks") == []


async def test_the_crd_schemas_refusal_comes_back_with_the_servers_message(
    backend: KubernetesBackend, kube_api: FakeKubeAPI
) -> None:
    with pytest.raises(InvalidNotebookSpec, match=r"spec\.template\.spec\.containers\[0\]\.resources\.requests\.cpu"):
        await backend.create("alice", nb_spec(cpu="lots"), creator=None)
    assert kube_api.objects("persistentvolumeclaims") == []  # the dry run refused it before anything was made


async def test_creating_a_name_twice_is_notebook_exists(backend: KubernetesBackend) -> None:
    await backend.create("alice", nb_spec(), creator=None)
    with pytest.raises(NotebookExists):
        await backend.create("alice", nb_spec(workspace=None), creator=None)


async def test_a_volume_name_already_taken_is_a_conflict_before_anything_is_made(
    backend: KubernetesBackend, kube_api: FakeKubeAPI
) -> None:
    spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    kube_api.create("persistentvolumeclaims", {"metadata": {"name": "nb1-workspace"}, "spec": spec}, "alice")
    with pytest.raises(Conflict, match="nb1-workspace already exists"):
        await backend.create("alice", nb_spec(), creator=None)
    assert kube_api.objects("notebooks") == []


async def test_creating_in_a_namespace_that_does_not_exist_is_404(backend: KubernetesBackend) -> None:
    with pytest.raises(NotFound, match="Namespace bob does not exist"):
        await backend.create("bob", nb_spec(), creator=None)


async def test_a_new_notebook_is_listed_and_routed_at_once(backend: KubernetesBackend) -> None:
    created = await backend.create("alice", nb_spec(), creator="alice@example.com")
    assert created.status.phase == "waiting"
    assert [nb.name for nb in await backend.list("alice")] == ["nb1"]
    assert backend.route("alice", "nb1") == URL("http://nb1.alice.svc.cluster.local:80")


# -- stop, start, delete ---------------------------------------------------------------------------


async def test_stop_and_start_toggle_the_stop_annotation(
    backend: KubernetesBackend, kube_api: FakeKubeAPI, controller: KubeController
) -> None:
    later(backend)
    await backend.create("alice", nb_spec(), creator=None)
    controller.mark_ready("alice", "nb1")
    stopping = await backend.stop("alice", "nb1")
    stamp = kube_api.get("notebooks", "alice", "nb1")["metadata"]["annotations"]["kubeflow-resource-stopped"]  # type: ignore[index]
    assert stamp.endswith("Z") and len(stamp) == len("2024-05-01T12:30:05Z")
    assert (stopping.stopped, stopping.status.message) == (True, "Notebook Server is stopping.")
    controller.reconcile("alice", "nb1")
    await wait_until(lambda: backend.route("alice", "nb1") is None)
    await wait_until(async_phase(backend, "nb1", "stopped"))
    started = await backend.start("alice", "nb1")
    assert not started.stopped
    assert "kubeflow-resource-stopped" not in kube_api.get("notebooks", "alice", "nb1")["metadata"]["annotations"]  # type: ignore[index]
    await wait_until(lambda: backend.route("alice", "nb1") is not None)


async def test_stop_right_after_start_is_not_skipped(backend: KubernetesBackend, kube_api: FakeKubeAPI) -> None:
    later(backend)
    await backend.create("alice", nb_spec(), creator=None)
    await backend.stop("alice", "nb1")
    await wait_until(async_phase(backend, "nb1", "stopped"))
    await backend.start("alice", "nb1")  # the watch has not seen this yet: it still says "stopped"
    stopped = await backend.stop("alice", "nb1")
    assert stopped.stopped
    assert "kubeflow-resource-stopped" in kube_api.get("notebooks", "alice", "nb1")["metadata"]["annotations"]  # type: ignore[index]


async def test_delete_removes_the_notebook_and_keeps_its_volumes(
    backend: KubernetesBackend, kube_api: FakeKubeAPI
) -> None:
    await backend.create("alice", nb_spec(), creator=None)
    await backend.delete("alice", "nb1")
    assert kube_api.objects("notebooks") == []
    assert [p["metadata"]["name"] for p in kube_api.objects("persistentvolumeclaims")] == ["nb1-workspace"]
    await wait_until(lambda: backend.route("alice", "nb1") is None)
    with pytest.raises(NotebookNotFound):
        await backend.delete("alice", "nb1")


def pvc_names(kube_api: FakeKubeAPI) -> list[str]:
    return [p["metadata"]["name"] for p in kube_api.objects("persistentvolumeclaims")]


def add_pvc(kube_api: FakeKubeAPI, name: str) -> None:
    """A volume the user made themselves (kubectl, the volumes web app)."""
    spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    kube_api.create("persistentvolumeclaims", {"metadata": {"name": name}, "spec": spec}, "alice")


async def test_delete_with_volumes_removes_those_made_with_it_and_keeps_attached_ones(
    backend: KubernetesBackend, kube_api: FakeKubeAPI
) -> None:
    add_pvc(kube_api, "datasets")
    data = Volume("nb1-data", "/home/jovyan/data", size="2Gi")
    attached = Volume("datasets", "/home/jovyan/datasets", existing=True)
    await backend.create("alice", nb_spec(data_volumes=(data, attached)), creator=None)
    assert pvc_names(kube_api) == ["datasets", "nb1-data", "nb1-workspace"]
    deletion = await backend.delete("alice", "nb1", volumes=True)
    assert (deletion.volumes, deletion.kept) == (("nb1-data", "nb1-workspace"), ())
    assert kube_api.objects("notebooks") == []
    assert pvc_names(kube_api) == ["datasets"]


async def test_delete_with_volumes_keeps_one_another_notebook_mounts(
    backend: KubernetesBackend, kube_api: FakeKubeAPI
) -> None:
    await backend.create("alice", nb_spec(), creator=None)
    shared = Volume("nb1-workspace", "/home/jovyan/nb1", existing=True)
    await backend.create("alice", nb_spec("nb2", data_volumes=(shared,)), creator=None)
    deletion = await backend.delete("alice", "nb1", volumes=True)
    assert deletion.kept == (("nb1-workspace", "notebook server nb2 uses it too"),)
    assert pvc_names(kube_api) == ["nb1-workspace", "nb2-workspace"]


async def test_delete_with_volumes_spares_a_claim_made_again_under_the_same_name(
    backend: KubernetesBackend, kube_api: FakeKubeAPI
) -> None:
    await backend.create("alice", nb_spec(), creator=None)
    kube_api.delete("persistentvolumeclaims", "alice", "nb1-workspace")
    add_pvc(kube_api, "nb1-workspace")  # someone else's volume now, though it has the old name
    deletion = await backend.delete("alice", "nb1", volumes=True)
    assert deletion.volumes == ()
    assert pvc_names(kube_api) == ["nb1-workspace"]


async def test_a_refused_volume_delete_leaves_the_notebook_in_place(
    backend: KubernetesBackend, kube_api: FakeKubeAPI
) -> None:
    await backend.create("alice", nb_spec(), creator=None)
    kube_api.fail_next("DELETE", "persistentvolumeclaims", 403, "Forbidden", "no", dry_run=True)
    with pytest.raises(ServiceUnavailable, match="not allowed"):
        await backend.delete("alice", "nb1", volumes=True)
    assert kube_api.get("notebooks", "alice", "nb1") is not None
    assert pvc_names(kube_api) == ["nb1-workspace"]


async def test_stopping_a_notebook_that_is_not_there_is_not_found(backend: KubernetesBackend) -> None:
    with pytest.raises(NotebookNotFound):
        await backend.stop("alice", "ghost")
    with pytest.raises(NotebookNotFound):
        await backend.start("alice", "ghost")


# -- status ----------------------------------------------------------------------------------------


def async_phase(backend: KubernetesBackend, name: str, phase: str, message: str | None = None) -> Callable[[], Any]:
    async def check() -> bool:
        status = (await backend.get("alice", name)).status
        return status.phase == phase and (message is None or status.message == message)

    return check


async def test_status_ready_and_waiting_follow_the_controller(
    backend: KubernetesBackend, controller: KubeController
) -> None:
    await backend.create("alice", nb_spec(), creator=None)
    assert (await backend.get("alice", "nb1")).status.phase == "waiting"  # new: the controller has not reported
    controller.mark_waiting("alice", "nb1", "PodInitializing")
    await wait_until(async_phase(backend, "nb1", "waiting", "PodInitializing"))
    controller.mark_ready("alice", "nb1")
    await wait_until(async_phase(backend, "nb1", "ready", "Running"))


async def test_a_notebook_nothing_reports_on_turns_from_waiting_to_a_warning_after_10s(
    backend: KubernetesBackend,
) -> None:
    await backend.create("alice", nb_spec(), creator=None)
    assert (await backend.get("alice", "nb1")).status.message == "Waiting for StatefulSet to create the underlying Pod."
    later(backend)
    status = (await backend.get("alice", "nb1")).status
    assert (status.phase, status.message) == (
        "warning",
        "Couldn't find any information for the status of this notebook.",
    )


async def test_status_warning_from_the_container_state_and_from_conditions(
    backend: KubernetesBackend, controller: KubeController
) -> None:
    await backend.create("alice", nb_spec(), creator=None)
    controller.mark_waiting("alice", "nb1", "ImagePullBackOff", 'Back-off pulling image "x"')
    await wait_until(async_phase(backend, "nb1", "warning", 'ImagePullBackOff: Back-off pulling image "x"'))
    controller.mark_condition("alice", "nb1", "Unschedulable", "0/3 nodes are available: 3 Insufficient cpu.")
    await wait_until(
        async_phase(backend, "nb1", "warning", "Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.")
    )


async def test_status_warning_from_the_newest_warning_event(
    backend: KubernetesBackend, kube_api: FakeKubeAPI, controller: KubeController
) -> None:
    later(backend)
    await backend.create("alice", nb_spec(), creator=None)
    created = kube_api.get("notebooks", "alice", "nb1")["metadata"]["creationTimestamp"]  # type: ignore[index]
    controller.mark_stopped("alice", "nb1")  # readyReplicas 0, and nothing said about why
    controller.warn("alice", "nb1", "FailedScheduling", "older news", at=created)
    controller.warn(
        "alice", "nb1", "FailedCreate", 'pods "nb1-0" is forbidden: exceeded quota', at="2999-01-01T00:00:00Z"
    )
    controller.warn("alice", "other", "FailedCreate", "about another notebook", at="2999-01-02T00:00:00Z")
    await wait_until(async_phase(backend, "nb1", "warning", 'pods "nb1-0" is forbidden: exceeded quota'))


async def test_status_terminating_while_finalizers_hold_a_deleted_notebook(
    backend: KubernetesBackend, kube_api: FakeKubeAPI
) -> None:
    later(backend)
    body = notebook_body("nb1")
    body["metadata"]["finalizers"] = ["kubeflow.org/test"]
    kube_api.create("notebooks", body, "alice")
    await wait_until(lambda: backend.route("alice", "nb1") is not None)
    await backend.delete("alice", "nb1")
    await wait_until(async_phase(backend, "nb1", "terminating", "Deleting this Notebook Server."))
    assert backend.route("alice", "nb1") is None
    kube_api.patch("notebooks", "alice", "nb1", {"metadata": {"finalizers": None}})
    await wait_until(lambda: kube_api.get("notebooks", "alice", "nb1") is None)


# -- the watch and the routes --------------------------------------------------------------------


async def test_routes_follow_added_and_deleted_events(backend: KubernetesBackend, kube_api: FakeKubeAPI) -> None:
    kube_api.create("notebooks", notebook_body("nb2"), "alice")
    await wait_until(lambda: backend.route("alice", "nb2") == URL("http://nb2.alice.svc.cluster.local:80"))
    kube_api.create("notebooks", notebook_body("nb3", **{"kubeflow-resource-stopped": "2024-01-01T00:00:00Z"}), "alice")
    kube_api.delete("notebooks", "alice", "nb2")
    await wait_until(lambda: backend.route("alice", "nb2") is None)
    assert backend.route("alice", "nb3") is None  # stopped: listed, not routed
    assert [nb.name for nb in await backend.list("alice")] == ["nb3"]


async def test_list_and_get_answer_from_the_view_without_calling_the_api(
    backend: KubernetesBackend, kube_api: FakeKubeAPI
) -> None:
    kube_api.create("notebooks", notebook_body("nb1"), "alice")
    await wait_until(lambda: backend.route("alice", "nb1") is not None)
    before = len(kube_api.requests)
    for _ in range(3):
        assert [nb.name for nb in await backend.list("alice")] == ["nb1"]
        assert (await backend.get("alice", "nb1")).spec.image == IMAGE
    assert len(kube_api.requests) == before


async def test_an_expired_resource_version_makes_the_watch_relist(
    backend: KubernetesBackend, kube_api: FakeKubeAPI
) -> None:
    kube_api.create("notebooks", notebook_body("nb1"), "alice")
    await wait_until(lambda: backend.route("alice", "nb1") is not None)
    await kube_api.go_down()
    kube_api.delete("notebooks", "alice", "nb1")
    kube_api.create("notebooks", notebook_body("nb2"), "alice")
    kube_api.compact()  # what happened while it was down is gone from the history: 410 on resuming
    await kube_api.come_back()
    await wait_until(lambda: backend.route("alice", "nb2") is not None and backend.route("alice", "nb1") is None)
    assert len(api_calls(kube_api)) == 2  # the first list, and the relist after 410


@pytest.mark.parametrize("mode", ["refuse", "503"])
async def test_while_the_api_is_down_routes_keep_serving_and_the_watch_resumes(
    backend: KubernetesBackend, kube_api: FakeKubeAPI, mode: Any
) -> None:
    kube_api.create("notebooks", notebook_body("nb1"), "alice")
    await wait_until(lambda: backend.route("alice", "nb1") is not None)
    reflector, failures = backend.watcher.notebooks[0], []

    async def sleep(delay: float) -> None:
        failures.append(delay)
        await asyncio.sleep(delay)

    reflector.sleep = sleep
    await kube_api.go_down(mode)
    await wait_until(lambda: len(failures) >= 2)  # it tried, failed, and is backing off
    assert backend.route("alice", "nb1") is not None
    assert [nb.name for nb in await backend.list("alice")] == ["nb1"]
    with pytest.raises(ServiceUnavailable, match="Kubernetes API unavailable"):
        await backend.create("alice", nb_spec("nb2"), creator=None)
    await kube_api.come_back()
    kube_api.create("notebooks", notebook_body("nb3"), "alice")
    await wait_until(lambda: backend.route("alice", "nb3") is not None, timeout_s=15)
    assert len(api_calls(kube_api)) == 1  # resumed from the last resourceVersion: no relist
    assert api_calls(kube_api, watch=True)[-1]["resourceVersion"] != ""


async def waits_while_down(
    backend: KubernetesBackend, kube_api: FakeKubeAPI, uniform: Uniform, count: int
) -> list[float]:
    """The first `count` waits of the notebook watch while the API answers 503, with its jitter
    drawn by `uniform` (no time passes: the waits are recorded, not slept)."""
    delays: list[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)

    reflector = backend.watcher.notebooks[0]
    reflector.sleep = record
    reflector.backoff.uniform = uniform
    await kube_api.go_down("503")
    await wait_until(lambda: len(delays) >= count)
    return delays[:count]


async def test_the_watch_backs_off_exponentially_while_the_api_fails(
    backend: KubernetesBackend, kube_api: FakeKubeAPI
) -> None:
    delays = await waits_while_down(backend, kube_api, lambda low, high: high, 12)  # the jitter's top: the ceiling
    assert delays[:12] == pytest.approx([0.1 * 2**i for i in range(9)] + [MAX_BACKOFF_S] * 3)


async def test_the_watchs_waits_are_jittered_so_replicas_do_not_retry_in_step(
    backend: KubernetesBackend, kube_api: FakeKubeAPI
) -> None:
    delays = await waits_while_down(backend, kube_api, lambda low, high: low + (high - low) / 4, 4)
    assert delays[:4] == pytest.approx([0.1, 0.125, 0.175, 0.275])  # a quarter of the way to each ceiling


async def test_a_gateway_started_while_the_api_is_down_is_unready_until_it_answers(
    kube_api: FakeKubeAPI, client: KubeClient
) -> None:
    await kube_api.go_down("503")
    backend = KubernetesBackend(client)
    await backend.open()
    try:
        assert not backend.synced
        with pytest.raises(ServiceUnavailable):
            await backend.list("alice")
        await kube_api.come_back()
        await wait_until(lambda: backend.synced)
        assert await backend.list("alice") == []
    finally:
        await backend.close()


async def test_only_the_configured_namespaces_are_served(kube_api: FakeKubeAPI, client: KubeClient) -> None:
    kube_api.add_namespace("bob")
    kube_api.create("notebooks", notebook_body("nb1"), "bob")
    backend = KubernetesBackend(client, namespaces=("alice",))
    await backend.open()
    try:
        kube_api.create("notebooks", notebook_body("nb2"), "alice")
        await wait_until(lambda: backend.route("alice", "nb2") is not None)
        assert backend.route("bob", "nb1") is None
        with pytest.raises(NotFound, match="not served by this gateway"):
            await backend.create("bob", nb_spec(), creator=None)
        assert all("/namespaces/alice/" in r.path for r in kube_api.requests if "notebooks" in r.path)
    finally:
        await backend.close()


async def test_a_bad_kubeconfig_stops_the_start_with_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("apiVersion: v1\nkind: Config\ncontexts: []\n")
    settings = make_settings(backend="kubernetes", kubeconfig=path, kube_context="nowhere", dev_provider=True)
    runner = web.AppRunner(create_app(settings))
    try:
        with pytest.raises(ConfigError, match="GATEWAY_KUBECONFIG"):
            await runner.setup()  # the app's start-up: its cleanup contexts, the Kubernetes client's among them
    finally:
        await runner.cleanup()


# -- the whole gateway ---------------------------------------------------------------------------


async def test_the_gateway_opens_one_kubernetes_client_for_all_its_users_and_closes_it_after_them(
    gateway_factory: Callable[..., Any], kubeconfig: Path, kube_api: FakeKubeAPI, caplog: pytest.LogCaptureFixture
) -> None:
    kube_api.add_namespace("kubeflow")
    gateway: Client = await gateway_factory(
        user=None,
        backend="kubernetes",
        kubeconfig=kubeconfig,
        policy_store="configmap",
        policy_namespace="kubeflow",
        kubeflow_policies=True,
        profiles="gateway",
    )
    app = gateway.app
    kube, backend, manager = app[keys.KUBE], app[keys.BACKEND], app[keys.POLICIES]
    assert isinstance(backend, KubernetesBackend)
    assert isinstance(manager.store, ConfigMapPolicyStore) and isinstance(manager.external, KubeflowPolicies)
    users = [backend.client, manager.store.client, manager.external.client, app[keys.PROFILES].client]
    assert all(user is kube for user in users)
    assert not kube.closed and (await gateway.get("/readyz")).status == 200
    caplog.clear()
    await gateway.close()
    assert kube.closed
    # Closed after its users had stopped: no watch or loop met a closed client on the way out.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.slow
async def test_the_gateway_creates_through_its_api_and_proxies_to_the_notebook(
    gateway_factory: Callable[..., Any], kubeconfig: Path, kube_api: FakeKubeAPI, jupyter: JupyterServer
) -> None:
    client: Client = await gateway_factory(backend="kubernetes", kubeconfig=kubeconfig)
    assert (await client.get("/readyz")).status == 200
    resp = await client.post("/api/namespaces/alice/notebooks", json={"name": "nb1", "image": IMAGE})
    assert resp.status == 200, await resp.text()
    notebook = kube_api.get("notebooks", "alice", "nb1")
    assert notebook is not None
    assert notebook["metadata"]["annotations"]["notebooks.kubeflow.org/creator"] == "alice@example.com"
    backend = client.app[keys.BACKEND]
    assert isinstance(backend, KubernetesBackend)
    controller = KubeController(kube_api)
    backend.set_route_resolver(controller.resolver(service_resolver("cluster.local")))
    controller.serve("alice", "nb1", jupyter.url)
    await wait_until(lambda: backend.route("alice", "nb1") == URL(jupyter.url))
    resp = await client.get("/notebook/alice/nb1/api/status")
    assert resp.status == 200, await resp.text()
    assert "started" in await resp.json()
    listed = await (await client.get("/api/namespaces/alice/notebooks")).json()
    assert [(nb["name"], nb["status"]["phase"]) for nb in listed["notebooks"]] == [("nb1", "ready")]


async def test_the_api_deletes_a_notebook_with_its_volumes_and_audits_which(
    gateway_factory: Callable[..., Any], kubeconfig: Path, kube_api: FakeKubeAPI
) -> None:
    add_pvc(kube_api, "datasets")
    client: Client = await gateway_factory(backend="kubernetes", kubeconfig=kubeconfig)
    form = {
        "name": "nb1",
        "image": IMAGE,
        "datavols": [
            {"mount": "/home/jovyan/datasets", "existingSource": {"persistentVolumeClaim": {"claimName": "datasets"}}}
        ],
    }
    resp = await client.post("/api/namespaces/alice/notebooks", json=form)
    assert resp.status == 200, await resp.text()
    made = set(pvc_names(kube_api)) - {"datasets"}
    assert made  # the workspace volume the form asked for
    refused = await client.delete("/api/namespaces/alice/notebooks/nb1?volumes=perhaps")
    assert (refused.status, (await refused.json())["field"]) == (400, "volumes")
    resp = await client.delete("/api/namespaces/alice/notebooks/nb1?volumes=true")
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert (answer["volumes_deleted"], answer["volumes_kept"]) == (sorted(made), [])
    assert pvc_names(kube_api) == ["datasets"]
    audit_dir = client.app[keys.SETTINGS].audit_dir
    lines = b"".join(path.read_bytes() for path in sorted(audit_dir.glob("audit-*.jsonl"))).splitlines()
    deletes = [event for event in map(json.loads, lines) if event["action"] == "notebook.delete"]
    details = [(e["outcome"], e["details"].get("error"), e["details"].get("volumes_deleted")) for e in deletes]
    assert details == [("failed", "bad_request", None), ("allowed", None, sorted(made))]


async def test_a_grant_on_one_notebook_cannot_take_other_peoples_volumes_or_names(
    gateway_factory: Callable[..., Any], kubeconfig: Path, kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    add_pvc(kube_api, "carol-workspace")  # a colleague's
    policy = tmp_path / "policy.csv"
    policy.write_text("p, user:bob@example.com, alice, nb1, edit, allow\n")
    client: Client = await gateway_factory(
        user="bob@example.com", backend="kubernetes", kubeconfig=kubeconfig, policy_file=policy
    )
    attach = {
        "mount": "/home/jovyan/loot",
        "existingSource": {"persistentVolumeClaim": {"claimName": "carol-workspace"}},
    }
    squat = {"mount": "/home/jovyan", "newPvc": {"metadata": {"name": "nb2-workspace"}, "spec": WORKSPACE_SPEC}}
    missing = {"mount": "/d", "existingSource": {"persistentVolumeClaim": {"claimName": "no-such-claim"}}}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"datavols": [attach]}, "datavols[0]"),
        ({"workspace": squat}, "workspace"),  # the default workspace of someone's future nb2
        ({"datavols": [missing]}, "datavols[0]"),  # refused alike: no telling which claims exist
    ]
    for form, field in cases:
        resp = await client.post("/api/namespaces/alice/notebooks", json={"name": "nb1", "image": IMAGE, **form})
        answer = await resp.json()
        assert (resp.status, answer["field"]) == (403, field), answer
        assert "carol" not in answer["message"] and "no-such-claim" not in answer["message"]
    assert kube_api.get("notebooks", "alice", "nb1") is None
    resp = await client.post("/api/namespaces/alice/notebooks", json={"name": "nb1", "image": IMAGE})
    assert resp.status == 200, await resp.text()  # its own notebook, with its own workspace
    assert sorted(pvc_names(kube_api)) == ["carol-workspace", "nb1-workspace"]


WORKSPACE_SPEC = {"resources": {"requests": {"storage": "1Gi"}}, "accessModes": ["ReadWriteOnce"]}


async def test_a_notebook_is_routed_only_through_the_clusterip_service_it_owns(
    backend: KubernetesBackend, kube_api: FakeKubeAPI, controller: KubeController
) -> None:
    kube_api.create("notebooks", notebook_body("nb2"), "alice")
    controller.ensure_service("alice", "nb2")  # as the notebook controller makes it
    route = URL("http://nb2.alice.svc.cluster.local:80")
    await wait_until(lambda: backend.route("alice", "nb2") == route)
    # default-editor points the Service elsewhere: the gateway must not follow it there.
    external = {"spec": {"type": "ExternalName", "externalName": "attacker.example.com"}}
    kube_api.patch("services", "alice", "nb2", external)
    await wait_until(lambda: backend.route("alice", "nb2") is None)
    kube_api.patch("services", "alice", "nb2", {"spec": {"type": "ClusterIP", "externalName": None}})
    await wait_until(lambda: backend.route("alice", "nb2") == route)
    # Or replaces it with a Service of its own, which the Notebook does not control.
    kube_api.delete("services", "alice", "nb2")
    service = {"metadata": {"name": "nb2"}, "spec": {"type": "ClusterIP", "selector": {"app": "mine"}}}
    kube_api.create("services", service, "alice")
    await wait_until(lambda: backend.route("alice", "nb2") is None)
