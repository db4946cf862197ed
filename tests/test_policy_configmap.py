"""The ConfigMap policy store against the fake API server, through the official client: the API's
versions are the ConfigMap's resourceVersion, stale writes are 412, every replica follows the
ConfigMap, and a malformed edit leaves the last good policy in force."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway import keys
from gateway.authz.configmap import DATA_KEY, ConfigMapPolicyStore, own_namespace
from gateway.authz.rules import EMPTY_MARKER, PolicyDoc, Rule
from gateway.errors import PreconditionFailed
from tests.conftest import Client, own_namespace_rule, wait_until
from tests.fakes.kube_api import FakeKubeAPI, kube_client
from tests.fakes.upstream import FakeUpstream
from tests.test_audit_metrics import scrape
from tests.test_policies_api import signed_in

Factory = Callable[..., Any]
BOB_EDIT = {"subject": "user:bob@example.com", "namespace": "alice", "role": "edit"}
CAROL = Rule("user:carol@example.com", "alice", "view")
ALICE_OWNS = PolicyDoc.of_rules([own_namespace_rule("alice@example.com")])


@pytest.fixture
def gateways(
    kube_api: FakeKubeAPI,  # first, so that it stops after the gateways
    gateway_factory: Factory,
    routes_file: Callable[..., Path],
    upstream: FakeUpstream,
    tmp_path: Path,
) -> Factory:
    """The real gateway on the ConfigMap kubeflow/notebook-gateway-policies, signed in as alice
    (who owns namespace `alice`), with the fake notebook at /notebook/alice/nb1/."""
    kube_api.add_namespace("kubeflow")
    # alice owns namespace alice (as the memory and file stores of the other tests are seeded).
    policy = {"metadata": {"name": "notebook-gateway-policies"}, "data": {DATA_KEY: ALICE_OWNS.text}}
    kube_api.create("configmaps", policy, "kubeflow")
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")
    routes = routes_file({("alice", "nb1"): upstream.url})

    async def build(**settings: Any) -> Client:
        client: Client = await gateway_factory(
            routes_file=routes,
            policy_store="configmap",
            policy_namespace="kubeflow",
            kubeconfig=kubeconfig,
            policy_reload_interval_s=0.1,
            **settings,
        )
        return client

    return build


@pytest.fixture
async def store(kube_api: FakeKubeAPI, tmp_path: Path) -> AsyncIterator[ConfigMapPolicyStore]:
    async with kube_client(kube_api, tmp_path) as client:
        store = ConfigMapPolicyStore(client, "policies", "alice")
        await store.open()
        try:
            yield store
        finally:
            await store.close()


def policy_text(kube_api: FakeKubeAPI, namespace: str = "kubeflow", name: str = "notebook-gateway-policies") -> str:
    configmap = kube_api.get("configmaps", namespace, name)
    assert configmap is not None
    return str(configmap["data"][DATA_KEY])


def resource_version(
    kube_api: FakeKubeAPI, namespace: str = "kubeflow", name: str = "notebook-gateway-policies"
) -> str:
    configmap = kube_api.get("configmaps", namespace, name)
    assert configmap is not None
    return str(configmap["metadata"]["resourceVersion"])


async def granted_bob(gateways: Factory) -> tuple[Client, str]:
    """A gateway where alice granted BOB_EDIT, and the policy version that made."""
    gateway: Client = await gateways()
    assert (await gateway.post("/api/policies", json=BOB_EDIT)).status == 200
    return gateway, gateway.app[keys.POLICIES].authorizer.version


def edit_policy(kube_api: FakeKubeAPI, text: str) -> None:
    """Someone edits the policy ConfigMap by hand (kubectl edit)."""
    kube_api.patch("configmaps", "kubeflow", "notebook-gateway-policies", {"data": {DATA_KEY: text}})


async def test_grants_and_revokes_are_written_to_the_configmap_versioned_by_its_resource_version(
    gateways: Factory, kube_api: FakeKubeAPI
) -> None:
    gateway: Client = await gateways()
    granted = await gateway.post("/api/policies", json=BOB_EDIT)
    assert granted.status == 200
    assert granted.headers["ETag"] == f'"{resource_version(kube_api)}"'
    assert "p, user:bob@example.com, alice, *, edit, allow" in policy_text(kube_api)
    assert (await gateway.delete("/api/policies", json=BOB_EDIT)).status == 200
    assert "bob@example.com" not in policy_text(kube_api)
    listed = await gateway.get("/api/policies", params={"namespace": "alice"})
    assert (await listed.json())["version"] == resource_version(kube_api)


async def test_a_write_with_a_stale_version_is_refused_with_412(gateways: Factory, kube_api: FakeKubeAPI) -> None:
    gateway: Client = await gateways()
    version = (await gateway.get("/api/policies", params={"namespace": "alice"})).headers["ETag"]
    text = policy_text(kube_api) + "p, group:ops, alice, *, view, allow\n"  # someone uses kubectl meanwhile
    kube_api.patch("configmaps", "kubeflow", "notebook-gateway-policies", {"data": {DATA_KEY: text}})
    stale = await gateway.post("/api/policies", json=BOB_EDIT, headers={"If-Match": version})
    assert stale.status == 412
    assert (await stale.json())["error"] == "version_mismatch"
    assert "bob@example.com" not in policy_text(kube_api)


async def test_the_api_servers_409_on_a_racing_write_is_412_or_a_retry(
    store: ConfigMapPolicyStore, kube_api: FakeKubeAPI
) -> None:
    def racing(doc: PolicyDoc) -> PolicyDoc:
        """Another replica writes between our read and our write (once)."""
        if CAROL not in doc:
            text = doc.with_rule(CAROL).text
            kube_api.patch("configmaps", "alice", "policies", {"data": {DATA_KEY: text}})
        return doc.with_rule(Rule("user:bob@example.com", "alice", "edit"))

    version = (await store.load()).version
    with pytest.raises(PreconditionFailed):
        await store.update(racing, if_match=version)
    _, after = await store.update(racing)  # no If-Match: read again and apply the edit to the new version
    assert CAROL in after and Rule("user:bob@example.com", "alice", "edit") in after
    assert after.version == resource_version(kube_api, "alice", "policies")


async def test_two_gateways_on_one_configmap_see_each_others_changes_within_a_second(gateways: Factory) -> None:
    one: Client = await gateways()
    two: Client = await gateways()

    async def bob_listed_by_two() -> bool:
        listed = await (await two.get("/api/policies", params={"namespace": "alice"})).json()
        return "user:bob@example.com" in [rule["subject"] for rule in listed["rules"]]

    assert (await one.post("/api/policies", json=BOB_EDIT)).status == 200
    await wait_until(bob_listed_by_two, timeout_s=1.0)
    assert (await two.delete("/api/policies", json=BOB_EDIT)).status == 200
    bob = "user:bob@example.com"
    await wait_until(lambda: not one.app[keys.POLICIES].authorizer.snapshot.by_subject.get(bob), timeout_s=1.0)


async def test_a_malformed_edit_keeps_the_last_good_policy_and_says_why(
    gateways: Factory, kube_api: FakeKubeAPI, caplog: pytest.LogCaptureFixture
) -> None:
    gateway, good = await granted_bob(gateways)
    with caplog.at_level(logging.ERROR, logger="gateway.authz.manager"):
        edit_policy(kube_api, policy_text(kube_api) + "p, user:eve, alice, *, superuser, allow\n")
        await wait_until(lambda: "rejected" in caplog.text)
    assert "configmap kubeflow/notebook-gateway-policies rejected" in caplog.text and "role must be" in caplog.text
    assert gateway.app[keys.POLICIES].authorizer.version == good
    assert (await gateway.get("/notebook/alice/nb1/echo")).status == 200  # alice is still admin there
    refused = await gateway.post("/api/policies", json={**BOB_EDIT, "role": "view"})
    assert refused.status == 409 and "malformed" in (await refused.json())["message"]


async def test_a_missing_configmap_is_created_with_the_header_only(
    store: ConfigMapPolicyStore, kube_api: FakeKubeAPI
) -> None:
    doc = await store.load()
    assert doc.rules == () and doc.version == resource_version(kube_api, "alice", "policies")
    assert policy_text(kube_api, "alice", "policies").startswith("# Notebook Gateway policies")


async def test_the_namespace_defaults_to_the_pods_own(tmp_path: Path) -> None:
    assert own_namespace(tmp_path / "absent") == "kubeflow"
    (tmp_path / "namespace").write_text("team-gw\n")
    assert own_namespace(tmp_path / "namespace") == "team-gw"


async def test_an_emptied_configmap_key_keeps_the_last_good_policy_and_is_reported(
    gateways: Factory, kube_api: FakeKubeAPI, caplog: pytest.LogCaptureFixture
) -> None:
    gateway, good = await granted_bob(gateways)
    edit_policy(kube_api, "")
    manager = gateway.app[keys.POLICIES]
    with caplog.at_level(logging.INFO, logger="gateway.authz.manager"):
        await wait_until(lambda: "rejected" in caplog.text or "policy reloaded" in caplog.text)
    assert manager.authorizer.version == good
    assert (await gateway.get("/notebook/alice/nb1/echo")).status == 200  # alice keeps her namespace
    ready = await (await gateway.get("/readyz")).json()
    assert ready["ready"] and "holds no rules" in ready["degraded"]["policy"]
    assert "notebook_gateway_policy_source_refused 1.0" in await (await gateway.get("/metrics")).text()
    edit_policy(kube_api, f"{EMPTY_MARKER}\n")
    await wait_until(lambda: gateway.app[keys.POLICIES].problem is None)
    assert (await gateway.get("/notebook/alice/nb1/echo")).status == 403


async def test_one_namespace_admin_cannot_fill_the_shared_policies(gateways: Factory, kube_api: FakeKubeAPI) -> None:
    root = "root@example.com"
    alice: Client = await gateways(namespace_rule_limit=3, bootstrap_admins=(root,))  # alice: admin of alice
    for user in ("bob", "carol"):
        granted = await alice.post("/api/policies", json={**BOB_EDIT, "subject": f"user:{user}@example.com"})
        assert granted.status == 200, await granted.text()
    refused = await alice.post("/api/policies", json={**BOB_EDIT, "subject": "user:dave@example.com"})
    answer = await refused.json()
    assert (refused.status, answer["error"], answer["field"]) == (409, "rule_limit_reached", "namespace")
    assert "3 rules" in answer["message"]
    assert (await alice.post("/api/policies", json=BOB_EDIT)).status == 200  # granting a held rule again is fine
    samples = await scrape(alice)
    assert samples[("notebook_gateway_policy_rule_limit_refusals_total", ())] == 1
    async with signed_in(alice, root) as admin:  # a cluster-admin's grants take no limit
        async with admin.post("/api/policies", json={**BOB_EDIT, "subject": "user:dave@example.com"}) as resp:
            assert resp.status == 200, await resp.text()
    assert "user:dave@example.com" in policy_text(kube_api, "kubeflow", "notebook-gateway-policies")
