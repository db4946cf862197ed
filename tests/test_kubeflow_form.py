"""The whole NEW SERVER form of Kubeflow's Jupyter web app, driven by Kubeflow's own spawner config:
the Notebooks it makes (server types, GPUs, affinity, tolerations, shared memory) against the fake API
server, where the real CRD schema checks them; the list's GPUs; the namespace's GPU quota; and the
local backend's refusals of what it cannot run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import keys
from gateway.backends.gpu_quota import gpu_quota_problem
from gateway.backends.kubernetes import KubernetesBackend
from gateway.notebook_form import parse_notebook_form
from gateway.spawner import SpawnerConfig
from tests.fakes.kube_api import FakeKubeAPI

from .conftest import Client, wait_until

pytestmark = pytest.mark.usefixtures("openapi_checked")

KUBEFLOW_CONFIG = Path(__file__).parent / "kubeflow" / "spawner_ui_config.yaml"
CODE_SERVER = "ghcr.io/kubeflow/kubeflow/notebook-servers/codeserver-python:latest"
RSTUDIO = "ghcr.io/kubeflow/kubeflow/notebook-servers/rstudio-tidyverse:latest"
AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "lifecycle", "operator": "In", "values": ["kubeflow-notebook"]}]}
            ]
        }
    }
}
TOLERATIONS = [{"key": "dedicated", "operator": "Equal", "value": "kubeflow-c5.xlarge", "effect": "NoSchedule"}]


def kubeflow_form() -> dict[str, Any]:
    """Kubeflow 1.10's spawnerFormDefaults with the affinity and toleration examples its comments give."""
    form: dict[str, Any] = yaml.safe_load(KUBEFLOW_CONFIG.read_text())["spawnerFormDefaults"]
    form["affinityConfig"]["options"] = [
        {"configKey": "dedicated_node_per_notebook", "displayName": "Dedicated Node", "affinity": AFFINITY}
    ]
    form["tolerationGroup"]["options"] = [
        {"groupKey": "group_1", "displayName": "4 CPU 8Gb Mem", "tolerations": TOLERATIONS}
    ]
    return form


@pytest.fixture
def spawner_file(tmp_path: Path) -> Path:
    path = tmp_path / "spawner_ui_config.yaml"
    path.write_text(yaml.safe_dump({"spawnerFormDefaults": kubeflow_form()}))
    return path


def jwa_body(name: str, **changes: Any) -> dict[str, Any]:
    """What the web app's form posts (its getSubmitNotebook(), readOnly fields left out as disabled)."""
    workspace = {
        "mount": "/home/jovyan",
        "newPvc": {
            "metadata": {"name": "{notebook-name}-workspace"},
            "spec": {"resources": {"requests": {"storage": "5Gi"}}, "accessModes": ["ReadWriteOnce"]},
        },
    }
    body = {
        "name": name,
        "namespace": "alice",
        "image": "ghcr.io/kubeflow/kubeflow/notebook-servers/jupyter-scipy:latest",
        "allowCustomImage": True,
        "imagePullPolicy": "IfNotPresent",
        "customImage": "",
        "customImageCheck": False,
        "serverType": "jupyter",
        "cpu": "0.5",
        "cpuLimit": "0.6",
        "memory": "1Gi",
        "memoryLimit": "1.2Gi",
        "gpus": {"vendor": "", "num": "none"},
        "affinityConfig": "",
        "tolerationGroup": "",
        "noWorkspace": False,
        "workspace": workspace,
        "datavols": [],
        "shm": True,
        "configurations": [],
    }
    return {**body, **changes}


# -- the Notebook objects, checked by the CRD -----------------------------------------------------


async def create(backend: KubernetesBackend, kube_api: FakeKubeAPI, body: dict[str, Any]) -> dict[str, Any]:
    spec = parse_notebook_form(body, namespace="alice", defaults=SpawnerConfig.from_mapping(kubeflow_form()))
    await backend.create("alice", spec, creator="alice@example.com")
    notebook = kube_api.get("notebooks", "alice", body["name"])
    assert notebook is not None
    assert not any(r.warnings for r in kube_api.requests)  # the CRD schema knew every field we sent
    return notebook


async def test_gpus_are_written_into_the_limits_as_the_web_app_writes_them(
    backend: KubernetesBackend, kube_api: FakeKubeAPI
) -> None:
    notebook = await create(backend, kube_api, jwa_body("nb1", gpus={"vendor": "nvidia.com/gpu", "num": "2"}))
    [container] = notebook["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "0.5", "memory": "1Gi"},
        "limits": {"cpu": "0.6", "memory": "1.2Gi", "nvidia.com/gpu": "2"},  # a string, as JWA writes it
    }
    listed = await backend.get("alice", "nb1")
    assert listed.spec.gpus == (("nvidia.com/gpu", 2),)


async def test_affinity_tolerations_and_shared_memory_go_into_the_pod(
    backend: KubernetesBackend, kube_api: FakeKubeAPI
) -> None:
    body = jwa_body("nb1", affinityConfig="dedicated_node_per_notebook", tolerationGroup="group_1")
    pod = (await create(backend, kube_api, body))["spec"]["template"]["spec"]
    assert pod["affinity"] == AFFINITY
    assert pod["tolerations"] == TOLERATIONS
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]
    plain = (await create(backend, kube_api, jwa_body("nb2", shm=False)))["spec"]["template"]["spec"]
    assert "affinity" not in plain and plain["tolerations"] == []
    assert [volume["name"] for volume in plain["volumes"]] == ["nb2-workspace"]


@pytest.mark.parametrize(
    ("server_type", "image", "annotations"),
    [
        ("jupyter", "ghcr.io/kubeflow/kubeflow/notebook-servers/jupyter-scipy:latest", {}),
        ("group-one", CODE_SERVER, {"notebooks.kubeflow.org/http-rewrite-uri": "/"}),
        (
            "group-two",
            RSTUDIO,
            {
                "notebooks.kubeflow.org/http-rewrite-uri": "/",
                "notebooks.kubeflow.org/http-headers-request-set": '{"X-RStudio-Root-Path":"/notebook/alice/nb1/"}',
            },
        ),
    ],
)
async def test_the_server_type_sets_its_image_and_the_annotations_the_web_app_sets(
    backend: KubernetesBackend, kube_api: FakeKubeAPI, server_type: str, image: str, annotations: dict[str, str]
) -> None:
    notebook = await create(backend, kube_api, jwa_body("nb1", serverType=server_type, image=image))
    assert notebook["spec"]["template"]["spec"]["containers"][0]["image"] == image
    written = notebook["metadata"]["annotations"]
    assert written["notebooks.kubeflow.org/server-type"] == server_type
    proxy_keys = {key: value for key, value in written.items() if "http-" in key}
    assert proxy_keys == annotations
    if "notebooks.kubeflow.org/http-headers-request-set" in annotations:  # what the proxy will parse
        headers = json.loads(annotations["notebooks.kubeflow.org/http-headers-request-set"])
        assert headers == {"X-RStudio-Root-Path": "/notebook/alice/nb1/"}


# -- through the gateway's API, on the web app's route -----------------------------------------------


async def kubeflow_gateway(gateway_factory: Callable[..., Any], kubeconfig: Path, spawner_file: Path) -> Client:
    gateway: Client = await gateway_factory(backend="kubernetes", kubeconfig=kubeconfig, spawner_config=spawner_file)
    return gateway


def gpu_quota(kube_api: FakeKubeAPI, hard: str) -> None:
    """What the Profiles page makes for a quota of `hard` NVIDIA GPUs."""
    quota = {"metadata": {"name": "notebook-quota"}, "spec": {"hard": {"requests.nvidia.com/gpu": hard}}}
    kube_api.create("resourcequotas", quota, "alice")


async def test_the_web_apps_body_is_accepted_on_its_route_and_the_list_reports_gpus(
    gateway_factory: Callable[..., Any], kubeconfig: Path, spawner_file: Path, kube_api: FakeKubeAPI
) -> None:
    gateway = await kubeflow_gateway(gateway_factory, kubeconfig, spawner_file)
    body = jwa_body("nb1", serverType="group-two", image=RSTUDIO, gpus={"vendor": "amd.com/gpu", "num": "1"})
    resp = await gateway.post("/api/namespaces/alice/notebooks", json=body)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["message"] == "Notebook created successfully."
    listed = (await (await gateway.get("/api/namespaces/alice/notebooks")).json())["notebooks"]
    assert [(nb["name"], nb["serverType"], nb["gpus"]) for nb in listed] == [
        ("nb1", "group-two", {"count": 1, "message": "1 AMD"})
    ]
    config = (await (await gateway.get("/api/config")).json())["config"]
    assert config["imageGroupTwo"]["options"] == [RSTUDIO]
    assert [vendor["uiName"] for vendor in config["gpus"]["value"]["vendors"]] == ["NVIDIA", "AMD", "Intel Gaudi"]
    assert config["tolerationGroup"]["options"][0]["groupKey"] == "group_1"


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"gpus": {"vendor": "example.com/tpu", "num": "1"}}, "gpus.vendor", "not a GPU vendor offered here"),
        ({"gpus": {"vendor": "nvidia.com/gpu", "num": "3"}}, "gpus.num", "3 GPUs are not offered here"),
        ({"cpu": "2", "cpuLimit": "1"}, "cpuLimit", "must be at least the CPU request"),
        ({"tolerationGroup": "group_9"}, "tolerationGroup", "not one of the tolerationGroup options"),
        ({"serverType": "emacs"}, "serverType", "must be one of"),
    ],
)
async def test_refusals_name_the_field_and_the_reason(
    gateway_factory: Callable[..., Any],
    kubeconfig: Path,
    spawner_file: Path,
    kube_api: FakeKubeAPI,
    change: dict[str, Any],
    field: str,
    words: str,
) -> None:
    gateway = await kubeflow_gateway(gateway_factory, kubeconfig, spawner_file)
    resp = await gateway.post("/api/namespaces/alice/notebooks", json=jwa_body("nb1", **change))
    answer = await resp.json()
    assert (resp.status, answer["field"]) == (400, field)
    assert words in answer["message"]
    assert kube_api.objects("notebooks") == []


async def test_a_read_only_field_changed_is_refused(
    gateway_factory: Callable[..., Any], kubeconfig: Path, tmp_path: Path, kube_api: FakeKubeAPI
) -> None:
    form = kubeflow_form()
    form["gpus"]["readOnly"] = True
    path = tmp_path / "read-only.yaml"
    path.write_text(yaml.safe_dump({"spawnerFormDefaults": form}))
    gateway = await kubeflow_gateway(gateway_factory, kubeconfig, path)
    config = (await (await gateway.get("/api/config")).json())["config"]
    assert config["gpus"]["readOnly"] is True
    resp = await gateway.post(
        "/api/namespaces/alice/notebooks", json=jwa_body("nb1", gpus={"vendor": "nvidia.com/gpu", "num": "1"})
    )
    answer = await resp.json()
    assert (resp.status, answer["field"]) == (400, "gpus")
    assert "read-only" in answer["message"]
    body = jwa_body("nb1")
    del body["gpus"]  # what the web app sends for a disabled (readOnly) field
    assert (await gateway.post("/api/namespaces/alice/notebooks", json=body)).status == 200


async def test_the_gpu_quota_takes_requests_within_it_and_refuses_more_with_the_reason(
    gateway_factory: Callable[..., Any], kubeconfig: Path, spawner_file: Path, kube_api: FakeKubeAPI
) -> None:
    gpu_quota(kube_api, "2")
    gateway = await kubeflow_gateway(gateway_factory, kubeconfig, spawner_file)
    two = {"gpus": {"vendor": "nvidia.com/gpu", "num": "2"}}
    one = {"gpus": {"vendor": "nvidia.com/gpu", "num": "1"}}
    assert (await gateway.post("/api/namespaces/alice/notebooks", json=jwa_body("big", **two))).status == 200
    resp = await gateway.post("/api/namespaces/alice/notebooks", json=jwa_body("more", **one))
    answer = await resp.json()
    assert (resp.status, answer["field"]) == (403, "gpus")
    assert "quota notebook-quota allows 2 nvidia.com/gpu and 2 are in use" in answer["message"]
    assert kube_api.get("notebooks", "alice", "more") is None
    # Other vendors and servers without GPUs are not held by it.
    amd = {"gpus": {"vendor": "amd.com/gpu", "num": "4"}}
    assert (await gateway.post("/api/namespaces/alice/notebooks", json=jwa_body("amd", **amd))).status == 200
    # A stopped server's GPUs are free again; starting it then needs room.
    stop = await gateway.patch("/api/namespaces/alice/notebooks/big", json={"stopped": True})
    assert stop.status == 200, await stop.text()
    await wait_for_stop(gateway, "big")
    resp = await gateway.post("/api/namespaces/alice/notebooks", json=jwa_body("more", **one))
    assert resp.status == 200, await resp.text()
    start = await gateway.patch("/api/namespaces/alice/notebooks/big", json={"stopped": False})
    assert start.status == 403
    assert "1 are in use, so 2 more do not fit" in (await start.json())["message"]


async def wait_for_stop(gateway: Client, name: str) -> None:
    """Until the gateway's view has the stop annotation (the watch brings it)."""

    async def stopped() -> bool:
        listed = (await (await gateway.get("/api/namespaces/alice/notebooks")).json())["notebooks"]
        return any(nb["name"] == name and nb["stopped"] for nb in listed)

    await wait_until(stopped)


# -- the local backend: what it cannot run is refused ---------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"serverType": "group-one", "image": CODE_SERVER}, "serverType", "runs JupyterLab only"),
        ({"gpus": {"vendor": "nvidia.com/gpu", "num": "1"}}, "gpus", "cannot give a server GPUs"),
    ],
)
async def test_the_local_backend_refuses_what_it_cannot_run(
    gateway_factory: Callable[..., Any],
    spawner_file: Path,
    tmp_path: Path,
    change: dict[str, Any],
    field: str,
    words: str,
) -> None:
    gateway: Client = await gateway_factory(backend="local", local_dir=tmp_path / "local", spawner_config=spawner_file)
    resp = await gateway.post("/api/namespaces/alice/notebooks", json=jwa_body("nb1", **change))
    answer = await resp.json()
    assert (resp.status, answer["field"]) == (400, field)
    assert words in answer["message"]


async def test_the_gpu_quota_set_on_a_profile_is_the_one_a_new_server_meets(
    gateway_factory: Callable[..., Any], kubeconfig: Path, spawner_file: Path, kube_api: FakeKubeAPI
) -> None:
    root = "root@example.com"
    gateway: Client = await gateway_factory(
        user=root, backend="kubernetes", kubeconfig=kubeconfig, bootstrap_admins=(root,), spawner_config=spawner_file
    )
    profile = {"name": "team-a", "owner": root, "quota": {"nvidia.com/gpu": "1"}}
    assert (await gateway.post("/api/profiles", json=profile)).status == 201
    one = {"namespace": "team-a", "gpus": {"vendor": "nvidia.com/gpu", "num": "1"}}
    resp = await gateway.post("/api/namespaces/team-a/notebooks", json=jwa_body("first", **one))
    assert resp.status == 200, await resp.text()
    resp = await gateway.post("/api/namespaces/team-a/notebooks", json=jwa_body("second", **one))
    assert resp.status == 403
    assert "allows 1 nvidia.com/gpu and 1 are in use" in (await resp.json())["message"]
    audit_dir = gateway.app[keys.SETTINGS].audit_dir
    lines = b"".join(path.read_bytes() for path in sorted(audit_dir.glob("audit-*.jsonl"))).splitlines()
    creates = [event for event in map(json.loads, lines) if event["action"] == "notebook.create"]
    assert [(e["notebook"], e["outcome"], e["details"].get("gpus")) for e in creates] == [
        ("first", "allowed", {"nvidia.com/gpu": 1}),
        ("second", "denied", {"nvidia.com/gpu": 1}),
    ]


async def test_a_profile_takes_a_quota_for_each_configured_gpu_vendor_and_an_amd_quota_holds(
    gateway_factory: Callable[..., Any], kubeconfig: Path, spawner_file: Path, kube_api: FakeKubeAPI
) -> None:
    root = "root@example.com"
    gateway: Client = await gateway_factory(
        user=root, backend="kubernetes", kubeconfig=kubeconfig, bootstrap_admins=(root,), spawner_config=spawner_file
    )
    page = await (await gateway.get("/profiles")).text()
    for vendor, label in (("nvidia.com/gpu", "NVIDIA"), ("amd.com/gpu", "AMD"), ("habana.ai/gaudi", "Intel Gaudi")):
        assert f'data-quota="{vendor}"' in page
        assert f"GPUs ({label})" in page
    unknown = {"name": "team-b", "owner": root, "quota": {"intel.com/gpu": "1"}}
    resp = await gateway.post("/api/profiles", json=unknown)
    answer = await resp.json()
    assert (resp.status, answer["field"]) == (400, "quota.intel.com/gpu")
    assert "amd.com/gpu" in answer["message"]
    assert kube_api.get("namespaces", "", "team-b") is None
    profile = {"name": "team-a", "owner": root, "quota": {"amd.com/gpu": "2"}}
    resp = await gateway.post("/api/profiles", json=profile)
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["quota"] == {"amd.com/gpu": "2"}
    quota = kube_api.get("resourcequotas", "team-a", "notebook-quota")
    assert quota is not None and quota["spec"]["hard"] == {"requests.amd.com/gpu": "2"}
    listed = (await (await gateway.get("/api/profiles")).json())["profiles"]
    assert [p["quota"] for p in listed if p["name"] == "team-a"] == [{"amd.com/gpu": "2"}]
    amd = {"namespace": "team-a", "gpus": {"vendor": "amd.com/gpu", "num": "2"}}
    resp = await gateway.post("/api/namespaces/team-a/notebooks", json=jwa_body("first", **amd))
    assert resp.status == 200, await resp.text()
    resp = await gateway.post("/api/namespaces/team-a/notebooks", json=jwa_body("second", **amd))
    assert resp.status == 403
    assert "allows 2 amd.com/gpu and 2 are in use" in (await resp.json())["message"]
    nvidia = {"namespace": "team-a", "gpus": {"vendor": "nvidia.com/gpu", "num": "1"}}  # not under the quota
    resp = await gateway.post("/api/namespaces/team-a/notebooks", json=jwa_body("third", **nvidia))
    assert resp.status == 200, await resp.text()


def test_gpus_in_use_by_other_pods_count_and_an_unreadable_quota_value_is_skipped() -> None:
    quota = {
        "metadata": {"name": "q"},
        "spec": {"hard": {"requests.nvidia.com/gpu": "2", "requests.amd.com/gpu": "lots"}},
        "status": {"used": {"requests.nvidia.com/gpu": "2"}},  # a training Job's pods, not a notebook
    }
    problem = gpu_quota_problem([quota], [], (("nvidia.com/gpu", 1),))
    assert problem is not None and "allows 2 nvidia.com/gpu and 2 are in use" in problem
    assert gpu_quota_problem([quota], [], (("amd.com/gpu", 8),)) is None  # no readable bound on AMD
    assert gpu_quota_problem([], [], (("nvidia.com/gpu", 8),)) is None  # no quota, no bound


async def test_a_json_client_that_leaves_out_volumes_and_configurations_gets_the_configs_defaults(
    gateway_factory: Callable[..., Any], kubeconfig: Path, tmp_path: Path, kube_api: FakeKubeAPI
) -> None:
    form = kubeflow_form()
    pvc_spec = {"resources": {"requests": {"storage": "2Gi"}}, "accessModes": ["ReadWriteOnce"]}
    volume = {"mount": "/home/jovyan/data", "newPvc": {"metadata": {"name": "{notebook-name}-data"}, "spec": pvc_spec}}
    form["dataVolumes"] = {"value": [volume], "readOnly": True}
    form["configurations"] = {"value": ["add-gcp-secret"], "readOnly": False}
    path = tmp_path / "defaults.yaml"
    path.write_text(yaml.safe_dump({"spawnerFormDefaults": form}))
    gateway = await kubeflow_gateway(gateway_factory, kubeconfig, path)
    gcp = {"selector": {"matchLabels": {"add-gcp-secret": "true"}}, "desc": "Add GCP credentials"}
    kube_api.create("poddefaults", {"metadata": {"name": "add-gcp-secret"}, "spec": gcp}, "alice")
    body = {key: value for key, value in jwa_body("lab").items() if key not in ("datavols", "configurations")}
    resp = await gateway.post("/api/namespaces/alice/notebooks", json=body)
    assert resp.status == 200, await resp.text()
    notebook = kube_api.get("notebooks", "alice", "lab")
    assert notebook is not None
    assert notebook["metadata"]["labels"]["add-gcp-secret"] == "true"
    assert kube_api.get("persistentvolumeclaims", "alice", "lab-data") is not None
    # dataVolumes is read-only: a body that changes it is refused, naming the field.
    resp = await gateway.post("/api/namespaces/alice/notebooks", json=jwa_body("other", datavols=[]))
    assert (resp.status, (await resp.json())["field"]) == (400, "datavols")
