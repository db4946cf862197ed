"""The fake Kubernetes API server, checked through the official client (kubernetes_asyncio) so that the
backend's tests rest on a fake that behaves as the client expects a real server to."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.watch import Watch

from tests.fakes.kube_api import FakeKubeAPI, service_account_identity

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "notebooks"
# The generated client sends a dict as a JSON Patch unless told (its stubs do not list `_content_type`).
MERGE: dict[str, Any] = {"_content_type": "application/merge-patch+json"}


def notebook(name: str, image: str | None = "jupyter/base:1", **labels: str) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, **({"image": image} if image else {})}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Notebook",
        "metadata": {"name": name, "labels": labels},
        "spec": {"template": {"spec": {"containers": [container]}}},
    }


@pytest.fixture
async def api(kube_api: FakeKubeAPI, tmp_path: Path) -> AsyncIterator[client.CustomObjectsApi]:
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(kube_api.write_kubeconfig(tmp_path / "kubeconfig")), client_configuration=configuration
    )
    async with client.ApiClient(configuration) as api_client:
        yield client.CustomObjectsApi(api_client)


@pytest.fixture
async def api_client(kube_api: FakeKubeAPI, tmp_path: Path) -> AsyncIterator[client.ApiClient]:
    configuration = client.Configuration()
    await config.load_kube_config(str(kube_api.write_kubeconfig(tmp_path / "k")), client_configuration=configuration)
    async with client.ApiClient(configuration) as api_client:
        yield api_client


def text(exc: ApiException) -> str:
    """The Status body the server sent with an error."""
    return exc.body.decode() if isinstance(exc.body, bytes) else str(exc.body)


async def create(api: client.CustomObjectsApi, body: dict[str, Any], version: str = VERSION) -> dict[str, Any]:
    result: dict[str, Any] = await api.create_namespaced_custom_object(GROUP, version, "alice", PLURAL, body)
    return result


async def test_list_then_watch_sees_changes_after_the_lists_version(api: client.CustomObjectsApi) -> None:
    await create(api, notebook("nb1"))
    listed = await api.list_namespaced_custom_object(GROUP, VERSION, "alice", PLURAL)
    assert [item["metadata"]["name"] for item in listed["items"]] == ["nb1"]
    await create(api, notebook("nb2"))
    await api.delete_namespaced_custom_object(GROUP, VERSION, "alice", PLURAL, "nb1")
    seen = []
    async with Watch() as watch:
        stream = watch.stream(
            api.list_namespaced_custom_object, GROUP, VERSION, "alice", PLURAL,
            resource_version=listed["metadata"]["resourceVersion"], timeout_seconds=1,
        )  # fmt: skip
        async for event in stream:
            seen.append((event["type"], event["object"]["metadata"]["name"]))
    assert seen == [("ADDED", "nb2"), ("DELETED", "nb1")]


async def test_a_watch_from_a_compacted_version_gets_410_expired(
    api: client.CustomObjectsApi, kube_api: FakeKubeAPI
) -> None:
    created = await create(api, notebook("nb1"))
    await api.patch_namespaced_custom_object(
        GROUP, VERSION, "alice", PLURAL, "nb1", {"metadata": {"labels": {"x": "1"}}},
        **MERGE,
    )  # fmt: skip
    kube_api.compact()
    async with Watch() as watch:
        stream = watch.stream(
            api.list_namespaced_custom_object, GROUP, VERSION, "alice", PLURAL,
            resource_version=created["metadata"]["resourceVersion"], timeout_seconds=1,
        )  # fmt: skip
        with pytest.raises(ApiException) as caught:
            await stream.next()
    assert caught.value.status == 410
    assert "Expired" in str(caught.value.reason)


async def test_bookmarks_carry_the_latest_resource_version(api: client.CustomObjectsApi, kube_api: FakeKubeAPI) -> None:
    kube_api.bookmark_interval_s = 0.1
    async with Watch() as watch:
        stream = watch.stream(
            api.list_cluster_custom_object, GROUP, VERSION, PLURAL,
            resource_version=str(kube_api.revision), allow_watch_bookmarks=True, timeout_seconds=5,
        )  # fmt: skip
        event = await stream.next()
    assert event["type"] == "BOOKMARK"
    assert event["raw_object"]["metadata"]["resourceVersion"] == str(kube_api.revision)


async def test_creating_twice_is_409_already_exists(api: client.CustomObjectsApi) -> None:
    await create(api, notebook("nb1"))
    with pytest.raises(ApiException) as caught:
        await create(api, notebook("nb1"))
    assert caught.value.status == 409
    assert '"reason":"AlreadyExists"' in text(caught.value).replace(" ", "")


async def test_an_update_with_a_stale_resource_version_is_409_conflict(api: client.CustomObjectsApi) -> None:
    first = await create(api, notebook("nb1"))
    first["metadata"]["labels"] = {"x": "1"}
    await api.replace_namespaced_custom_object(GROUP, VERSION, "alice", PLURAL, "nb1", first)
    first["metadata"]["labels"] = {"x": "2"}  # still carries the version the first update replaced
    with pytest.raises(ApiException) as caught:
        await api.replace_namespaced_custom_object(GROUP, VERSION, "alice", PLURAL, "nb1", first)
    assert caught.value.status == 409
    assert "the object has been modified" in text(caught.value)


async def test_a_notebook_the_crd_schema_refuses_is_422_invalid(api: client.CustomObjectsApi) -> None:
    with pytest.raises(ApiException) as caught:
        await create(api, notebook("nb1", image=None))  # the validation patch makes image required
    assert caught.value.status == 422
    assert 'Notebook.kubeflow.org \\"nb1\\" is invalid: spec.template.spec.containers[0].image: Required value' in text(
        caught.value
    )


async def test_wrong_types_and_empty_containers_are_422(api: client.CustomObjectsApi) -> None:
    body = notebook("nb1")
    body["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": "http"}]
    with pytest.raises(ApiException) as caught:
        await create(api, body)
    assert "containerPort in body must be of type integer" in text(caught.value)
    body["spec"]["template"]["spec"]["containers"] = []
    with pytest.raises(ApiException) as caught:
        await create(api, body)
    assert "should have at least 1 items" in text(caught.value)


async def test_unknown_fields_are_pruned_with_a_warning(api: client.CustomObjectsApi, kube_api: FakeKubeAPI) -> None:
    body = notebook("nb1")
    body["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    created = await create(api, body)
    assert "imagePullPolicyy" not in created["spec"]["template"]["spec"]["containers"][0]
    assert kube_api.requests[-1].warnings == ("spec.template.spec.containers[0].imagePullPolicyy",)


async def test_status_is_written_only_through_its_subresource(api: client.CustomObjectsApi) -> None:
    body = notebook("nb1")
    body["status"] = {"readyReplicas": 1, "containerState": {}, "conditions": []}
    assert "status" not in await create(api, body)
    status = {"status": {"readyReplicas": 1, "containerState": {"running": {}}, "conditions": []}}
    patched = await api.patch_namespaced_custom_object_status(GROUP, VERSION, "alice", PLURAL, "nb1", status, **MERGE)
    assert patched["status"]["readyReplicas"] == 1
    with pytest.raises(ApiException) as caught:  # the status schema requires all three fields
        await api.patch_namespaced_custom_object_status(
            GROUP, VERSION, "alice", PLURAL, "nb1", {"status": {"conditions": None}},
            **MERGE,
        )  # fmt: skip
    assert caught.value.status == 422


async def test_merge_patch_null_removes_an_annotation(api: client.CustomObjectsApi) -> None:
    body = notebook("nb1")
    body["metadata"]["annotations"] = {"kubeflow-resource-stopped": "2024-01-01T00:00:00Z", "keep": "me"}
    await create(api, body)
    patch = {"metadata": {"annotations": {"kubeflow-resource-stopped": None}}}
    patched = await api.patch_namespaced_custom_object(GROUP, VERSION, "alice", PLURAL, "nb1", patch, **MERGE)
    assert patched["metadata"]["annotations"] == {"keep": "me"}


async def test_a_dict_sent_as_json_patch_is_refused_as_the_real_server_does(api: client.CustomObjectsApi) -> None:
    await create(api, notebook("nb1"))
    with pytest.raises(ApiException) as caught:  # the generated client's default content type for a dict
        await api.patch_namespaced_custom_object(GROUP, VERSION, "alice", PLURAL, "nb1", {"metadata": {}})
    assert caught.value.status == 400


async def test_strategic_merge_patch_updates_core_annotations(kube_api: FakeKubeAPI, tmp_path: Path) -> None:
    kube_api.create("configmaps", {"metadata": {"name": "policy", "annotations": {"a": "1"}}}, "alice")
    configuration = client.Configuration()
    await config.load_kube_config(str(kube_api.write_kubeconfig(tmp_path / "k")), client_configuration=configuration)
    async with client.ApiClient(configuration) as api_client:
        core = client.CoreV1Api(api_client)
        patched = await core.patch_namespaced_config_map("policy", "alice", {"metadata": {"annotations": {"b": "2"}}})
    assert patched.metadata.annotations == {"a": "1", "b": "2"}
    assert kube_api.requests[-1].content_type == "application/strategic-merge-patch+json"


async def test_label_selectors_filter_lists(api: client.CustomObjectsApi) -> None:
    await create(api, notebook("nb1", app="nb1", team="a"))
    await create(api, notebook("nb2", app="nb2", team="b"))
    await create(api, notebook("nb3", app="nb3"))
    for selector, names in [("team=a", ["nb1"]), ("team in (a,b),app!=nb2", ["nb1"]), ("!team", ["nb3"])]:
        listed = await api.list_namespaced_custom_object(GROUP, VERSION, "alice", PLURAL, label_selector=selector)
        assert [item["metadata"]["name"] for item in listed["items"]] == names


async def test_v1beta1_and_cluster_scoped_profiles_are_served(api: client.CustomObjectsApi) -> None:
    await create(api, {**notebook("nb1"), "apiVersion": "kubeflow.org/v1beta1"}, version="v1beta1")
    listed = await api.list_cluster_custom_object(GROUP, "v1", PLURAL)
    assert listed["items"][0]["apiVersion"] == "kubeflow.org/v1"
    profile: dict[str, Any] = {"apiVersion": "kubeflow.org/v1", "kind": "Profile", "metadata": {"name": "alice"}}
    await api.create_cluster_custom_object(
        GROUP, "v1", "profiles", {**profile, "spec": {"owner": {"kind": "User", "name": "alice@example.com"}}}
    )
    profile["metadata"] = {"name": "bob"}
    with pytest.raises(ApiException) as caught:  # owner.name is required
        await api.create_cluster_custom_object(
            GROUP, "v1", "profiles", {**profile, "spec": {"owner": {"kind": "User"}}}
        )
    assert caught.value.status == 422


async def test_a_missing_object_or_namespace_is_404(api: client.CustomObjectsApi) -> None:
    with pytest.raises(ApiException) as caught:
        await api.get_namespaced_custom_object(GROUP, VERSION, "alice", PLURAL, "nb1")
    assert caught.value.status == 404
    with pytest.raises(ApiException) as caught:
        await api.create_namespaced_custom_object(GROUP, VERSION, "nobody", PLURAL, notebook("nb1"))
    assert caught.value.status == 404
    assert 'namespaces \\"nobody\\" not found' in text(caught.value)


async def test_requests_without_the_token_are_401(kube_api: FakeKubeAPI, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{kube_api.url}/apis/{GROUP}/{VERSION}/{PLURAL}") as resp:
        assert resp.status == 401
        assert (await resp.json())["reason"] == "Unauthorized"


async def test_the_api_can_go_down_and_come_back(api: client.CustomObjectsApi, kube_api: FakeKubeAPI) -> None:
    await kube_api.go_down("refuse")
    with pytest.raises(aiohttp.ClientConnectionError):
        await api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    await kube_api.come_back()
    await kube_api.go_down("503")
    with pytest.raises(ApiException) as caught:
        await api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    assert caught.value.status == 503
    await kube_api.come_back()
    assert (await api.list_cluster_custom_object(GROUP, VERSION, PLURAL))["items"] == []


async def test_an_injected_failure_spares_the_dry_run(api: client.CustomObjectsApi, kube_api: FakeKubeAPI) -> None:
    kube_api.fail_next("POST", PLURAL, 400, "BadRequest", 'admission webhook "x" denied the request')
    await api.create_namespaced_custom_object(GROUP, VERSION, "alice", PLURAL, notebook("nb1"), dry_run="All")
    with pytest.raises(ApiException) as caught:
        await create(api, notebook("nb1"))
    assert "denied the request" in text(caught.value)
    assert kube_api.objects(PLURAL) == []


# -- RBAC: SubjectAccessReviews ------------------------------------------------------------------

RBAC = "rbac.authorization.k8s.io"
NOTEBOOKS = {"group": GROUP, "resource": PLURAL}


def rule(
    resources: list[str], verbs: list[str], group: str = "", names: list[str] | None = None
) -> client.V1PolicyRule:
    return client.V1PolicyRule(api_groups=[group], resources=resources, verbs=verbs, resource_names=names)


def cluster_role(name: str, *rules: client.V1PolicyRule, **labels: str) -> client.V1ClusterRole:
    return client.V1ClusterRole(metadata=client.V1ObjectMeta(name=name, labels=labels or None), rules=list(rules))


def subject(kind: str, name: str, namespace: str | None = None) -> client.RbacV1Subject:
    return client.RbacV1Subject(
        kind=kind, name=name, namespace=namespace, api_group=None if kind == "ServiceAccount" else RBAC
    )


def role_ref(role: str, kind: str = "ClusterRole") -> client.V1RoleRef:
    return client.V1RoleRef(api_group=RBAC, kind=kind, name=role)


def role_binding(name: str, role: str, who: client.RbacV1Subject, kind: str = "ClusterRole") -> client.V1RoleBinding:
    return client.V1RoleBinding(metadata=client.V1ObjectMeta(name=name), role_ref=role_ref(role, kind), subjects=[who])


def cluster_role_binding(
    name: str, role: str, who: client.RbacV1Subject, kind: str = "ClusterRole"
) -> client.V1ClusterRoleBinding:
    ref = role_ref(role, kind)
    return client.V1ClusterRoleBinding(metadata=client.V1ObjectMeta(name=name), role_ref=ref, subjects=[who])


async def review(
    api_client: client.ApiClient,
    user: str,
    groups: list[str] | None = None,
    *,
    resource: dict[str, str] | None = None,
    non_resource: dict[str, str] | None = None,
) -> client.V1SubjectAccessReviewStatus:
    """A SubjectAccessReview through the client, answered with its status (`allowed`, `reason`)."""
    attributes = None
    if resource is not None:
        attributes = client.V1ResourceAttributes(
            verb=resource.get("verb"),
            group=resource.get("group"),
            resource=resource.get("resource"),
            namespace=resource.get("namespace"),
            name=resource.get("name"),
        )
    non_resource_attributes = client.V1NonResourceAttributes(**non_resource) if non_resource is not None else None
    spec = client.V1SubjectAccessReviewSpec(
        user=user, groups=groups, resource_attributes=attributes, non_resource_attributes=non_resource_attributes
    )
    answer = await client.AuthorizationV1Api(api_client).create_subject_access_review(
        client.V1SubjectAccessReview(spec=spec)
    )
    status: client.V1SubjectAccessReviewStatus = answer.status
    return status


async def allowed(
    api_client: client.ApiClient, user: str, attributes: dict[str, str], groups: list[str] | None = None
) -> bool:
    return bool((await review(api_client, user, groups, resource=attributes)).allowed)


async def test_a_cluster_role_binding_grants_in_every_namespace_and_a_role_binding_in_its_own(
    api_client: client.ApiClient, kube_api: FakeKubeAPI
) -> None:
    kube_api.add_namespace("team-b")
    rbac = client.RbacAuthorizationV1Api(api_client)
    await rbac.create_cluster_role(cluster_role("notebook-reader", rule([PLURAL], ["get", "list"], GROUP)))
    await rbac.create_cluster_role_binding(
        cluster_role_binding("read-notebooks", "notebook-reader", subject("User", "bob"))
    )
    await rbac.create_namespaced_role_binding(
        "alice", role_binding("carol-reads", "notebook-reader", subject("User", "carol"))
    )
    for namespace in ("alice", "team-b", ""):  # "": across all namespaces
        answer = await review(api_client, "bob", resource={**NOTEBOOKS, "verb": "list", "namespace": namespace})
        assert answer.allowed, namespace
        assert (
            answer.reason
            == 'RBAC: allowed by ClusterRoleBinding "read-notebooks" of ClusterRole "notebook-reader" to User "bob"'
        )
    assert await allowed(api_client, "carol", {**NOTEBOOKS, "verb": "list", "namespace": "alice"})
    assert not await allowed(api_client, "carol", {**NOTEBOOKS, "verb": "list", "namespace": "team-b"})
    assert not await allowed(api_client, "carol", {**NOTEBOOKS, "verb": "list", "namespace": ""})
    assert not await allowed(api_client, "bob", {**NOTEBOOKS, "verb": "delete", "namespace": "alice"})


async def test_an_aggregated_cluster_role_holds_the_rules_of_the_roles_it_selects(api_client: client.ApiClient) -> None:
    rbac = client.RbacAuthorizationV1Api(api_client)
    label = {"rbac.example.com/aggregate-to-monitoring": "true"}
    monitoring = cluster_role("monitoring")
    monitoring.aggregation_rule = client.V1AggregationRule(
        cluster_role_selectors=[client.V1LabelSelector(match_labels=label)]
    )
    await rbac.create_cluster_role(monitoring)
    await rbac.create_cluster_role(cluster_role("monitoring-pods", rule(["pods"], ["get"]), **label))
    await rbac.create_cluster_role(cluster_role("monitoring-services", rule(["services"], ["list"]), **label))
    await rbac.create_cluster_role(cluster_role("secrets", rule(["secrets"], ["get"])))
    await rbac.create_namespaced_role_binding(
        "alice", role_binding("dave-monitors", "monitoring", subject("User", "dave"))
    )
    # As the aggregation controller does, the union is written into the aggregated role's rules.
    role = await rbac.read_cluster_role("monitoring")
    assert [(r.resources, r.verbs) for r in role.rules] == [(["pods"], ["get"]), (["services"], ["list"])]
    assert await allowed(api_client, "dave", {"verb": "get", "resource": "pods", "namespace": "alice"})
    assert await allowed(api_client, "dave", {"verb": "list", "resource": "services", "namespace": "alice"})
    assert not await allowed(api_client, "dave", {"verb": "get", "resource": "secrets", "namespace": "alice"})
    await rbac.delete_cluster_role("monitoring-services")  # a role that leaves takes its rules along
    assert not await allowed(api_client, "dave", {"verb": "list", "resource": "services", "namespace": "alice"})


async def test_group_subjects_match_the_groups_a_review_names(
    api_client: client.ApiClient, kube_api: FakeKubeAPI
) -> None:
    kube_api.add_namespace("team-b")
    rbac = client.RbacAuthorizationV1Api(api_client)
    await rbac.create_cluster_role(cluster_role("notebook-reader", rule([PLURAL], ["get"], GROUP)))
    await rbac.create_namespaced_role_binding(
        "alice", role_binding("data-team", "notebook-reader", subject("Group", "data-team"))
    )
    await rbac.create_cluster_role_binding(
        cluster_role_binding("everyone", "notebook-reader", subject("Group", "system:authenticated"))
    )
    in_alice, in_team_b = (
        {**NOTEBOOKS, "verb": "get", "namespace": "alice"},
        {**NOTEBOOKS, "verb": "get", "namespace": "team-b"},
    )
    assert await allowed(api_client, "erin", in_alice, ["data-team"])
    assert not await allowed(api_client, "erin", in_alice)
    assert not await allowed(api_client, "erin", in_team_b, ["data-team"])
    assert await allowed(api_client, "erin", in_team_b, ["system:authenticated"])


async def test_service_accounts_match_by_name_and_by_their_groups(
    api_client: client.ApiClient, kube_api: FakeKubeAPI
) -> None:
    kube_api.add_namespace("team-b")
    rbac = client.RbacAuthorizationV1Api(api_client)
    await rbac.create_cluster_role(cluster_role("job-runner", rule(["jobs"], ["create"], "batch")))
    # A ServiceAccount subject without a namespace is one of the RoleBinding's own namespace.
    await rbac.create_namespaced_role_binding(
        "alice", role_binding("runner", "job-runner", subject("ServiceAccount", "runner"))
    )
    in_alice = {"verb": "create", "group": "batch", "resource": "jobs", "namespace": "alice"}
    in_team_b = {**in_alice, "namespace": "team-b"}
    assert await allowed(api_client, "system:serviceaccount:alice:runner", in_alice)
    assert not await allowed(api_client, "system:serviceaccount:team-b:runner", in_alice)
    # Every service account of team-b, through the group its tokens carry, in team-b only.
    group = subject("Group", "system:serviceaccounts:team-b")
    await rbac.create_namespaced_role_binding("team-b", role_binding("team-b-accounts", "job-runner", group))
    user, groups = service_account_identity("team-b", "builder")
    assert groups == ["system:serviceaccounts", "system:serviceaccounts:team-b", "system:authenticated"]
    assert await allowed(api_client, user, in_team_b, groups)
    assert not await allowed(api_client, user, in_alice, groups)
    # A SubjectAccessReview is of the groups it names: the server adds none, even for a service account.
    assert not await allowed(api_client, user, in_team_b)
    other, its_groups = service_account_identity("alice", "builder")
    assert not await allowed(api_client, other, in_team_b, its_groups)


async def test_resource_names_limit_a_rule_to_the_objects_it_names(api_client: client.ApiClient) -> None:
    rbac = client.RbacAuthorizationV1Api(api_client)
    only = rule(["configmaps"], ["get", "update", "list", "create"], names=["gateway-policy"])
    await rbac.create_namespaced_role(
        "alice", client.V1Role(metadata=client.V1ObjectMeta(name="policy-editor"), rules=[only])
    )
    await rbac.create_namespaced_role_binding(
        "alice", role_binding("frank", "policy-editor", subject("User", "frank"), "Role")
    )
    configmaps = {"resource": "configmaps", "namespace": "alice"}
    assert await allowed(api_client, "frank", {**configmaps, "verb": "update", "name": "gateway-policy"})
    assert not await allowed(api_client, "frank", {**configmaps, "verb": "update", "name": "other"})
    # A list or a create names no object, so a rule with resourceNames never matches one.
    assert not await allowed(api_client, "frank", {**configmaps, "verb": "list"})
    assert not await allowed(api_client, "frank", {**configmaps, "verb": "create"})


async def test_non_resource_urls_are_granted_by_cluster_role_bindings_only(api_client: client.ApiClient) -> None:
    rbac = client.RbacAuthorizationV1Api(api_client)
    probes = client.V1PolicyRule(non_resource_urls=["/healthz", "/metrics/*"], verbs=["get"])
    await rbac.create_cluster_role(cluster_role("probes", probes))
    await rbac.create_cluster_role_binding(cluster_role_binding("grace-probes", "probes", subject("User", "grace")))
    await rbac.create_namespaced_role_binding("alice", role_binding("heidi-probes", "probes", subject("User", "heidi")))

    async def may_get(user: str, path: str, verb: str = "get") -> bool:
        return bool((await review(api_client, user, non_resource={"path": path, "verb": verb})).allowed)

    assert await may_get("grace", "/healthz")
    assert await may_get("grace", "/metrics/cadvisor")  # `*` at the end is a prefix match
    assert not await may_get("grace", "/metrics")
    assert not await may_get("grace", "/healthz", "post")
    assert not await may_get("heidi", "/healthz")  # a RoleBinding grants in a namespace; a URL is in none


async def test_a_review_or_binding_the_server_would_refuse_is_422(api_client: client.ApiClient) -> None:
    authorization = client.AuthorizationV1Api(api_client)
    reviews = [
        (client.V1SubjectAccessReviewSpec(user="bob"), "exactly one of nonResourceAttributes or resourceAttributes"),
        (
            client.V1SubjectAccessReviewSpec(resource_attributes=client.V1ResourceAttributes(verb="get")),
            "at least one of user or group must be specified",
        ),
    ]
    for spec, message in reviews:
        with pytest.raises(ApiException) as caught:
            await authorization.create_subject_access_review(client.V1SubjectAccessReview(spec=spec))
        assert caught.value.status == 422
        assert message in text(caught.value)
    rbac = client.RbacAuthorizationV1Api(api_client)
    with pytest.raises(ApiException) as caught:  # a ClusterRoleBinding grants a ClusterRole, never a Role
        await rbac.create_cluster_role_binding(cluster_role_binding("x", "pod-reader", subject("User", "bob"), "Role"))
    assert 'roleRef.kind: Unsupported value: \\"Role\\"' in text(caught.value)
    with pytest.raises(ApiException) as caught:  # and has no namespace to give a service account
        await rbac.create_cluster_role_binding(cluster_role_binding("x", "view", subject("ServiceAccount", "runner")))
    assert "subjects[0].namespace: Required value" in text(caught.value)


async def test_a_bindings_role_cannot_be_changed_in_place(api_client: client.ApiClient) -> None:
    rbac = client.RbacAuthorizationV1Api(api_client)
    await rbac.create_namespaced_role_binding("alice", role_binding("b", "view", subject("User", "bob")))
    for change in (
        rbac.patch_namespaced_role_binding("b", "alice", {"roleRef": {"name": "admin"}}),
        rbac.replace_namespaced_role_binding("b", "alice", role_binding("b", "edit", subject("User", "bob"))),
    ):
        with pytest.raises(ApiException) as caught:
            await change
        assert caught.value.status == 422 and "roleRef: Invalid value: cannot change roleRef" in text(caught.value)
    assert (await rbac.read_namespaced_role_binding("b", "alice")).role_ref.name == "view"
    patched = await rbac.patch_namespaced_role_binding("b", "alice", {"subjects": [{"kind": "User", "name": "carol"}]})
    assert patched.subjects[0].name == "carol"  # the rest of a binding may change


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"labels": {"owner": "alice@example.com"}}, 'metadata.labels: Invalid value: \\"alice@example.com\\"'),
        ({"labels": {"a": "x" * 64}}, "metadata.labels: Invalid value"),
        ({"labels": {"-bad": "1"}}, 'metadata.labels: Invalid value: \\"-bad\\"'),
        ({"annotations": {"Example.COM/x": "1"}}, "metadata.annotations: Invalid value"),
        (
            {"annotations": {"big": "x" * (256 * 1024)}},
            "metadata.annotations: Too long: must have at most 262144 bytes",
        ),
    ],
)
async def test_labels_and_annotations_the_server_refuses_are_422(
    api: client.CustomObjectsApi, metadata: dict[str, Any], message: str
) -> None:
    body = notebook("nb1")
    body["metadata"] |= metadata
    with pytest.raises(ApiException) as caught:
        await create(api, body)
    assert caught.value.status == 422 and message in text(caught.value)
    body["metadata"] = {"name": "nb1", "labels": {"a": "x" * 63, "example.com/b": ""}, "annotations": {"k": "v"}}
    assert (await create(api, body))["metadata"]["labels"]["a"] == "x" * 63


# -- namespace deletion ----------------------------------------------------------------------------


async def test_deleting_a_namespace_deletes_its_notebooks_and_a_watch_sees_each_go(
    api: client.CustomObjectsApi, api_client: client.ApiClient, kube_api: FakeKubeAPI
) -> None:
    kube_api.add_namespace("team-b")
    for name in ("nb1", "nb2"):
        await api.create_namespaced_custom_object(GROUP, VERSION, "team-b", PLURAL, notebook(name))
    await create(api, notebook("nb3"))  # in alice
    kube_api.create("configmaps", {"metadata": {"name": "settings"}}, "team-b")
    since = str(kube_api.revision)
    core = client.CoreV1Api(api_client)
    await core.delete_namespace("team-b")
    seen = []
    async with Watch() as watch:
        stream = watch.stream(
            api.list_cluster_custom_object, GROUP, VERSION, PLURAL, resource_version=since, timeout_seconds=1
        )
        async for event in stream:
            seen.append((event["type"], event["object"]["metadata"]["namespace"], event["object"]["metadata"]["name"]))
    assert seen == [("DELETED", "team-b", "nb1"), ("DELETED", "team-b", "nb2")]
    phases = []
    async with Watch() as watch:  # the namespace was Terminating first, as the API server answers a DELETE
        async for event in watch.stream(core.list_namespace, resource_version=since, timeout_seconds=1):
            phases.append((event["type"], event["object"].metadata.name, event["object"].status.phase))
    assert phases == [("MODIFIED", "team-b", "Terminating"), ("DELETED", "team-b", "Terminating")]
    with pytest.raises(ApiException) as caught:
        await core.read_namespace("team-b")
    assert caught.value.status == 404
    assert kube_api.objects("configmaps", "team-b") == []
    assert [nb["metadata"]["name"] for nb in kube_api.objects(PLURAL)] == ["nb3"]


async def test_a_terminating_namespace_refuses_new_content_and_waits_for_finalizers(
    api: client.CustomObjectsApi, api_client: client.ApiClient, kube_api: FakeKubeAPI
) -> None:
    kube_api.hold_namespaces = True  # the namespace controller has not got to it yet
    core = client.CoreV1Api(api_client)
    guarded = {**notebook("nb1"), "metadata": {"name": "nb1", "finalizers": ["example.com/backup"]}}
    await create(api, guarded)
    await core.delete_namespace("alice")
    assert (await core.read_namespace("alice")).status.phase == "Terminating"
    with pytest.raises(ApiException) as caught:
        await create(api, notebook("nb2"))
    assert caught.value.status == 403
    assert "unable to create new content in namespace alice because it is being terminated" in text(caught.value)
    with pytest.raises(ApiException) as caught:
        await core.delete_namespace("alice")
    assert caught.value.status == 409
    kube_api.hold_namespaces = False
    kube_api.collect_namespaces()
    # The notebook's own finalizer holds it, and it holds the namespace.
    assert kube_api.get(PLURAL, "alice", "nb1")["metadata"]["deletionTimestamp"]  # type: ignore[index]
    assert kube_api.get("namespaces", "", "alice") is not None
    await api.patch_namespaced_custom_object(
        GROUP, VERSION, "alice", PLURAL, "nb1", {"metadata": {"finalizers": None}}, **MERGE
    )
    assert kube_api.get(PLURAL, "alice", "nb1") is None
    assert kube_api.get("namespaces", "", "alice") is None


async def test_pod_logs_follow_the_api_servers_conventions(kube_api: FakeKubeAPI, api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    with pytest.raises(ApiException) as missing:
        await core.read_namespaced_pod_log("nb1-0", "alice")
    assert missing.value.status == 404
    containers = [{"name": "nb1", "image": "jupyter"}, {"name": "istio-proxy", "image": "proxy"}]
    kube_api.create("pods", {"metadata": {"name": "nb1-0"}, "spec": {"containers": containers}}, "alice")
    kube_api.set_log("alice", "nb1-0", "nb1", "one\ntwo\nthree\n")
    with pytest.raises(ApiException) as unnamed:  # two containers: which one must be said
        await core.read_namespaced_pod_log("nb1-0", "alice")
    assert unnamed.value.status == 400 and "a container name must be specified" in text(unnamed.value)
    with pytest.raises(ApiException) as stranger:
        await core.read_namespaced_pod_log("nb1-0", "alice", container="nope")
    assert stranger.value.status == 400
    assert await core.read_namespaced_pod_log("nb1-0", "alice", container="nb1") == "one\ntwo\nthree\n"
    assert await core.read_namespaced_pod_log("nb1-0", "alice", container="nb1", tail_lines=2) == "two\nthree\n"
    assert await core.read_namespaced_pod_log("nb1-0", "alice", container="nb1", limit_bytes=5) == "one\nt"


async def test_events_are_listed_by_the_object_they_are_about(
    kube_api: FakeKubeAPI, api_client: client.ApiClient
) -> None:
    for name, about in (("a", "nb1"), ("b", "nb2")):
        event = {"metadata": {"name": name}, "involvedObject": {"kind": "Notebook", "name": about}, "reason": "R"}
        kube_api.create("events", event, "alice")
    core = client.CoreV1Api(api_client)
    found = await core.list_namespaced_event(
        "alice", field_selector="involvedObject.kind=Notebook,involvedObject.name=nb1"
    )
    assert [event.metadata.name for event in found.items] == ["a"]
