"""PodDefaults ("configurations") through the kubernetes backend and the fake API server, which checks
each PodDefault against the real PodDefault CRD and each Notebook against the Notebook CRD."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.backends import NotebookSpec
from gateway.backends.kubernetes import KubernetesBackend
from gateway.backends.poddefaults import configuration_item, poddefault_object
from gateway.errors import BadRequest, Conflict, InvalidNotebookSpec, NotFound
from tests.fakes.kube_api import FakeKubeAPI

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
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")
    webhook, gateway = (
        KubernetesBackend(kubeconfig=kubeconfig),
        KubernetesBackend(kubeconfig=kubeconfig, apply_poddefaults=True),
    )
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
        ({"env": [{"name": "A"}]}, "env[0]"),
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
