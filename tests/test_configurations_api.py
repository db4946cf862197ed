"""The configurations (PodDefaults) API against the real gateway, the kubernetes backend and the fake API
server (which checks PodDefaults and Notebooks against their CRDs); and against the local backend,
which has none."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway import keys
from tests.fakes.kube_api import FakeKubeAPI

from .conftest import Client
from .test_api import RecordingAudit, RecordingAuthorizer

# Every JSON answer these tests see must match /api/openapi.json (tests/openapi_check.py).
pytestmark = pytest.mark.usefixtures("openapi_checked")

PODDEFAULTS = "/api/namespaces/alice/poddefaults"
IMAGE = "ghcr.io/kubeflow/kubeflow/notebook-servers/jupyter-scipy:v1.10.0"
FORM = {
    "name": "object-store",
    "desc": "Team object store",
    "env": [{"name": "STORE_URL", "value": "https://store.example.com"}],
    "secretMounts": [{"secret": "store-creds", "mountPath": "/etc/store"}],
}
Built = tuple[Client, RecordingAudit]


@pytest.fixture
def build(gateway_factory: Callable[..., Any], kube_api: FakeKubeAPI, tmp_path: Path) -> Callable[..., Any]:
    """The gateway on the fake cluster (GATEWAY_PROFILES=gateway), with a recording audit log and an
    authorizer that denies the actions in `deny`."""

    async def make(*, deny: frozenset[str] = frozenset()) -> Built:
        audit = RecordingAudit()

        def record(app: web.Application) -> None:
            app[keys.AUDIT], app[keys.AUTHZ] = audit, RecordingAuthorizer(deny)

        kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")
        client = await gateway_factory(
            backend="kubernetes", kubeconfig=kubeconfig, profiles="gateway", configure=record
        )
        audit.events.clear()
        return client, audit

    return make


async def test_an_admin_creates_a_configuration_and_it_is_listed_in_the_web_apps_shape(
    build: Callable[..., Any], kube_api: FakeKubeAPI
) -> None:
    client, audit = await build()
    resp = await client.post(PODDEFAULTS, json=FORM)
    assert resp.status == 200, await resp.text()
    listed = await (await client.get(PODDEFAULTS)).json()
    assert listed["success"] is True
    assert [(p["label"], p["desc"], p["name"]) for p in listed["poddefaults"]] == [
        ("object-store", "Team object store", "object-store")
    ]
    [event] = audit.events
    assert (event.action, event.outcome, event.details["secrets"]) == (
        "configuration.create",
        "allowed",
        ["store-creds"],
    )
    assert "https://store.example.com" not in json.dumps(event.to_record())  # names only, never values


async def test_a_notebook_created_with_a_configuration_gets_its_label_env_and_volumes(
    build: Callable[..., Any], kube_api: FakeKubeAPI
) -> None:
    client, _ = await build()
    assert (await client.post(PODDEFAULTS, json=FORM)).status == 200
    body = {"name": "nb1", "image": IMAGE, "configurations": ["object-store"]}
    resp = await client.post("/api/namespaces/alice/notebooks", json=body)
    assert resp.status == 200, await resp.text()
    notebook = kube_api.get("notebooks", "alice", "nb1")  # stored only if it passed the Notebook CRD
    assert notebook is not None and notebook["metadata"]["labels"]["object-store"] == "true"
    [container] = notebook["spec"]["template"]["spec"]["containers"]
    assert {"name": "STORE_URL", "value": "https://store.example.com"} in container["env"]
    assert "/etc/store" in [mount["mountPath"] for mount in container["volumeMounts"]]


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({**FORM, "name": "Bad Name"}, "DNS-1123"),
        ({**FORM, "env": [{"name": "1X", "value": "v"}]}, "variable name"),
        ({**FORM, "secretMounts": [{"secret": "s", "mountPath": "../x"}]}, "absolute path"),
    ],
)
async def test_a_bad_configuration_is_400_with_a_reason_and_nothing_is_made(
    build: Callable[..., Any], kube_api: FakeKubeAPI, form: dict[str, Any], message: str
) -> None:
    client, audit = await build()
    resp = await client.post(PODDEFAULTS, json=form)
    assert resp.status == 400
    assert message in (await resp.json())["message"]
    assert kube_api.objects("poddefaults") == []
    assert [(e.action, e.outcome) for e in audit.events] == [("configuration.create", "failed")]


async def test_only_namespace_admins_create_and_delete_but_viewers_list(
    build: Callable[..., Any], kube_api: FakeKubeAPI
) -> None:
    client, audit = await build(deny=frozenset({"manage"}))
    assert (await client.post(PODDEFAULTS, json=FORM)).status == 403
    assert (await client.delete(f"{PODDEFAULTS}/object-store")).status == 403
    assert (await client.get(PODDEFAULTS)).status == 200
    assert kube_api.objects("poddefaults") == []
    denied = [(e.action, e.outcome) for e in audit.events if e.action.startswith("configuration.")]
    assert denied == [("configuration.create", "denied"), ("configuration.delete", "denied")]


async def test_delete_removes_the_configuration_and_is_audited(
    build: Callable[..., Any], kube_api: FakeKubeAPI
) -> None:
    client, audit = await build()
    assert (await client.post(PODDEFAULTS, json=FORM)).status == 200
    resp = await client.delete(f"{PODDEFAULTS}/object-store")
    assert resp.status == 200, await resp.text()
    assert kube_api.objects("poddefaults") == []
    assert (await client.delete(f"{PODDEFAULTS}/object-store")).status == 404
    assert [(e.action, e.outcome) for e in audit.events][-2:] == [
        ("configuration.delete", "allowed"),
        ("configuration.delete", "failed"),
    ]


async def test_other_backends_list_no_configurations(gateway_factory: Callable[..., Any], tmp_path: Path) -> None:
    client: Client = await gateway_factory(backend="local", local_dir=tmp_path)
    resp = await client.get(PODDEFAULTS)
    assert (resp.status, (await resp.json())["poddefaults"]) == (200, [])
    assert (await client.post(PODDEFAULTS, json=FORM)).status == 405


async def test_the_new_server_form_and_the_configurations_page_list_them(
    build: Callable[..., Any], kube_api: FakeKubeAPI
) -> None:
    client, _ = await build()
    assert (await client.post(PODDEFAULTS, json=FORM)).status == 200
    form = await (await client.get("/notebooks/new?ns=alice")).text()
    assert 'name="configurations" value="object-store"> Team object store' in form
    page = await client.get("/configurations?ns=alice")
    assert page.status == 200
    text = await page.text()
    assert "<code>store-creds</code> at <code>/etc/store</code>" in text and 'data-delete="object-store"' in text


async def test_the_configurations_page_needs_manage_and_says_when_the_backend_has_none(
    build: Callable[..., Any], gateway_factory: Callable[..., Any], tmp_path: Path
) -> None:
    denied, _ = await build(deny=frozenset({"manage"}))
    assert (await denied.get("/configurations?ns=alice")).status == 403
    local: Client = await gateway_factory(backend="local", local_dir=tmp_path / "local")
    page = await local.get("/configurations?ns=alice")
    assert (page.status, "need the Kubernetes backend" in await page.text()) == (200, True)


async def test_starting_a_server_again_gives_it_the_configuration_as_it_is_now_and_audits_it(
    build: Callable[..., Any], kube_api: FakeKubeAPI
) -> None:
    client, audit = await build()
    assert (await client.post(PODDEFAULTS, json=FORM)).status == 200
    body = {"name": "nb1", "image": IMAGE, "configurations": ["object-store"]}
    assert (await client.post("/api/namespaces/alice/notebooks", json=body)).status == 200
    env = [{"name": "STORE_URL", "value": "https://new-store.example.com"}]
    kube_api.patch(
        "poddefaults", "alice", "object-store", {"spec": {"env": env, "volumes": None, "volumeMounts": None}}
    )
    assert (await client.patch("/api/namespaces/alice/notebooks/nb1", json={"stopped": True})).status == 200
    resp = await client.patch("/api/namespaces/alice/notebooks/nb1", json={"stopped": False})
    assert resp.status == 200, await resp.text()
    notebook = kube_api.get("notebooks", "alice", "nb1")
    assert notebook is not None and "kubeflow-resource-stopped" not in notebook["metadata"]["annotations"]
    pod = notebook["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["env"] == env
    assert "/etc/store" not in [mount["mountPath"] for mount in container["volumeMounts"]]
    assert not any("secret" in volume for volume in pod["volumes"])
    [start] = [e for e in audit.events if e.action == "notebook.start"]
    assert (start.outcome, start.details) == ("allowed", {"configurations": ["object-store"]})
    assert "https://new-store.example.com" not in json.dumps(start.to_record())


async def test_starting_a_server_whose_configuration_was_deleted_succeeds_without_it(
    build: Callable[..., Any], kube_api: FakeKubeAPI
) -> None:
    client, audit = await build()
    assert (await client.post(PODDEFAULTS, json=FORM)).status == 200
    body = {"name": "nb1", "image": IMAGE, "configurations": ["object-store"]}
    assert (await client.post("/api/namespaces/alice/notebooks", json=body)).status == 200
    assert (await client.patch("/api/namespaces/alice/notebooks/nb1", json={"stopped": True})).status == 200
    assert (await client.delete(f"{PODDEFAULTS}/object-store")).status == 200
    resp = await client.patch("/api/namespaces/alice/notebooks/nb1", json={"stopped": False})
    assert resp.status == 200, await resp.text()
    notebook = kube_api.get("notebooks", "alice", "nb1")
    assert notebook is not None
    [container] = notebook["spec"]["template"]["spec"]["containers"]
    assert container["env"] == [] and "/etc/store" not in [m["mountPath"] for m in container["volumeMounts"]]
    [start] = [e for e in audit.events if e.action == "notebook.start"]
    assert (start.outcome, start.details) == ("allowed", {})
