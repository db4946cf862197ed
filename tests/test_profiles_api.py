"""gateway/web/profiles_api.py through the real app on the fake API server: cluster-admins create
and delete profiles (audited, the owner made admin); others get 403; bad input makes nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from gateway import keys
from gateway.authz.rules import Rule
from gateway.backends.kubernetes import KubernetesBackend
from gateway.backends.notebook_watcher import service_resolver
from gateway.profiles import OWNER_ANNOTATION
from tests.fakes.kube_api import FakeKubeAPI
from tests.fakes.kube_controller import KubeController
from tests.fakes.upstream import FakeUpstream
from tests.test_api import RecordingAudit

from .conftest import Client, wait_until

# Every JSON answer these tests see must match /api/openapi.json (tests/openapi_check.py).
pytestmark = pytest.mark.usefixtures("openapi_checked")

Factory = Callable[..., Any]
ROOT = "root@example.com"


@pytest.fixture
def gateways(gateway_factory: Factory, kube_api: FakeKubeAPI, tmp_path: Path) -> Factory:
    """The gateway on the Kubernetes backend, with root@example.com a cluster-admin."""
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")

    async def make(**settings: Any) -> Client:
        settings = {"backend": "kubernetes", "kubeconfig": kubeconfig, "bootstrap_admins": (ROOT,), **settings}
        client: Client = await gateway_factory(**settings)
        return client

    return make


async def test_a_cluster_admin_creates_and_deletes_a_profile_audited(gateways: Factory, kube_api: FakeKubeAPI) -> None:
    audit = RecordingAudit()
    client: Client = await gateways(user=ROOT, configure=lambda app: app.__setitem__(keys.AUDIT, audit))
    resp = await client.post(
        "/api/profiles", json={"name": "team-a", "owner": "Alice@Example.com", "quota": {"cpu": 4}}
    )
    assert resp.status == 201, await resp.text()
    assert kube_api.get("namespaces", "", "team-a") is not None
    assert Rule("user:alice@example.com", "team-a", "admin") in client.app[keys.POLICIES].doc.rules
    resp = await client.delete("/api/profiles/team-a")
    assert resp.status == 400
    assert "confirm=team-a" in (await resp.json())["message"]
    assert (await client.delete("/api/profiles/team-a?confirm=team-a")).status == 200
    assert kube_api.get("namespaces", "", "team-a") is None
    assert not [rule for rule in client.app[keys.POLICIES].doc.rules if rule.namespace == "team-a"]
    events = [(e.action, e.actor, e.namespace) for e in audit.events if e.namespace == "team-a"]
    # The owner's role is a policy change of its own, granted and revoked as through the policy API.
    assert events == [
        ("profile.create", ROOT, "team-a"),
        ("policy.grant", ROOT, "team-a"),
        ("profile.delete", ROOT, "team-a"),
        ("policy.revoke", ROOT, "team-a"),
    ]
    grant, revoke = (e for e in audit.events if e.action.startswith("policy.") and e.namespace == "team-a")
    assert grant.details["via"] == revoke.details["via"] == "profile"
    assert grant.details["rule"] == revoke.details["rule"]


async def test_deleting_a_profile_takes_its_notebooks_off_the_gateway(
    gateways: Factory, kube_api: FakeKubeAPI, aiohttp_server: Any
) -> None:
    upstream = await FakeUpstream.start(aiohttp_server)
    client: Client = await gateways(user=ROOT)
    assert (await client.post("/api/profiles", json={"name": "team-a", "owner": "alice@example.com"})).status == 201
    for name in ("nb1", "nb2"):
        resp = await client.post("/api/namespaces/team-a/notebooks", json={"name": name, "image": "jupyter/base:1"})
        assert resp.status == 200, await resp.text()
    backend = client.app[keys.BACKEND]
    assert isinstance(backend, KubernetesBackend)
    controller = KubeController(kube_api)  # nb1's pod is the fake upstream, and it is ready
    backend.set_route_resolver(controller.resolver(service_resolver("cluster.local")))
    controller.serve("team-a", "nb1", upstream.url)
    await wait_until(lambda: backend.route("team-a", "nb1") == URL(upstream.url))
    assert (await client.get("/notebook/team-a/nb1/echo")).status == 200
    assert (await client.delete("/api/profiles/team-a?confirm=team-a")).status == 200
    # The namespace took its notebooks with it, and the gateway's watch saw each go.
    assert kube_api.objects("notebooks", "team-a") == []
    await wait_until(lambda: backend.route("team-a", "nb1") is None)
    assert (await client.get("/notebook/team-a/nb1/echo")).status == 404
    listed = await client.get("/api/namespaces/team-a/notebooks")
    assert (listed.status, (await listed.json())["notebooks"]) == (200, [])


async def test_only_a_cluster_admin_may_create_or_delete_profiles(gateways: Factory, kube_api: FakeKubeAPI) -> None:
    client: Client = await gateways(user="alice@example.com")
    resp = await client.post("/api/profiles", json={"name": "team-a", "owner": "alice@example.com"})
    assert resp.status == 403
    assert (await client.delete("/api/profiles/alice?confirm=alice")).status == 403
    assert kube_api.get("namespaces", "", "team-a") is None
    assert kube_api.get("namespaces", "", "alice") is not None


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"name": "Team A", "owner": "a@example.com"}, 400),
        ({"name": "team-a", "owner": "nobody"}, 400),
        ({"name": "team-a", "owner": "a@example.com", "quota": {"memory": "a lot"}}, 400),
        ({"name": "alice", "owner": "a@example.com"}, 409),  # exists, not made by the gateway
    ],
)
async def test_bad_input_is_refused_with_a_reason_and_nothing_is_made(
    gateways: Factory, kube_api: FakeKubeAPI, body: dict[str, object], status: int
) -> None:
    client: Client = await gateways(user=ROOT)
    revision, rules = kube_api.revision, client.app[keys.POLICIES].doc.rules
    resp = await client.post("/api/profiles", json=body)
    assert resp.status == status
    assert (await resp.json())["message"]
    assert (kube_api.revision, client.app[keys.POLICIES].doc.rules) == (revision, rules)


async def test_kubeflow_mode_makes_a_profile_object(gateways: Factory, kube_api: FakeKubeAPI) -> None:
    client: Client = await gateways(user=ROOT, profiles="kubeflow")
    resp = await client.post("/api/profiles", json={"name": "team-a", "owner": "user:alice@example.com"})
    assert resp.status == 201, await resp.text()
    assert kube_api.get("profiles", "", "team-a") is not None
    assert kube_api.get("namespaces", "", "team-a") is None


CAROLS = "kubeflow-carol-example-com"


async def test_an_auto_profile_at_first_sign_in_gets_its_namespace(gateways: Factory, kube_api: FakeKubeAPI) -> None:
    client: Client = await gateways(user="carol@example.com", auto_profile=True, owns_namespace=False)
    assert Rule("user:carol@example.com", CAROLS, "admin") in client.app[keys.POLICIES].doc.rules
    assert kube_api.get("namespaces", "", CAROLS) is not None
    assert [sa["metadata"]["name"] for sa in kube_api.objects("serviceaccounts", CAROLS)] == [
        "default-editor",
        "default-viewer",
    ]


async def test_an_auto_profile_never_takes_a_namespace_that_exists_or_a_profile_names(
    gateways: Factory, kube_api: FakeKubeAPI
) -> None:
    for name in ("carol", CAROLS):  # made by someone else, whatever the derivation
        kube_api.add_namespace(name)
    client: Client = await gateways(user="carol@example.com", auto_profile=True, owns_namespace=False)
    [rule] = [rule for rule in client.app[keys.POLICIES].doc.rules if rule.subject == "user:carol@example.com"]
    assert rule.namespace == f"{CAROLS}-2"
    made = kube_api.get("namespaces", "", rule.namespace)
    assert made is not None and made["metadata"]["annotations"][OWNER_ANNOTATION] == "carol@example.com"


async def test_profiles_need_the_kubernetes_backend(gateway_factory: Factory, routes_file: Factory) -> None:
    routes = routes_file({})
    client: Client = await gateway_factory(user=ROOT, bootstrap_admins=(ROOT,), routes_file=routes)
    resp = await client.post("/api/profiles", json={"name": "team-a", "owner": "alice@example.com"})
    assert resp.status == 503
    assert "GATEWAY_BACKEND=kubernetes" in (await resp.json())["message"]


async def test_a_cluster_admin_lists_the_profiles_with_owner_and_quota(
    gateways: Factory, kube_api: FakeKubeAPI
) -> None:
    client: Client = await gateways(user=ROOT)
    quota = {"cpu": "4", "nvidia.com/gpu": "1"}
    for body in (
        {"name": "team-b", "owner": "bob@example.com"},
        {"name": "team-a", "owner": "a@x.org", "quota": quota},
    ):
        assert (await client.post("/api/profiles", json=body)).status == 201
    resp = await client.get("/api/profiles")
    assert resp.status == 200
    profiles = (await resp.json())["profiles"]
    assert "alice" not in [p["name"] for p in profiles]  # a namespace the gateway did not make
    assert [p for p in profiles if p["name"].startswith("team-")] == [
        {"name": "team-a", "owner": "user:a@x.org", "quota": {**quota, "limits.cpu": "4"}, **NO_TOKEN},
        {"name": "team-b", "owner": "user:bob@example.com", "quota": {}, **NO_TOKEN},
    ]


async def test_kubeflow_mode_lists_the_profile_objects(gateways: Factory, kube_api: FakeKubeAPI) -> None:
    client: Client = await gateways(user=ROOT, profiles="kubeflow")
    body = {"name": "team-a", "owner": "alice@example.com", "quota": {"memory": "8Gi"}}
    created = await client.post("/api/profiles", json=body)
    assert created.status == 201
    assert (await created.json())["mountServiceAccountToken"] is True  # Kubeflow mounts it, and says so
    listed = await (await client.get("/api/profiles")).json()
    team_a: dict[str, object] = {"name": "team-a", "owner": "user:alice@example.com"}
    team_a["quota"] = {"memory": "8Gi", "limits.memory": "8Gi"}
    team_a["mountServiceAccountToken"] = True  # Kubeflow's profile controller always mounts it
    assert team_a in listed["profiles"]
    assert listed["mode"] == "kubeflow"


async def test_only_a_cluster_admin_may_list_profiles(gateways: Factory) -> None:
    client: Client = await gateways(user="alice@example.com")
    resp = await client.get("/api/profiles")
    assert resp.status == 403
    assert "cluster-admin" in (await resp.json())["message"]


# Limits are bounded with requests (`limits.cpu` follows `cpu`), and notebooks get no API token unless asked.
NO_TOKEN = {"mountServiceAccountToken": False}
