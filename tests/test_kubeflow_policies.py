"""Kubeflow as a read-only policy source, against the fake API server through the official client:
Profile owners and KFAM contributors get their roles by watch, explain and access listings say where
each came from, and the gateway's API refuses to change them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway import keys
from tests.conftest import Client, wait_until
from tests.fakes.kube_api import FakeKubeAPI
from tests.fakes.upstream import FakeUpstream

Factory = Callable[..., Any]
BOB_EDIT = {"subject": "user:bob@example.com", "namespace": "alice", "role": "edit"}
RB_NAME = "user-bob-example-com-clusterrole-edit"  # as KFAM names it


@pytest.fixture
def gateways(
    kube_api: FakeKubeAPI,  # first, so that it stops after the gateways
    gateway_factory: Factory,
    routes_file: Callable[..., Path],
    upstream: FakeUpstream,
    tmp_path: Path,
) -> Factory:
    """The real gateway taking roles from Kubeflow (policies otherwise in memory, no self-service
    profiles), with the fake notebook at /notebook/alice/nb1/."""
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")
    routes = routes_file({("alice", "nb1"): upstream.url})

    async def build(user: str = "alice@example.com", **settings: Any) -> Client:
        client: Client = await gateway_factory(
            user=user,
            routes_file=routes,
            kubeflow_policies=True,
            kubeconfig=kubeconfig,
            policy_reload_interval_s=0.1,
            **{"auto_profile": False, **settings},
        )
        return client

    return build


def add_profile(kube_api: FakeKubeAPI, name: str, owner: str) -> None:
    """A Profile, and its namespace annotated with its owner as Kubeflow's profile controller leaves it."""
    kube_api.create("profiles", {"metadata": {"name": name}, "spec": {"owner": {"kind": "User", "name": owner}}})
    if kube_api.get("namespaces", "", name) is None:
        kube_api.add_namespace(name)
    kube_api.patch("namespaces", "", name, {"metadata": {"annotations": {"owner": owner}}})


def add_binding(kube_api: FakeKubeAPI, namespace: str, user: str, role: str, cluster_role: str = "") -> str:
    """A contributor's RoleBinding as KFAM (the contributor UI) writes it."""
    name = f"user-{user.replace('@', '-').replace('.', '-')}-clusterrole-{role}"
    body = {
        "metadata": {"name": name, "annotations": {"user": user, "role": role}},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": cluster_role or f"kubeflow-{role}",
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    kube_api.create("rolebindings", body, namespace)
    return name


async def test_a_profile_owner_may_connect_in_their_namespace(gateways: Factory, kube_api: FakeKubeAPI) -> None:
    alice: Client = await gateways()
    assert (await alice.get("/notebook/alice/nb1/echo")).status == 403
    add_profile(kube_api, "alice", "Alice@Example.com")  # sign-in lower-cases email usernames; so do the rules
    await wait_until(lambda: _status(alice, "/notebook/alice/nb1/echo", 200))
    kube_api.delete("profiles", "", "alice")
    await wait_until(lambda: _status(alice, "/notebook/alice/nb1/echo", 403))


async def test_a_kfam_rolebinding_grants_its_role_and_deleting_it_revokes_it(
    gateways: Factory, kube_api: FakeKubeAPI
) -> None:
    add_profile(kube_api, "alice", "alice@example.com")
    bob: Client = await gateways(user="bob@example.com")
    assert (await bob.get("/notebook/alice/nb1/echo")).status == 403
    name = add_binding(kube_api, "alice", "bob@example.com", "edit")
    await wait_until(lambda: _status(bob, "/notebook/alice/nb1/echo", 200))
    kube_api.delete("rolebindings", "alice", name)
    await wait_until(lambda: _status(bob, "/notebook/alice/nb1/echo", 403))


async def test_only_kfam_bindings_in_profile_namespaces_give_roles(gateways: Factory, kube_api: FakeKubeAPI) -> None:
    add_profile(kube_api, "alice", "alice@example.com")
    kube_api.add_namespace("other")
    add_binding(kube_api, "alice", "bob@example.com", "edit", cluster_role="edit")  # Kubernetes' own ClusterRole
    add_binding(kube_api, "other", "bob@example.com", "edit")  # not a profile's namespace
    add_binding(kube_api, "alice", "carol@example.com", "view")
    alice: Client = await gateways()
    await wait_until(lambda: _has_subjects(alice, "user:alice@example.com", "user:carol@example.com"))
    assert "user:bob@example.com" not in await _subjects(alice)


async def test_kubeflow_rules_show_their_source_in_explain_and_access(gateways: Factory, kube_api: FakeKubeAPI) -> None:
    add_profile(kube_api, "alice", "alice@example.com")
    add_binding(kube_api, "alice", "bob@example.com", "edit")
    alice: Client = await gateways()
    await wait_until(lambda: _has_subjects(alice, "user:bob@example.com"))
    check = {"user": "bob@example.com", "namespace": "alice", "action": "connect", "notebook": "nb1"}
    explained = await (await alice.post("/api/policies/check", json=check)).json()
    assert explained["allowed"] is True
    assert [(r["source"], r["location"], r["editable"]) for r in explained["rules"]] == [
        ("kubeflow-rolebinding", f"alice/{RB_NAME}", False)
    ]
    access = (await (await alice.get("/api/namespaces/alice/access")).json())["access"]
    owner = next(entry for entry in access if entry["subject"] == "user:alice@example.com")
    assert (owner["role"], owner["source"], owner["location"]) == ("admin", "kubeflow-profile", "alice")


async def test_kubeflow_rules_cannot_be_revoked_or_replaced_through_the_api(
    gateways: Factory, kube_api: FakeKubeAPI
) -> None:
    add_profile(kube_api, "alice", "alice@example.com")
    add_binding(kube_api, "alice", "bob@example.com", "edit")
    admin: Client = await gateways(user="root@example.com", bootstrap_admins=("root@example.com",))
    await wait_until(lambda: _has_subjects(admin, "user:bob@example.com"))
    revoked = await admin.delete("/api/policies", json=BOB_EDIT)
    assert revoked.status == 409
    message = (await revoked.json())["message"]
    assert f"kubeflow-rolebinding alice/{RB_NAME}" in message
    assert "Kubeflow" in message and "contributor UI" in message and "kubectl" in message
    version = (await admin.get("/api/policies")).headers["ETag"]
    replaced = await admin.put("/api/policies", json={"rules": [BOB_EDIT]}, headers={"If-Match": version})
    assert replaced.status == 400 and "comes from Kubeflow" in (await replaced.json())["message"]
    assert await _has_subjects(admin, "user:bob@example.com")  # still in force


async def _status(client: Client, path: str, expected: int) -> bool:
    return (await client.get(path)).status == expected


async def _subjects(client: Client) -> set[str]:
    """Who holds a role in namespace alice, as its access listing says."""
    access = (await (await client.get("/api/namespaces/alice/access")).json()).get("access", [])
    return {entry["subject"] for entry in access}


async def _has_subjects(client: Client, *subjects: str) -> bool:
    return set(subjects) <= await _subjects(client)


async def test_self_service_never_takes_a_namespace_a_kubeflow_profile_or_binding_gives(
    gateways: Factory, kube_api: FakeKubeAPI
) -> None:
    # Without a backend that knows Kubernetes namespaces, only Kubeflow's roles say these are taken.
    add_profile(kube_api, "ann", "ann@corp.example")  # what a name from the address's first part would be
    add_profile(kube_api, "kubeflow-ann-other-example", "ann@corp.example")
    add_binding(kube_api, "kubeflow-ann-other-example", "carol@example.com", "edit")
    add_profile(kube_api, "kubeflow-ann-other-example-2", "someone@example.com")
    client: Client = await gateways(user="ann@other.example", auto_profile=True, owns_namespace=False)
    mine = [rule.namespace for rule in client.app[keys.POLICIES].doc.rules if rule.subject == "user:ann@other.example"]
    assert mine == ["kubeflow-ann-other-example-3"]


async def test_a_profile_gives_nothing_in_a_namespace_it_does_not_own(gateways: Factory, kube_api: FakeKubeAPI) -> None:
    kube_api.add_namespace("kube-system")  # exists, with no owner: Kubeflow refuses to take it over
    profile = {"metadata": {"name": "kube-system"}, "spec": {"owner": {"kind": "User", "name": "mallory@example.com"}}}
    kube_api.create("profiles", profile)
    add_binding(kube_api, "kube-system", "mallory@example.com", "admin")  # nor do KFAM-style bindings there
    kube_api.create("profiles", {"metadata": {"name": "bob"}, "spec": {"owner": {"kind": "User", "name": "bob@x.org"}}})
    kube_api.add_namespace("bob")
    kube_api.patch("namespaces", "", "bob", {"metadata": {"annotations": {"owner": "carol@x.org"}}})  # carol's
    add_profile(kube_api, "alice", "alice@example.com")  # a real one, for a synced view to wait on
    admin: Client = await gateways(user="root@example.com", bootstrap_admins=("root@example.com",))
    await wait_until(lambda: _has_subjects(admin, "user:alice@example.com"))
    for user, namespace in [("mallory@example.com", "kube-system"), ("bob@x.org", "bob")]:
        check = {"user": user, "namespace": namespace, "action": "manage"}
        assert (await (await admin.post("/api/policies/check", json=check)).json())["allowed"] is False, user
    check = {"user": "alice@example.com", "namespace": "alice", "action": "manage"}
    assert (await (await admin.post("/api/policies/check", json=check)).json())["allowed"] is True
