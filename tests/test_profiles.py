"""gateway/profiles.py against the fake API server: what a profile is made of, idempotence, drift
repair, what its service accounts may do (SubjectAccessReview), and Kubeflow mode."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from gateway.backends.kube_client import KubeClient
from gateway.errors import BadRequest, Conflict
from gateway.profiles import Mode, Profile, Provisioner, parse_profile
from tests.fakes.kube_api import FakeKubeAPI

from .conftest import wait_until

ROLES_FILE = Path(__file__).parents[1] / "deploy" / "base" / "notebook-roles.yaml"
QUOTA = {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "2", "persistentvolumeclaims": "10"}
TEAM = Profile("team-a", "user:alice@example.com", parse_profile({"name": "x", "owner": "a@b", "quota": QUOTA}).quota)
# (API group, resource) of each thing a notebook's `kubectl create -f` must be able to make.
JOB_KINDS = [("", "pods"), ("apps", "deployments"), ("", "services"), ("batch", "jobs")]
JOB_KINDS += [("kubeflow.org", "tfjobs"), ("kubeflow.org", "pytorchjobs")]


async def provisioner_for(kube_api: FakeKubeAPI, tmp_path: Path, mode: Mode = "gateway") -> AsyncIterator[Provisioner]:
    client = await KubeClient.connect(kubeconfig=kube_api.write_kubeconfig(tmp_path / "kubeconfig"))
    try:
        yield Provisioner(client, mode=mode, gateway_namespace="notebook-gateway")
    finally:
        await client.close()


@pytest.fixture
async def provisioner(kube_api: FakeKubeAPI, tmp_path: Path) -> AsyncIterator[Provisioner]:
    async for provisioner in provisioner_for(kube_api, tmp_path):
        yield provisioner


@pytest.fixture
async def kubeflow(kube_api: FakeKubeAPI, tmp_path: Path) -> AsyncIterator[Provisioner]:
    async for provisioner in provisioner_for(kube_api, tmp_path, "kubeflow"):
        yield provisioner


def names(kube_api: FakeKubeAPI, plural: str, namespace: str) -> list[str]:
    return [obj["metadata"]["name"] for obj in kube_api.objects(plural, namespace)]


async def may(kube_api: FakeKubeAPI, account: str, namespace: str, group: str, resource: str) -> bool:
    """Whether `account` (in team-a) may create `resource` in `namespace`, asked over HTTP."""
    attributes = {"namespace": namespace, "verb": "create", "group": group, "resource": resource}
    review = {"spec": {"user": f"system:serviceaccount:team-a:{account}", "resourceAttributes": attributes}}
    headers = {"Authorization": f"Bearer {kube_api.token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{kube_api.url}/apis/authorization.k8s.io/v1/subjectaccessreviews", json=review) as r:
            allowed: bool = (await r.json())["status"]["allowed"]
            return allowed


async def test_a_profile_is_a_namespace_with_accounts_bindings_quota_and_network_policy(
    provisioner: Provisioner, kube_api: FakeKubeAPI
) -> None:
    await provisioner.create(TEAM)
    namespace = kube_api.get("namespaces", "", "team-a")
    assert namespace is not None
    assert namespace["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "notebook-gateway"
    assert "alice@example.com" in namespace["metadata"]["annotations"].values()
    assert names(kube_api, "serviceaccounts", "team-a") == ["default-editor", "default-viewer"]
    bindings = {rb["metadata"]["name"]: rb for rb in kube_api.objects("rolebindings", "team-a")}
    assert {name: rb["roleRef"]["name"] for name, rb in bindings.items()} == {
        "default-editor": "notebook-editor",
        "default-viewer": "notebook-viewer",
    }
    [quota] = kube_api.objects("resourcequotas", "team-a")
    assert quota["spec"]["hard"] == {
        "cpu": "8",
        "memory": "32Gi",
        "requests.nvidia.com/gpu": "2",
        "persistentvolumeclaims": "10",
    }
    [policy] = kube_api.objects("networkpolicies", "team-a")
    gateway_rule, own_namespace = policy["spec"]["ingress"]
    assert gateway_rule["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "notebook-gateway"}
    assert own_namespace == {"from": [{"podSelector": {}}]}


async def test_creating_a_profile_twice_changes_nothing(provisioner: Provisioner, kube_api: FakeKubeAPI) -> None:
    await provisioner.create(TEAM)
    revision = kube_api.revision
    await provisioner.create(TEAM)
    assert kube_api.revision == revision
    assert await provisioner.ensure("team-a") == []


async def test_a_namespace_the_gateway_did_not_make_is_refused_and_left_alone(
    provisioner: Provisioner, kube_api: FakeKubeAPI
) -> None:
    kube_api.add_namespace("team-a")
    with pytest.raises(Conflict, match="not made by the gateway"):
        await provisioner.create(TEAM)
    assert kube_api.objects("serviceaccounts", "team-a") == []
    with pytest.raises(Conflict):
        await provisioner.delete("team-a")
    assert kube_api.get("namespaces", "", "team-a") is not None


async def test_a_profile_of_another_owner_is_a_conflict(provisioner: Provisioner) -> None:
    await provisioner.create(TEAM)
    with pytest.raises(Conflict, match="owned by alice@example.com"):
        await provisioner.create(Profile("team-a", "user:bob@example.com"))


async def test_deleted_role_bindings_and_network_policy_come_back(
    provisioner: Provisioner, kube_api: FakeKubeAPI
) -> None:
    await provisioner.create(TEAM)
    kube_api.delete("rolebindings", "team-a", "default-editor")
    kube_api.delete("networkpolicies", "team-a", "notebook-ingress")
    repaired = await provisioner.reconcile_once()
    assert repaired == {"team-a": ["rolebinding/default-editor", "networkpolicy/notebook-ingress"]}
    assert names(kube_api, "rolebindings", "team-a") == ["default-editor", "default-viewer"]
    assert await provisioner.reconcile_once() == {}


async def test_the_reconcile_loop_repairs_a_deletion_as_its_watch_sees_it(
    provisioner: Provisioner, kube_api: FakeKubeAPI
) -> None:
    await provisioner.create(TEAM)
    task = asyncio.create_task(provisioner.reconcile(interval_s=3600))  # no relist during the test
    try:
        await wait_until(lambda: all(watch.synced for watch in provisioner.watches))
        kube_api.delete("rolebindings", "team-a", "default-viewer")
        await wait_until(lambda: kube_api.get("rolebindings", "team-a", "default-viewer") is not None)
        kube_api.delete("networkpolicies", "team-a", "notebook-ingress")
        await wait_until(lambda: kube_api.get("networkpolicies", "team-a", "notebook-ingress") is not None)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_deleting_a_profile_deletes_its_namespace(provisioner: Provisioner, kube_api: FakeKubeAPI) -> None:
    await provisioner.create(TEAM)
    await provisioner.delete("team-a")
    assert kube_api.get("namespaces", "", "team-a") is None


@pytest.mark.parametrize(("group", "resource"), JOB_KINDS)
async def test_default_editor_may_create_jobs_in_its_namespace_only(
    provisioner: Provisioner, kube_api: FakeKubeAPI, group: str, resource: str
) -> None:
    for role in yaml.safe_load_all(ROLES_FILE.read_text()):
        kube_api.create("clusterroles", role)
    await provisioner.create(TEAM)
    await provisioner.create(Profile("team-b", "user:bob@example.com"))
    assert await may(kube_api, "default-editor", "team-a", group, resource)
    assert not await may(kube_api, "default-editor", "team-b", group, resource)
    assert not await may(kube_api, "default-editor", "alice", group, resource)
    assert not await may(kube_api, "default-viewer", "team-a", group, resource)


async def test_kubeflow_mode_creates_a_valid_profile_and_nothing_else(
    kubeflow: Provisioner, kube_api: FakeKubeAPI
) -> None:
    before = {plural: kube_api.objects(plural) for plural in ("namespaces", "rolebindings", "serviceaccounts")}
    await kubeflow.create(TEAM)
    await kubeflow.create(TEAM)  # again: the same profile, no error
    profile = kube_api.get("profiles", "", "team-a")
    assert profile is not None
    assert profile["spec"]["owner"] == {"kind": "User", "name": "alice@example.com"}
    assert profile["spec"]["resourceQuotaSpec"]["hard"]["cpu"] == "8"
    assert {plural: kube_api.objects(plural) for plural in before} == before
    await kubeflow.delete("team-a")
    assert kube_api.get("profiles", "", "team-a") is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Team_A", "owner": "a@example.com"}, "name"),
        ({"name": "team-a", "owner": "group:admins"}, "owner"),
        ({"name": "team-a", "owner": "alice"}, "owner"),
        ({"name": "team-a", "owner": "a@example.com", "quota": {"cpu": "lots"}}, "quota.cpu"),
        ({"name": "team-a", "owner": "a@example.com", "quota": {"cpu": "-1"}}, "quota.cpu"),
        ({"name": "team-a", "owner": "a@example.com", "quota": {"disks": "1"}}, "quota.disks"),
    ],
)
def test_bad_profiles_are_refused_with_the_field_at_fault(body: dict[str, object], field: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_profile(body)
    assert refused.value.field == field
