"""PodDefaults ("configurations") through the kubernetes backend and the fake API server, which checks
each PodDefault against the real PodDefault CRD and each Notebook against the Notebook CRD."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.backends import NotebookSpec, Volume
from gateway.backends.kubernetes import KubernetesBackend
from gateway.backends.notebook_resource import is_routable, reconfiguring_start_patch
from gateway.backends.poddefaults import configuration_item, poddefault_object
from gateway.errors import BadRequest, Conflict, InvalidNotebookSpec, NotFound
from tests.fakes.kube_api import FakeKubeAPI, KubeError, kube_client

from .conftest import wait_until

IMAGE = "ghcr.io/kubeflow/kubeflow/notebook-servers/jupyter-scipy:v1.10.0"
STORE_FORM: dict[str, Any] = {
    "name": "object-store",
    "desc": "Team object store credentials",
    "env": [{"name": "STORE_URL", "value": "https://store.example.com"}],
    "secretMounts": [{"secret": "store-creds", "mountPath": "/etc/store"}],
    "envFromSecrets": ["store-keys"],
}


@pytest.fixture
async def backends(kube_api: FakeKubeAPI, tmp_path: Path) -> AsyncIterator[tuple[KubernetesBackend, KubernetesBackend]]:
    """(with a PodDefault webhook in the cluster, without one: the gateway applies them)."""
    async with kube_client(kube_api, tmp_path) as client:
        webhook, gateway = KubernetesBackend(client), KubernetesBackend(client, apply_poddefaults=True)
        await webhook.open()
        await gateway.open()
        try:
            yield webhook, gateway
        finally:
            await gateway.close()
            await webhook.close()


async def test_a_created_configuration_is_listed_as_the_web_app_lists_it(
    backends: tuple[KubernetesBackend, KubernetesBackend], kube_api: FakeKubeAPI
) -> None:
    backend, _ = backends
    await backend.create_poddefault("alice", poddefault_object("alice", STORE_FORM))
    stored = kube_api.get("poddefaults", "alice", "object-store")
    assert stored is not None and stored["spec"]["selector"] == {"matchLabels": {"object-store": "true"}}
    [item] = [configuration_item(obj) for obj in await backend.poddefaults("alice")]
    assert (item["label"], item["name"]) == ("object-store", "object-store")
    assert item["desc"] == "Team object store credentials"
    assert item["secretMounts"] == [{"secret": "store-creds", "mountPath": "/etc/store"}]
    assert item["envFromSecrets"] == ["store-keys"]


async def test_a_notebook_with_a_configuration_carries_its_label_and_with_the_gateway_its_env_and_volumes(
    backends: tuple[KubernetesBackend, KubernetesBackend], kube_api: FakeKubeAPI
) -> None:
    webhook, gateway = backends
    await gateway.create_poddefault("alice", poddefault_object("alice", STORE_FORM))
    spec = NotebookSpec(name="nb1", image=IMAGE, configurations=("object-store",))
    await webhook.create("alice", spec, creator="alice@example.com")
    await gateway.create("alice", NotebookSpec(name="nb2", image=IMAGE, configurations=("object-store",)), creator=None)
    plain, applied = kube_api.get("notebooks", "alice", "nb1"), kube_api.get("notebooks", "alice", "nb2")
    assert plain is not None and applied is not None
    assert plain["metadata"]["labels"]["object-store"] == "true" == applied["metadata"]["labels"]["object-store"]
    assert plain["spec"]["template"]["spec"]["containers"][0]["env"] == []  # the webhook's job there
    pod = applied["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["env"] == [{"name": "STORE_URL", "value": "https://store.example.com"}]
    assert container["envFrom"] == [{"secretRef": {"name": "store-keys"}}]
    assert {"name": "object-store-0", "mountPath": "/etc/store", "readOnly": True} in container["volumeMounts"]
    assert {"name": "object-store-0", "secret": {"secretName": "store-creds"}} in pod["volumes"]
    assert not any(r.warnings for r in kube_api.requests)  # the Notebook CRD knew every field


async def test_an_unknown_configuration_label_is_refused_and_nothing_is_made(
    backends: tuple[KubernetesBackend, KubernetesBackend], kube_api: FakeKubeAPI
) -> None:
    _, gateway = backends
    with pytest.raises(InvalidNotebookSpec, match="no-such") as caught:
        await gateway.create("alice", NotebookSpec(name="nb1", image=IMAGE, configurations=("no-such",)), creator=None)
    assert caught.value.field == "configurations"
    assert kube_api.objects("notebooks", "alice") == []


async def test_the_crd_refuses_what_the_form_let_through_and_names_conflicts(
    backends: tuple[KubernetesBackend, KubernetesBackend],
) -> None:
    backend, _ = backends
    bad = poddefault_object("alice", STORE_FORM)
    bad["spec"]["env"] = [{"value": "no name"}]  # type: ignore[index]
    with pytest.raises(BadRequest, match=r"spec.env\[0\].name"):
        await backend.create_poddefault("alice", bad)
    await backend.create_poddefault("alice", poddefault_object("alice", STORE_FORM))
    with pytest.raises(Conflict, match="already exists"):
        await backend.create_poddefault("alice", poddefault_object("alice", STORE_FORM))


async def test_delete_removes_a_configuration_and_a_missing_one_is_not_found(
    backends: tuple[KubernetesBackend, KubernetesBackend], kube_api: FakeKubeAPI
) -> None:
    backend, _ = backends
    await backend.create_poddefault("alice", poddefault_object("alice", STORE_FORM))
    await backend.delete_poddefault("alice", "object-store")
    assert kube_api.objects("poddefaults", "alice") == []
    with pytest.raises(NotFound, match="no configuration alice/object-store"):
        await backend.delete_poddefault("alice", "object-store")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "Not A Label"}, "name"),
        ({"env": [{"name": "1BAD", "value": "x"}]}, "env[0].name"),
        ({"env": [{"name": "A"}]}, "env[0].value"),  # the missing value, named
        ({"secretMounts": [{"secret": "creds", "mountPath": "relative"}]}, "secretMounts[0].mountPath"),
        ({"secretMounts": [{"secret": "Bad Secret", "mountPath": "/a"}]}, "secretMounts[0].secret"),
        ({"envFromSecrets": ["x/y"]}, "envFromSecrets[0]"),
        ({"secretValue": "hunter2"}, "secretValue"),
    ],
)
def test_the_form_refuses_each_bad_field_by_name(change: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        poddefault_object("alice", {**STORE_FORM, **change})
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"env": "STORE_URL=x"}, "env", "env: must be a list."),
        ({"env": [{"name": "A", "value": 1}]}, "env[0].value", "must be a string"),
        (
            {"secretMounts": [{"secret": "creds"}]},
            "secretMounts[0].mountPath",
            "secretMounts[0].mountPath: is required",
        ),
        (
            {"secretMounts": [{"secret": "creds", "mountPath": "/a", "readOnly": False}]},
            "secretMounts[0].readOnly",
            "Unknown",
        ),
        (
            {"secretMounts": [{"secret": "a", "mountPath": "/s"}, {"secret": "b", "mountPath": "//s/"}]},
            "secretMounts",
            "same path",
        ),
        ({"secretMounts": [{"secret": "creds", "mountPath": "/a/../b"}]}, "secretMounts[0].mountPath", "'..'"),
        ({"envFromSecrets": [{"name": "creds"}]}, "envFromSecrets[0]", "must be a string"),
        ({"env": [{"name": f"V{i}", "value": ""} for i in range(51)]}, "env", "at most 50"),
        ({"desc": "x" * 1025}, "desc", "at most 1024"),
        ({"colour": "blue", "size": 3}, "colour", "Unknown field(s): colour, size."),
    ],
)
def test_the_model_names_the_field_and_says_what_is_wrong(change: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(BadRequest) as caught:
        poddefault_object("alice", {**STORE_FORM, **change})
    assert (caught.value.field, caught.value.status) == (field, 400)
    assert words in caught.value.message


def test_mount_paths_are_kept_canonical() -> None:
    form = {**STORE_FORM, "secretMounts": [{"secret": "creds", "mountPath": "//etc//store/"}]}
    assert poddefault_object("alice", form)["spec"]["volumeMounts"][0]["mountPath"] == "/etc/store"  # type: ignore[index]


# -- start: configurations re-applied as they are now (gateway mode) --------------------------------


def pod_of(kube_api: FakeKubeAPI, name: str = "nb1") -> tuple[dict[str, Any], dict[str, Any]]:
    """(the Notebook's pod spec, its container)."""
    notebook = kube_api.get("notebooks", "alice", name)
    assert notebook is not None
    pod = notebook["spec"]["template"]["spec"]
    [container] = pod["containers"]
    return pod, container


def env_of(container: dict[str, Any]) -> dict[str, str]:
    env = container.get("env", [])
    names = [item["name"] for item in env]
    assert len(names) == len(set(names)), names  # never twice
    return {item["name"]: item.get("value", "") for item in env}


def set_user_env(kube_api: FakeKubeAPI, name: str, value: str) -> None:
    """Someone edits the Notebook (kubectl edit) to set a variable of their own."""
    pod, container = pod_of(kube_api)
    container["env"] = [*container.get("env", []), {"name": name, "value": value}]
    kube_api.patch("notebooks", "alice", "nb1", {"spec": {"template": {"spec": {"containers": [container]}}}})


def edit_store_poddefault(kube_api: FakeKubeAPI) -> None:
    """An admin edits the configuration: a new URL, a new variable, another envFrom Secret and a second mount."""
    spec = {
        "env": [
            {"name": "STORE_URL", "value": "https://new-store.example.com"},
            {"name": "STORE_REGION", "value": "eu-west"},
        ],
        "envFrom": [{"secretRef": {"name": "store-keys-v2"}}],
        "volumes": [
            {"name": "object-store-0", "secret": {"secretName": "store-creds-v2"}},
            {"name": "object-store-1", "secret": {"secretName": "store-ca"}},
        ],
        "volumeMounts": [
            {"name": "object-store-0", "mountPath": "/etc/store", "readOnly": True},
            {"name": "object-store-1", "mountPath": "/etc/store-ca", "readOnly": True},
        ],
    }
    kube_api.patch("poddefaults", "alice", "object-store", {"spec": spec})


def is_started(backend: KubernetesBackend) -> bool:
    obj = backend.watcher.notebook("alice", "nb1")
    return obj is not None and is_routable(obj)


async def create_with_store(backend: KubernetesBackend, **changes: Any) -> None:
    await backend.create_poddefault("alice", poddefault_object("alice", STORE_FORM))
    data = Volume("nb1-data", "/data", size="1Gi")
    spec = NotebookSpec(name="nb1", image=IMAGE, configurations=("object-store",), data_volumes=(data,), **changes)
    await backend.create("alice", spec, creator="alice@example.com")


async def test_start_reapplies_an_edited_configuration_and_keeps_what_the_user_set(
    backends: tuple[KubernetesBackend, KubernetesBackend], kube_api: FakeKubeAPI
) -> None:
    _, gateway = backends
    await create_with_store(gateway)
    set_user_env(kube_api, "STORE_REGION", "user-choice")
    edit_store_poddefault(kube_api)
    await gateway.stop("alice", "nb1")
    patches_before = sum(r.method == "PATCH" for r in kube_api.requests)
    started = await gateway.start("alice", "nb1")
    assert sum(r.method == "PATCH" for r in kube_api.requests) == patches_before + 1  # one patch, started and new
    assert not started.stopped and started.spec.configurations == ("object-store",)
    pod, container = pod_of(kube_api)
    # The user's variable wins over the configuration's new one, as it would at creation.
    assert env_of(container) == {"STORE_REGION": "user-choice", "STORE_URL": "https://new-store.example.com"}
    assert container["envFrom"] == [{"secretRef": {"name": "store-keys-v2"}}]  # the old Secret is gone
    assert sorted(m["mountPath"] for m in container["volumeMounts"]) == ["/data", "/etc/store", "/etc/store-ca"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"object-store-0": "store-creds-v2", "object-store-1": "store-ca"}
    assert {"name": "nb1-data", "persistentVolumeClaim": {"claimName": "nb1-data"}} in pod["volumes"]
    assert not any(r.warnings for r in kube_api.requests)  # the Notebook CRD knew every field


async def test_a_second_start_takes_out_what_the_first_one_put_in(
    backends: tuple[KubernetesBackend, KubernetesBackend], kube_api: FakeKubeAPI
) -> None:
    _, gateway = backends
    await create_with_store(gateway)
    edit_store_poddefault(kube_api)
    await gateway.stop("alice", "nb1")
    await gateway.start("alice", "nb1")
    kube_api.patch(
        "poddefaults", "alice", "object-store", {"spec": {"env": None, "volumes": None, "volumeMounts": None}}
    )
    await wait_until(lambda: is_started(gateway))  # stop reads the watcher's view
    await gateway.stop("alice", "nb1")
    await gateway.start("alice", "nb1")
    pod, container = pod_of(kube_api)
    assert env_of(container) == {}
    assert container["envFrom"] == [{"secretRef": {"name": "store-keys-v2"}}]
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/data"]
    assert [v["name"] for v in pod["volumes"]] == ["nb1-data"]


async def test_a_deleted_configuration_is_taken_out_at_start_and_the_start_succeeds(
    backends: tuple[KubernetesBackend, KubernetesBackend], kube_api: FakeKubeAPI
) -> None:
    _, gateway = backends
    await create_with_store(gateway)
    await gateway.stop("alice", "nb1")
    await gateway.delete_poddefault("alice", "object-store")
    started = await gateway.start("alice", "nb1")
    assert not started.stopped and started.spec.configurations == ()
    notebook = kube_api.get("notebooks", "alice", "nb1")
    assert notebook is not None and notebook["metadata"]["labels"]["object-store"] == "true"  # the label stays
    pod, container = pod_of(kube_api)
    assert env_of(container) == {} and not container.get("envFrom")
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/data"]
    assert [v["name"] for v in pod["volumes"]] == ["nb1-data"]


async def test_what_the_form_set_wins_at_creation_and_again_at_start(
    backends: tuple[KubernetesBackend, KubernetesBackend], kube_api: FakeKubeAPI
) -> None:
    _, gateway = backends
    # The configuration mounts its Secret at the user's data volume's path: the user's mount wins.
    await gateway.create_poddefault("alice", poddefault_object("alice", {**STORE_FORM, "secretMounts": []}))
    data = Volume("nb1-data", "/etc/store", size="1Gi")
    spec = NotebookSpec(name="nb1", image=IMAGE, configurations=("object-store",), data_volumes=(data,))
    await gateway.create("alice", spec, creator=None)
    mounts = {"name": "object-store-0", "mountPath": "/etc/store", "readOnly": True}
    volumes = {"name": "object-store-0", "secret": {"secretName": "store-creds"}}
    kube_api.patch("poddefaults", "alice", "object-store", {"spec": {"volumes": [volumes], "volumeMounts": [mounts]}})
    await gateway.stop("alice", "nb1")
    await gateway.start("alice", "nb1")
    _, container = pod_of(kube_api)
    assert container["volumeMounts"] == [{"name": "nb1-data", "mountPath": "/etc/store"}]


async def test_starting_a_running_notebook_leaves_its_pod_template_alone(
    backends: tuple[KubernetesBackend, KubernetesBackend], kube_api: FakeKubeAPI
) -> None:
    _, gateway = backends
    await create_with_store(gateway)
    before = kube_api.get("notebooks", "alice", "nb1")
    edit_store_poddefault(kube_api)
    await gateway.start("alice", "nb1")  # no new pod, so nothing to re-apply (and no restart for it)
    after = kube_api.get("notebooks", "alice", "nb1")
    assert before is not None and after is not None and after["spec"] == before["spec"]


async def test_a_start_retries_when_the_notebook_changed_between_read_and_patch(
    backends: tuple[KubernetesBackend, KubernetesBackend], kube_api: FakeKubeAPI
) -> None:
    _, gateway = backends
    await create_with_store(gateway)
    edit_store_poddefault(kube_api)
    await gateway.stop("alice", "nb1")
    kube_api.fail_next("PATCH", "notebooks", 409, "Conflict", "the object has been modified")
    assert not (await gateway.start("alice", "nb1")).stopped
    _, container = pod_of(kube_api)
    assert env_of(container)["STORE_URL"] == "https://new-store.example.com"


async def test_with_the_webhook_a_start_only_removes_the_stop_annotation(
    backends: tuple[KubernetesBackend, KubernetesBackend], kube_api: FakeKubeAPI
) -> None:
    webhook, _ = backends
    await create_with_store(webhook)
    edit_store_poddefault(kube_api)
    before = kube_api.get("notebooks", "alice", "nb1")
    await webhook.stop("alice", "nb1")
    started = await webhook.start("alice", "nb1")
    after = kube_api.get("notebooks", "alice", "nb1")
    assert before is not None and after is not None and after["spec"] == before["spec"]  # the webhook's job
    assert after["metadata"]["annotations"] == before["metadata"]["annotations"]
    assert started.spec.configurations == ()


async def test_a_notebook_without_the_gateways_record_starts_as_it_is(
    backends: tuple[KubernetesBackend, KubernetesBackend], kube_api: FakeKubeAPI
) -> None:
    _, gateway = backends
    await gateway.create_poddefault("alice", poddefault_object("alice", STORE_FORM))
    container = {"name": "nb1", "image": IMAGE, "env": [{"name": "STORE_URL", "value": "set-by-hand"}]}
    metadata = {
        "name": "nb1",
        "labels": {"object-store": "true"},
        "annotations": {"kubeflow-resource-stopped": "2024-05-01T12:00:00Z"},
    }
    kube_api.create(  # made elsewhere (or before the gateway kept a record): nothing known to be the gateway's
        "notebooks", {"metadata": metadata, "spec": {"template": {"spec": {"containers": [container]}}}}, "alice"
    )
    await gateway.watcher.sync()
    assert not (await gateway.start("alice", "nb1")).stopped
    _, started = pod_of(kube_api)
    assert started == container


async def test_a_start_patch_refuses_to_overwrite_an_edit_made_after_it_was_computed(
    backends: tuple[KubernetesBackend, KubernetesBackend], kube_api: FakeKubeAPI
) -> None:
    _, gateway = backends
    await create_with_store(gateway)
    await gateway.stop("alice", "nb1")
    current = kube_api.get("notebooks", "alice", "nb1")
    assert current is not None
    patch = reconfiguring_start_patch(current, current, {})  # it replaces the containers list whole
    set_user_env(kube_api, "LATE", "edit")
    with pytest.raises(KubeError) as caught:
        kube_api.patch("notebooks", "alice", "nb1", patch)
    assert (caught.value.code, caught.value.reason) == (409, "Conflict")
    _, container = pod_of(kube_api)
    assert env_of(container)["LATE"] == "edit"
