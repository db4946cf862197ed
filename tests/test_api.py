"""The notebook servers JSON API (Jupyter web app routes) against the real gateway and local backend.

Jupyter is slow to start, so only two tests here start one. The others use a notebook that an
"earlier run" left stopped: the local backend reads its record at start-up and runs nothing for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway import keys
from gateway.audit import AuditEvent, AuditLog
from gateway.authz.rules import Action
from gateway.backends import NotebookSpec
from gateway.backends.local import Paths, Record, create_files
from gateway.errors import Forbidden
from gateway.identity import Identity
from gateway.spawner import SpawnerConfig

from .conftest import Client, wait_until

# Every JSON answer these tests see must match /api/openapi.json (tests/openapi_check.py).
pytestmark = pytest.mark.usefixtures("openapi_checked")

NOTEBOOKS = "/api/namespaces/alice/notebooks"
IMAGE = SpawnerConfig.load().image
CREATED = datetime(2024, 5, 1, 12, 30, 5, tzinfo=UTC)
JUPYTER_START_S = 90.0  # two cores shared with other test runs: be patient, but do not hang forever


class RecordingAudit(AuditLog):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[AuditEvent] = []

    def emit(self, event: AuditEvent) -> None:
        self.events.append(event)


@dataclass
class RecordingAuthorizer:
    """Allows everything except the actions in `deny`, and remembers every decision it was asked for."""

    deny: frozenset[str] = frozenset()
    calls: list[tuple[str, Action, str | None]] = field(default_factory=list)

    def require(self, identity: Identity, namespace: str, action: Action, notebook: str | None = None) -> None:
        self.calls.append((namespace, action, notebook))
        if action in self.deny:
            raise Forbidden(f"{identity.subject} may not {action} in {namespace}.")

    def namespaces(self, identity: Identity) -> dict[str, str]:
        return {"alice": "admin"}


@dataclass
class Gateway:
    client: Client
    audit: RecordingAudit
    authz: RecordingAuthorizer
    directory: Path

    async def names(self, namespace: str = "alice") -> list[str]:
        resp = await self.client.get(f"/api/namespaces/{namespace}/notebooks")
        assert resp.status == 200
        return [item["name"] for item in (await resp.json())["notebooks"]]

    async def phase(self, name: str) -> str:
        resp = await self.client.get(f"{NOTEBOOKS}/{name}")
        assert resp.status == 200
        return str((await resp.json())["notebook"]["status"]["phase"])


def leave_stopped_notebook(directory: Path, namespace: str, name: str) -> None:
    """What the local backend leaves on disk for a notebook the user stopped before the gateway restarted."""
    record = Record(namespace, name, NotebookSpec(name=name, image=IMAGE), CREATED, "carol", stopped=True)
    create_files(Paths.of(directory, namespace, name), record, [])


GatewayFactory = Callable[..., Any]


@pytest.fixture
def gateways(gateway_factory: Callable[..., Any], tmp_path: Path) -> GatewayFactory:
    """Builds the real app with the local backend in tmp_path, alice/old left stopped on disk, and a
    recording audit log and authorizer (which denies the actions in `deny`), signed in as alice."""

    async def build(*, deny: frozenset[str] = frozenset()) -> Gateway:
        leave_stopped_notebook(tmp_path, "alice", "old")
        audit, authz = RecordingAudit(), RecordingAuthorizer(deny)

        def record(app: web.Application) -> None:
            app[keys.AUDIT] = audit
            app[keys.AUTHZ] = authz

        client = await gateway_factory(backend="local", local_dir=tmp_path, configure=record)
        audit.events.clear()  # signing in was audited too; these tests are about notebook servers
        return Gateway(client, audit, authz, tmp_path)

    return build


@pytest.fixture
async def gateway(gateways: GatewayFactory) -> Gateway:
    built: Gateway = await gateways()
    return built


async def started(gateway: Gateway, name: str) -> bool:
    return await gateway.phase(name) != "waiting"


async def test_a_created_notebook_is_listed_as_waiting_then_ready_and_can_be_deleted(gateway: Gateway) -> None:
    resp = await gateway.client.post(NOTEBOOKS, json={"name": "nb1", "cpu": "1", "memory": "2Gi"})
    assert resp.status == 200
    body = await resp.json()
    assert (body["success"], body["status"], body["user"]) == (True, 200, "alice@example.com")
    item = body["notebook"]
    assert (item["name"], item["cpu"], item["memory"], item["image"]) == ("nb1", "1", "2Gi", IMAGE)
    assert (item["status"]["phase"], item["volumes"]) == ("waiting", ["nb1-workspace"])
    assert await gateway.names() == ["nb1", "old"]
    await wait_until(lambda: started(gateway, "nb1"), timeout_s=JUPYTER_START_S)
    assert await gateway.phase("nb1") == "ready"
    resp = await gateway.client.delete(f"{NOTEBOOKS}/nb1")
    assert (resp.status, (await resp.json())["success"]) == (200, True)
    assert await gateway.names() == ["old"]
    assert not (gateway.directory / "alice" / "nb1").exists()
    events = gateway.audit.events
    assert [(e.action, e.outcome, e.namespace, e.notebook) for e in events] == [
        ("notebook.create", "allowed", "alice", "nb1"),
        ("notebook.delete", "allowed", "alice", "nb1"),
    ]
    assert events[0].details == {"image": IMAGE, "cpu": "1", "memory": "2Gi", "volumes": ["nb1-workspace"]}


async def test_patch_starts_and_stops_a_notebook(gateway: Gateway) -> None:
    assert await gateway.phase("old") == "stopped"
    resp = await gateway.client.patch(f"{NOTEBOOKS}/old", json={"stopped": False})
    assert resp.status == 200
    assert (await resp.json())["notebook"]["stopped"] is False
    await wait_until(lambda: started(gateway, "old"), timeout_s=JUPYTER_START_S)
    assert await gateway.phase("old") == "ready"
    resp = await gateway.client.patch(f"{NOTEBOOKS}/old", json={"stopped": True})
    assert resp.status == 200
    item = (await resp.json())["notebook"]
    assert (item["stopped"], item["status"]["phase"]) == (True, "stopped")
    assert "kubeflow-resource-stopped" in item["metadata"]["annotations"]
    assert [(e.action, e.outcome, e.notebook) for e in gateway.audit.events] == [
        ("notebook.start", "allowed", "old"),
        ("notebook.stop", "allowed", "old"),
    ]


async def test_list_and_get_answer_in_the_web_app_shape(gateway: Gateway) -> None:
    resp = await gateway.client.get(NOTEBOOKS)
    assert resp.status == 200
    body = await resp.json()
    assert (body["success"], body["status"], body["user"]) == (True, 200, "alice@example.com")
    [item] = body["notebooks"]
    assert (item["name"], item["namespace"], item["serverType"], item["image"]) == ("old", "alice", "jupyter", IMAGE)
    assert (item["shortImage"], item["cpu"], item["memory"]) == (IMAGE.rsplit("/")[-1], "0.5", "1.0Gi")
    assert (item["gpus"], item["volumes"]) == ({"count": 0, "message": ""}, [])
    assert (item["status"]["phase"], item["status"]["state"]) == ("stopped", "")
    assert item["age"] == item["metadata"]["creationTimestamp"] == "2024-05-01T12:30:05Z"  # Kubernetes' format
    assert item["metadata"]["annotations"]["notebooks.kubeflow.org/creator"] == "carol"
    resp = await gateway.client.get(f"{NOTEBOOKS}/old")
    assert (await resp.json())["notebook"] == item
    assert await gateway.names("bob") == []


def volume(mount: str, name: str = "data") -> dict[str, Any]:
    spec = {"resources": {"requests": {"storage": "1Gi"}}, "accessModes": ["ReadWriteOnce"]}
    return {"mount": mount, "newPvc": {"metadata": {"name": name}, "spec": spec}}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Bad_Name"}, "name"),
        ({"name": "a" * 64}, "name"),
        ({"name": "nb1", "colour": "blue"}, "colour"),
        ({"name": "nb1", "cpu": "abc"}, "cpu"),
        ({"name": "nb1", "memory": "1.0Gx"}, "memory"),
        ({"name": "nb1", "cpu": "1", "cpuLimit": "500m"}, "cpuLimit"),
        ({"name": "nb1", "customImage": "http://abc.image:v1"}, "customImage"),
        ({"name": "nb1", "datavols": [volume("data/../../etc")]}, "datavols[0].mount"),
        ({"name": "nb1", "datavols": [volume("/data/../etc")]}, "datavols[0].mount"),
        ({"name": "nb1", "namespace": "bob"}, "namespace"),
    ],
)
async def test_bad_input_is_refused_by_field_and_nothing_is_created(
    gateway: Gateway, body: dict[str, Any], field: str
) -> None:
    resp = await gateway.client.post(NOTEBOOKS, json=body)
    assert resp.status == 400
    error = await resp.json()
    assert (error["error"], error["field"], error["success"]) == ("invalid_notebook", field, False)
    assert error["message"]
    assert await gateway.names() == ["old"]
    assert sorted(p.name for p in (gateway.directory / "alice").iterdir()) == ["old"]
    [event] = gateway.audit.events
    assert (event.action, event.outcome, event.details["error"]) == ("notebook.create", "failed", "invalid_notebook")


@pytest.mark.parametrize(
    ("data", "headers", "message"),
    [
        (b'{"name": "nb1",', {"Content-Type": "application/json"}, "not valid JSON"),
        (b'{"name": "nb1", "name": "nb2"}', {"Content-Type": "application/json"}, "appears twice"),
        (b'{"name": "nb1", "cpu": NaN}', {"Content-Type": "application/json"}, "NaN is not allowed"),
        (b'["nb1"]', {"Content-Type": "application/json"}, "must be a JSON object"),
        (b'{"name": "nb1"}', {"Content-Type": "text/plain"}, "Content-Type: application/json"),
    ],
)
async def test_a_body_that_is_not_one_small_json_object_is_refused(
    gateway: Gateway, data: bytes, headers: dict[str, str], message: str
) -> None:
    resp = await gateway.client.post(NOTEBOOKS, data=data, headers=headers)
    assert resp.status == 400
    assert message in (await resp.json())["message"]
    assert await gateway.names() == ["old"]


async def test_a_body_over_the_limit_is_413_naming_the_limit(gateway: Gateway) -> None:
    data = b'{"name": "' + b"x" * 70_000 + b'"}'
    resp = await gateway.client.post(NOTEBOOKS, data=data, headers={"Content-Type": "application/json"})
    assert resp.status == 413
    assert "larger than 64 KiB" in (await resp.json())["message"]
    assert await gateway.names() == ["old"]


async def test_a_bad_namespace_in_the_path_is_refused(gateway: Gateway) -> None:
    for method in ("GET", "POST"):
        resp = await gateway.client.request(method, "/api/namespaces/Alice_B/notebooks", json={"name": "nb1"})
        assert resp.status == 400
        assert (await resp.json())["field"] == "namespace"
    resp = await gateway.client.get(f"{NOTEBOOKS}/Not_A_Name")
    assert (resp.status, (await resp.json())["field"]) == (400, "name")
    assert gateway.authz.calls == []  # refused before anything was asked or done


async def test_a_duplicate_name_is_a_conflict(gateway: Gateway) -> None:
    resp = await gateway.client.post(NOTEBOOKS, json={"name": "old"})
    assert resp.status == 409
    assert (await resp.json())["error"] == "notebook_exists"
    assert await gateway.phase("old") == "stopped"  # untouched
    [event] = gateway.audit.events
    assert (event.action, event.outcome, event.notebook) == ("notebook.create", "failed", "old")
    assert (event.request_id, event.client_ip) == (resp.headers["X-Request-Id"], "127.0.0.1")


@pytest.mark.parametrize(
    ("body", "field"),
    [({"stopped": "yes"}, "stopped"), ({}, "stopped"), ([True], "stopped"), ({"stopped": True, "x": 1}, "x")],
)
async def test_patch_takes_exactly_a_stopped_flag(gateway: Gateway, body: object, field: str) -> None:
    resp = await gateway.client.patch(f"{NOTEBOOKS}/old", json=body)
    assert resp.status == 400
    error = await resp.json()
    assert (error["error"], error["field"]) == ("bad_request", field)
    assert await gateway.phase("old") == "stopped"
    assert gateway.audit.events == []


async def test_an_unknown_notebook_is_a_json_404(gateway: Gateway) -> None:
    for method, data in (("GET", None), ("PATCH", {"stopped": False}), ("DELETE", None)):
        resp = await gateway.client.request(method, f"{NOTEBOOKS}/nope", json=data)
        assert resp.status == 404, method
        assert (await resp.json())["error"] == "notebook_not_found"


async def test_deleting_a_stopped_notebook_removes_it(gateway: Gateway) -> None:
    resp = await gateway.client.delete(f"{NOTEBOOKS}/old")
    assert resp.status == 200
    assert await gateway.names() == []
    resp = await gateway.client.get(f"{NOTEBOOKS}/old")
    assert resp.status == 404


async def test_every_handler_asks_the_authorizer_once_and_a_denial_is_audited(gateways: GatewayFactory) -> None:
    gateway = await gateways(deny=frozenset({"delete"}))
    await gateway.client.get(NOTEBOOKS)
    await gateway.client.get(f"{NOTEBOOKS}/old")
    await gateway.client.patch(f"{NOTEBOOKS}/old", json={"stopped": True})
    resp = await gateway.client.delete(f"{NOTEBOOKS}/old")
    assert (resp.status, (await resp.json())["error"]) == (403, "forbidden")
    assert gateway.authz.calls == [
        ("alice", "view", None),
        ("alice", "view", "old"),
        ("alice", "stop", "old"),
        ("alice", "delete", "old"),
    ]
    assert [(e.action, e.outcome) for e in gateway.audit.events] == [
        ("notebook.stop", "allowed"),
        ("notebook.delete", "denied"),
        ("access.denied", "denied"),  # every 403 on an API route, besides the action's own event
    ]
    assert await gateway.names() == ["old"]


async def test_config_serves_the_spawner_defaults(gateway: Gateway) -> None:
    resp = await gateway.client.get("/api/config")
    assert resp.status == 200
    config = (await resp.json())["config"]
    assert (config["image"]["value"], config["cpu"]["value"], config["memory"]["value"]) == (IMAGE, "0.5", "1.0Gi")
    workspace = config["workspaceVolume"]["value"]
    assert workspace["newPvc"]["metadata"]["name"] == "{notebook-name}-workspace"
    assert workspace["newPvc"]["spec"]["resources"]["requests"]["storage"] == "5Gi"


async def test_the_static_backend_cannot_create(
    gateway_factory: Callable[..., Any], routes_file: Callable[[dict[tuple[str, str], str]], Path]
) -> None:
    client: Client = await gateway_factory(
        backend="static", routes_file=routes_file({("alice", "nb1"): "http://127.0.0.1:9"})
    )
    resp = await client.post(NOTEBOOKS, json={"name": "nb2"})
    assert resp.status == 405
    assert (await resp.json())["error"] == "not_supported"
    resp = await client.get(NOTEBOOKS)
    assert [item["name"] for item in (await resp.json())["notebooks"]] == ["nb1"]
