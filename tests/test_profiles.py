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

from gateway.errors import BadRequest, Conflict
from gateway.profiles import Mode, Profile, Provisioner, parse_profile
from tests.fakes.kube_api import FakeKubeAPI, kube_client, service_account_identity

from .conftest import wait_until

ROLES_FILE = Path(__file__).parents[1] / "deploy" / "base" / "notebook-roles.yaml"
QUOTA = {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "2", "persistentvolumeclaims": "10"}
TEAM = Profile("team-a", "user:alice@example.com", parse_profile({"name": "x", "owner": "a@b", "quota": QUOTA}).quota)
# (API group, resource) of each thing a notebook's `kubectl create -f` must be able to make.
JOB_KINDS = [("", "pods"), ("apps", "deployments"), ("", "services"), ("batch", "jobs")]
JOB_KINDS += [("kubeflow.org", "tfjobs"), ("kubeflow.org", "pytorchjobs")]


async def provisioner_for(kube_api: FakeKubeAPI, tmp_path: Path, mode: Mode = "gateway") -> AsyncIterator[Provisioner]:
    async with kube_client(kube_api, tmp_path) as client:
        yield Provisioner(client, mode=mode, gateway_namespace="notebook-gateway")


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
    """Whether `account` (in team-a) may create `resource` in `namespace`, asked over HTTP as the API server
    asks about a request with the account's token: its user name and its groups (a grant to every service
    account of team-a, or of the cluster, counts as much as one to the account by name)."""
    attributes = {"namespace": namespace, "verb": "create", "group": group, "resource": resource}
    user, groups = service_account_identity("team-a", account)
    review = {"spec": {"user": user, "groups": groups, "resourceAttributes": attributes}}
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
        "limits.cpu": "8",  # a quota on requests bounds the limits too
        "limits.memory": "32Gi",
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


async def test_after_a_failed_pass_the_loop_tries_again_soon_not_a_whole_interval_later(
    provisioner: Provisioner, kube_api: FakeKubeAPI, caplog: pytest.LogCaptureFixture
) -> None:
    await provisioner.create(TEAM)
    await kube_api.go_down("503")
    kube_api.delete("rolebindings", "team-a", "default-viewer")  # while the loop cannot see it: no watch event
    task = asyncio.create_task(provisioner.reconcile(interval_s=3600))
    try:
        await wait_until(lambda: "reconciling profiles failed" in caplog.text)
        await kube_api.come_back()
        # The next pass comes after a short jittered backoff (from 1 s), not after the interval.
        await wait_until(lambda: kube_api.get("rolebindings", "team-a", "default-viewer") is not None, timeout_s=15)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_hand_edits_to_the_quota_and_a_role_binding_are_put_back(
    provisioner: Provisioner, kube_api: FakeKubeAPI
) -> None:
    await provisioner.create(TEAM)
    kube_api.patch("resourcequotas", "team-a", "notebook-quota", {"spec": {"hard": {"cpu": "64", "pods": "5"}}})
    intruder = {"kind": "User", "name": "mallory@example.com", "apiGroup": "rbac.authorization.k8s.io"}
    kube_api.patch("rolebindings", "team-a", "default-editor", {"subjects": [intruder]})
    # Labels and annotations someone else adds are theirs: the loop leaves them.
    kube_api.patch("rolebindings", "team-a", "default-viewer", {"metadata": {"labels": {"team": "a"}}})
    assert await provisioner.reconcile_once() == {
        "team-a": ["rolebinding/default-editor", "resourcequota/notebook-quota"]
    }
    quota = kube_api.get("resourcequotas", "team-a", "notebook-quota")
    assert quota is not None and quota["spec"]["hard"] == TEAM.quota  # 8 CPUs again, and no pods limit
    editor = kube_api.get("rolebindings", "team-a", "default-editor")
    assert editor is not None
    assert editor["subjects"] == [{"kind": "ServiceAccount", "name": "default-editor", "namespace": "team-a"}]
    viewer = kube_api.get("rolebindings", "team-a", "default-viewer")
    assert viewer is not None and viewer["metadata"]["labels"]["team"] == "a"
    revision = kube_api.revision
    assert await provisioner.reconcile_once() == {}  # in shape now: nothing is written
    assert kube_api.revision == revision


async def test_a_quota_written_in_other_units_is_not_drift(provisioner: Provisioner, kube_api: FakeKubeAPI) -> None:
    await provisioner.create(TEAM)
    # The API server writes quantities back canonically (8000m may come back as 8): no fight over that.
    kube_api.patch(
        "resourcequotas", "team-a", "notebook-quota", {"spec": {"hard": {"cpu": "8000m", "memory": "32768Mi"}}}
    )
    assert await provisioner.reconcile_once() == {}


async def test_a_changed_role_ref_is_deleted_and_made_again_keeping_others_labels(
    provisioner: Provisioner, kube_api: FakeKubeAPI
) -> None:
    await provisioner.create(TEAM)
    binding = kube_api.get("rolebindings", "team-a", "default-viewer")
    assert binding is not None
    kube_api.delete("rolebindings", "team-a", "default-viewer")  # roleRef is immutable: this is how it changes
    binding["metadata"] = {"name": "default-viewer", "labels": {"team": "a"}, "annotations": {"note": "kept"}}
    kube_api.create("rolebindings", {**binding, "roleRef": {**binding["roleRef"], "name": "notebook-editor"}}, "team-a")
    assert await provisioner.reconcile_once() == {"team-a": ["rolebinding/default-viewer"]}
    restored = kube_api.get("rolebindings", "team-a", "default-viewer")
    assert restored is not None
    assert restored["roleRef"]["name"] == "notebook-viewer"
    assert restored["metadata"]["labels"] == {"team": "a", "app.kubernetes.io/managed-by": "notebook-gateway"}
    assert restored["metadata"]["annotations"] == {"note": "kept"}


async def test_a_changed_network_policy_and_deleted_service_accounts_and_quota_come_back(
    provisioner: Provisioner, kube_api: FakeKubeAPI
) -> None:
    await provisioner.create(TEAM)
    wanted = kube_api.get("networkpolicies", "team-a", "notebook-ingress")
    assert wanted is not None
    kube_api.patch("networkpolicies", "team-a", "notebook-ingress", {"spec": {"ingress": [{}], "egress": [{}]}})
    kube_api.delete("serviceaccounts", "team-a", "default-viewer")
    kube_api.delete("resourcequotas", "team-a", "notebook-quota")
    assert await provisioner.reconcile_once() == {
        "team-a": ["serviceaccount/default-viewer", "networkpolicy/notebook-ingress", "resourcequota/notebook-quota"]
    }
    policy = kube_api.get("networkpolicies", "team-a", "notebook-ingress")
    assert policy is not None and policy["spec"] == wanted["spec"]
    assert names(kube_api, "serviceaccounts", "team-a") == ["default-editor", "default-viewer"]
    assert names(kube_api, "resourcequotas", "team-a") == ["notebook-quota"]


async def test_a_profile_made_without_a_quota_keeps_the_quota_an_admin_added(
    provisioner: Provisioner, kube_api: FakeKubeAPI
) -> None:
    await provisioner.create(Profile("team-b", "user:bob@example.com"))
    kube_api.create(
        "resourcequotas", {"metadata": {"name": "notebook-quota"}, "spec": {"hard": {"cpu": "2"}}}, "team-b"
    )
    assert await provisioner.reconcile_once() == {}
    assert kube_api.get("resourcequotas", "team-b", "notebook-quota")["spec"]["hard"] == {"cpu": "2"}  # type: ignore[index]


async def test_the_reconcile_loop_repairs_an_edit_as_its_watch_sees_it(
    provisioner: Provisioner, kube_api: FakeKubeAPI
) -> None:
    await provisioner.create(TEAM)
    task = asyncio.create_task(provisioner.reconcile(interval_s=3600))  # no relist during the test
    try:
        await wait_until(lambda: all(watch.synced for watch in provisioner.watches))
        kube_api.patch("resourcequotas", "team-a", "notebook-quota", {"spec": {"hard": {"cpu": "64"}}})
        await wait_until(lambda: quota_cpu(kube_api) == "8")
        intruder = {"kind": "User", "name": "mallory@example.com", "apiGroup": "rbac.authorization.k8s.io"}
        kube_api.patch("rolebindings", "team-a", "default-viewer", {"subjects": [intruder]})
        await wait_until(lambda: viewer_subjects(kube_api) == ["default-viewer"])
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def quota_cpu(kube_api: FakeKubeAPI) -> str | None:
    quota = kube_api.get("resourcequotas", "team-a", "notebook-quota")
    return None if quota is None else quota["spec"]["hard"].get("cpu")


def viewer_subjects(kube_api: FakeKubeAPI) -> list[str]:
    binding = kube_api.get("rolebindings", "team-a", "default-viewer")
    return [] if binding is None else [subject["name"] for subject in binding["subjects"]]


async def test_deleting_a_profile_deletes_its_namespace(provisioner: Provisioner, kube_api: FakeKubeAPI) -> None:
    await provisioner.create(TEAM)
    await provisioner.delete("team-a")
    assert kube_api.get("namespaces", "", "team-a") is None


async def test_a_profile_still_being_deleted_is_left_to_go(provisioner: Provisioner, kube_api: FakeKubeAPI) -> None:
    await provisioner.create(TEAM)
    kube_api.hold_namespaces = True  # Terminating, as a namespace is while the controller empties it
    await provisioner.delete("team-a")
    kube_api.delete("rolebindings", "team-a", "default-editor")  # the namespace controller at work
    assert await provisioner.reconcile_once() == {}  # nothing is put back in a namespace on its way out
    with pytest.raises(Conflict, match="still being deleted"):
        await provisioner.create(TEAM)
    await provisioner.delete("team-a")  # again: it is going already, which is what was asked
    kube_api.collect_namespaces()
    assert kube_api.get("namespaces", "", "team-a") is None
    await provisioner.create(TEAM)  # once it is gone, the name is free again
    assert names(kube_api, "rolebindings", "team-a") == ["default-editor", "default-viewer"]


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


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"name": "team-a"}, "owner", "owner: is required."),
        (
            {"name": "team-a", "owner": "a@example.com", "mountServiceAccountToken": "yes"},
            "mountServiceAccountToken",
            "true or false",
        ),
        ({"name": "team-a", "owner": "a@example.com", "quota": 4}, "quota", "must be an object"),
        ({"name": "team-a", "owner": "a@example.com", "quota": {"cpu": True}}, "quota.cpu", "must be a string"),
        (
            {"name": "team-a", "owner": "a@example.com", "quota": {"nvidia.com/gpu": "x"}},
            "quota.nvidia.com/gpu",
            "quantity",
        ),
        (
            {"name": "team-a", "owner": "a@example.com", "admins": ["b@example.com"]},
            "admins",
            "Unknown field(s): admins.",
        ),
        (["team-a"], "name", "must be a JSON object"),
    ],
)
def test_the_profile_model_names_the_field_and_says_what_is_wrong(body: object, field: str, words: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_profile(body)
    assert refused.value.field == field and words in refused.value.message


def test_a_quota_may_be_numbers_and_its_requests_bound_the_limits() -> None:
    profile = parse_profile({"name": "team-a", "owner": "a@example.com", "quota": {"cpu": 4, "memory": "8Gi"}})
    assert dict(profile.quota) == {"cpu": "4", "limits.cpu": "4", "memory": "8Gi", "limits.memory": "8Gi"}


def pod(name: str, **spec: object) -> dict[str, object]:
    container = {"name": "main", "image": "busybox"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": [container], **spec}}


async def create_as(kube_api: FakeKubeAPI, account: str, namespace: str, body: dict[str, object]) -> tuple[int, str]:
    """POST a Pod as `account` of team-a (its RBAC and admission apply); the status and message."""
    token = kube_api.add_identity(*service_account_identity("team-a", account))
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        async with http.post(f"{kube_api.url}/api/v1/namespaces/{namespace}/pods", json=body) as response:
            return response.status, str((await response.json()).get("message", ""))


@pytest.fixture
def notebook_roles(kube_api: FakeKubeAPI) -> None:
    for role in yaml.safe_load_all(ROLES_FILE.read_text()):
        kube_api.create("clusterroles", role)


@pytest.mark.usefixtures("notebook_roles")
async def test_a_notebook_terminal_cannot_start_a_privileged_pod_in_its_profile(
    provisioner: Provisioner, kube_api: FakeKubeAPI
) -> None:
    await provisioner.create(TEAM)
    labels = kube_api.get("namespaces", "", "team-a")["metadata"]["labels"]  # type: ignore[index]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    root_of_the_node = pod("escape", volumes=[{"name": "root", "hostPath": {"path": "/"}}])
    root_of_the_node["spec"]["containers"][0]["securityContext"] = {"privileged": True}  # type: ignore[index]
    status, message = await create_as(kube_api, "default-editor", "team-a", root_of_the_node)
    assert status == 403 and "privileged" in message and "hostPath" in message
    assert (await create_as(kube_api, "default-editor", "team-a", pod("job")))[0] == 201  # ordinary pods run


async def test_the_pod_security_level_is_a_setting(kube_api: FakeKubeAPI, tmp_path: Path) -> None:
    async for provisioner in provisioner_for(kube_api, tmp_path):
        provisioner.pod_security = "restricted"
        await provisioner.create(TEAM)
    labels = kube_api.get("namespaces", "", "team-a")["metadata"]["labels"]  # type: ignore[index]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.usefixtures("notebook_roles")
async def test_a_quota_of_one_cpu_bounds_limits_and_pods_without_limits_get_defaults(
    provisioner: Provisioner, kube_api: FakeKubeAPI
) -> None:
    await provisioner.create(Profile("team-a", "user:alice@example.com", parse_profile(ONE_CPU).quota))
    greedy = pod("greedy")
    greedy["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "100m"}, "limits": {"cpu": "512"}}  # type: ignore[index]
    status, message = await create_as(kube_api, "default-editor", "team-a", greedy)
    assert status == 403 and "exceeded quota" in message and "limits.cpu" in message
    status, _ = await create_as(kube_api, "default-editor", "team-a", pod("plain"))  # no resources of its own
    assert status == 201
    [plain] = kube_api.objects("pods", "team-a")
    assert plain["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}


async def test_a_deleted_limit_range_comes_back(provisioner: Provisioner, kube_api: FakeKubeAPI) -> None:
    await provisioner.create(TEAM)
    kube_api.delete("limitranges", "team-a", "notebook-limits")
    assert await provisioner.reconcile_once() == {"team-a": ["limitrange/notebook-limits"]}


ONE_CPU = {"name": "team-a", "owner": "alice@example.com", "quota": {"cpu": "1", "memory": "4Gi"}}


async def test_service_account_tokens_are_mounted_only_when_the_profile_asks(
    provisioner: Provisioner, kube_api: FakeKubeAPI
) -> None:
    await provisioner.create(TEAM)
    await provisioner.create(parse_profile({"name": "team-b", "owner": "b@x.org", "mountServiceAccountToken": True}))
    for namespace, mounted in (("team-a", False), ("team-b", True)):
        for account in ("default-editor", "default-viewer"):
            found = kube_api.get("serviceaccounts", namespace, account)
            assert found is not None and found["automountServiceAccountToken"] is mounted, (namespace, account)
    kube_api.delete("serviceaccounts", "team-b", "default-editor")  # put back as the profile asked
    await provisioner.reconcile_once()
    assert kube_api.get("serviceaccounts", "team-b", "default-editor")["automountServiceAccountToken"] is True  # type: ignore[index]
    listed = {profile.name: profile.mount_token for profile in await provisioner.list_profiles()}
    assert listed == {"team-a": False, "team-b": True}


async def test_kubeflow_mode_cannot_unmount_the_token(kubeflow: Provisioner) -> None:
    with pytest.raises(BadRequest, match="always mounts") as caught:
        await kubeflow.create(parse_profile({"name": "team-a", "owner": "a@x.org", "mountServiceAccountToken": False}))
    assert caught.value.field == "mountServiceAccountToken"
