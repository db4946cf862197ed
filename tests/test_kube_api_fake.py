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

from tests.fakes.kube_api import FakeKubeAPI

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
