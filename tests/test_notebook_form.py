"""The new-notebook form: defaults filled in, the web app's body accepted, every bad field named."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.backends import NotebookSpec, Volume
from gateway.errors import InvalidNotebookSpec
from gateway.notebook_form import check_defaults, parse_notebook_form
from gateway.spawner import SpawnerConfig

DEFAULTS = SpawnerConfig.load()


def parse(body: object, defaults: SpawnerConfig = DEFAULTS) -> NotebookSpec:
    return parse_notebook_form(body, namespace="alice", defaults=defaults)


def new_volume(name: str, mount: str, size: str = "1Gi") -> dict[str, Any]:
    spec = {"resources": {"requests": {"storage": size}}, "accessModes": ["ReadWriteOnce"]}
    return {"mount": mount, "newPvc": {"metadata": {"name": name}, "spec": spec}}


def existing_volume(claim: str, mount: str) -> dict[str, Any]:
    return {"mount": mount, "existingSource": {"persistentVolumeClaim": {"claimName": claim}}}


def test_a_bare_name_gets_the_spawner_defaults() -> None:
    spec = parse({"name": "nb1"})
    assert (spec.name, spec.image, spec.cpu, spec.memory) == ("nb1", DEFAULTS.image, "0.5", "1.0Gi")
    # Limits are request x limitFactor (1.2), written in the request's own unit, as the web app does.
    assert (spec.cpu_limit, spec.memory_limit) == ("0.6", "1.2Gi")
    assert spec.workspace == Volume(name="nb1-workspace", mount_path="/home/jovyan", size="5Gi")
    assert (spec.data_volumes, spec.server_type, spec.image_pull_policy) == ((), "jupyter", "IfNotPresent")


def test_the_body_the_jupyter_web_app_sends_is_accepted() -> None:
    body = {
        "name": "nb1",
        "namespace": "alice",
        "image": "registry.example.com:5000/team/lab:1.2",  # the web app copies the custom image here
        "customImage": "registry.example.com:5000/team/lab:1.2",
        "customImageCheck": True,
        "allowCustomImage": True,
        "imagePullPolicy": "Always",
        "serverType": "jupyter",
        "cpu": "1",
        "cpuLimit": "2",
        "memory": "2Gi",
        "memoryLimit": "4Gi",
        "gpus": {"num": "none"},
        "affinityConfig": "",
        "tolerationGroup": "none",
        "shm": True,
        "configurations": [],
        "environment": "",
        "noWorkspace": False,
        "workspace": new_volume("{notebook-name}-home", "/home/jovyan", "10Gi"),
        "datavols": [existing_volume("shared-data", "/data"), new_volume("{notebook-name}-scratch", "/scratch")],
    }
    spec = parse(body)
    assert (spec.image, spec.image_pull_policy) == ("registry.example.com:5000/team/lab:1.2", "Always")
    assert (spec.cpu, spec.cpu_limit, spec.memory, spec.memory_limit) == ("1", "2", "2Gi", "4Gi")
    assert spec.workspace == Volume(name="nb1-home", mount_path="/home/jovyan", size="10Gi")
    assert spec.data_volumes == (
        Volume(name="shared-data", mount_path="/data", existing=True),
        Volume(name="nb1-scratch", mount_path="/scratch", size="1Gi"),
    )


def test_cpu_may_be_a_number_and_limits_are_optional_without_a_factor() -> None:
    no_factors = dataclasses.replace(DEFAULTS, cpu_limit_factor=None, memory_limit_factor=None)
    spec = parse({"name": "nb1", "cpu": 2, "memory": "512Mi"}, no_factors)
    assert (spec.cpu, spec.cpu_limit, spec.memory, spec.memory_limit) == ("2", None, "512Mi", None)


def test_workspace_can_be_left_out_and_mount_paths_are_normalised() -> None:
    assert parse({"name": "nb1", "noWorkspace": True}).workspace is None
    spec = parse({"name": "nb1", "workspace": None, "datavols": [new_volume("d", "//data//set/")]})
    assert spec.workspace is None
    assert spec.data_volumes[0].mount_path == "/data/set"


def test_an_existing_claim_may_be_mounted_twice() -> None:
    spec = parse({"name": "nb1", "datavols": [existing_volume("c", "/a"), existing_volume("c", "/b")]})
    assert [v.mount_path for v in spec.data_volumes] == ["/a", "/b"]


def test_custom_images_are_refused_when_the_configuration_forbids_them() -> None:
    locked = dataclasses.replace(DEFAULTS, allow_custom_image=False)
    assert parse({"name": "nb1", "image": DEFAULTS.images[1]}, locked).image == DEFAULTS.images[1]
    for body, field in [({"customImage": "ghcr.io/me/lab:1"}, "customImage"), ({"image": "me/lab:1"}, "image")]:
        with pytest.raises(InvalidNotebookSpec, match="Custom images are not allowed") as caught:
            parse({"name": "nb1", **body}, locked)
        assert caught.value.field == field


def test_an_unchecked_custom_image_is_ignored() -> None:
    spec = parse({"name": "nb1", "customImage": "not an image", "customImageCheck": False})
    assert spec.image == DEFAULTS.image


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"name": "Bad_Name"}, "name", "DNS-1123 label"),
        ({"name": "a" * 64}, "name", "at most 63"),
        ({"name": None}, "name", "must be a string"),
        ({"colour": "blue", "size": 3}, "colour", "Unknown field(s): colour, size"),
        ({"namespace": "bob"}, "namespace", "differs from the URL"),
        ({"cpu": "abc"}, "cpu", "not a Kubernetes quantity"),
        ({"cpu": "0"}, "cpu", "greater than zero"),
        ({"cpu": "-1"}, "cpu", "greater than zero"),
        ({"cpu": True}, "cpu", "must be a Kubernetes quantity"),
        ({"memory": "1.0Gx"}, "memory", "not a Kubernetes quantity"),
        ({"cpuLimit": "0.4"}, "cpuLimit", "must be at least the CPU request"),
        ({"memory": "1Gi", "memoryLimit": "512Mi"}, "memoryLimit", "must be at least the Memory request"),
        ({"customImage": "http://abc.image:v1"}, "customImage", "not a container image reference"),
        ({"customImage": "Not An Image"}, "customImage", "not a container image reference"),
        ({"customImageCheck": True, "customImage": ""}, "customImage", "Enter the custom image"),
        ({"image": "ghcr.io/x/y:tag with space"}, "image", "not a container image reference"),
        ({"serverType": "rstudio"}, "serverType", "must be one of"),
        ({"imagePullPolicy": "Sometimes"}, "imagePullPolicy", "must be one of"),
        ({"workspace": new_volume("ws", "relative/path")}, "workspace.mount", "absolute path"),
        ({"workspace": {"mount": "/w"}}, "workspace", "exactly one of"),
        ({"datavols": [new_volume("d", "/data/../etc")]}, "datavols[0].mount", "'.' or '..'"),
        ({"datavols": [new_volume("d", "/")]}, "datavols[0].mount", "at '/'"),
        ({"datavols": [new_volume("d", "/home/jovyan")]}, "datavols[0].mount", "Two volumes are mounted"),
        ({"datavols": [new_volume("d", "/a"), new_volume("d", "/b")]}, "datavols[1]", "used twice"),
        ({"datavols": [new_volume("Bad Name", "/d")]}, "datavols[0].newPvc.metadata.name", "DNS-1123 subdomain"),
        (
            {"datavols": [new_volume("d", "/d", "lots")]},
            "datavols[0].newPvc.spec.resources.requests.storage",
            "not a Kubernetes quantity",
        ),
        ({"datavols": [{"mount": "/d", "existingSource": {"nfs": {}}}]}, "datavols[0].existingSource", "persistentVo"),
        ({"datavols": {"mount": "/d"}}, "datavols", "must be a list"),
        ({"gpus": {"num": 1, "vendor": "example.com/tpu"}}, "gpus.vendor", "not a GPU vendor offered here"),
        ({"gpus": {"num": "1"}}, "gpus.vendor", "Choose the GPU vendor"),
        ({"gpus": {"num": "3", "vendor": "nvidia.com/gpu"}}, "gpus.num", "3 GPUs are not offered"),
        ({"gpus": {"num": "many", "vendor": "nvidia.com/gpu"}}, "gpus.num", "whole number"),
        ({"gpus": {"num": -1, "vendor": "nvidia.com/gpu"}}, "gpus.num", "whole number"),
        ({"gpus": {"num": True, "vendor": "nvidia.com/gpu"}}, "gpus.num", "whole number"),
        ({"gpus": {"num": "\u00b2", "vendor": "nvidia.com/gpu"}}, "gpus.num", "whole number"),  # a digit to str.isdigit
        ({"gpus": {"num": "1", "vendor": "nvidia.com/gpu", "fractional": "0.5"}}, "gpus.fractional", "Unknown"),
        ({"gpus": "1"}, "gpus", "must be an object"),
        ({"serverType": "group-one", "image": DEFAULTS.image}, "image", None),  # a JupyterLab image as VS Code
        ({"shm": "yes"}, "shm", "true or false"),
        ({"tolerationGroup": "gpu-nodes"}, "tolerationGroup", "No tolerationGroup options"),
        ({"environment": '{"A": "1"}'}, "environment", "cannot be set yet"),
        ({"environment": "{not json"}, "environment", "JSON object"),
        ({"configurations": ["ok", "not a label"]}, "configurations[1]", "PodDefault labels"),
        ({"configurations": [3]}, "configurations[0]", "PodDefault labels"),
        ({"affinityConfig": "big-nodes"}, "affinityConfig", "No affinityConfig options are configured"),
    ],
)
def test_each_bad_field_is_refused_by_name(change: dict[str, Any], field: str, message: str | None) -> None:
    strict = dataclasses.replace(DEFAULTS, allow_custom_image=False) if message is None else DEFAULTS
    with pytest.raises(InvalidNotebookSpec) as caught:
        parse({"name": "nb1", **change}, strict)
    assert caught.value.field == field
    assert (message or "standard images of this server type") in caught.value.message


def test_configurations_are_poddefault_labels_kept_once_in_order() -> None:
    spec = parse({"name": "nb1", "configurations": ["add-gcp-secret", "example.com/team", "add-gcp-secret"]})
    assert spec.configurations == ("add-gcp-secret", "example.com/team")


def test_unknown_nested_fields_are_named_with_their_path() -> None:
    volume = new_volume("d", "/d")
    volume["newPvc"]["spec"]["selector"] = {}
    with pytest.raises(InvalidNotebookSpec, match=r"datavols\[0\]\.newPvc\.spec\.selector") as caught:
        parse({"name": "nb1", "datavols": [volume]})
    assert caught.value.field == "datavols[0].newPvc.spec.selector"


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"cpu": None}, "cpu", "CPU: must be a Kubernetes quantity"),  # null is not "left out"; called as labelled
        ({"image": None}, "image", "image: must be a string."),
        ({"customImageCheck": "true"}, "customImageCheck", "customImageCheck: must be true or false."),
        ({"datavols": [{"mount": "/d"}]}, "datavols[0]", "exactly one of"),
        ({"datavols": [{**new_volume("d", "/d"), **existing_volume("c", "/d")}]}, "datavols[0]", "exactly one of"),
        (
            {"datavols": [{"mount": "/d", "newPvc": {"metadata": {"name": "d"}}}]},
            "datavols[0].newPvc.spec",
            "is required",
        ),
        (
            {"workspace": {"mount": "/w", "newPvc": {"spec": {"resources": {"requests": {}}}}}},
            "workspace.newPvc.spec.resources.requests.storage",
            "is required",
        ),
        (
            {"datavols": [new_volume("d", "/d") | {"size": "1Gi"}]},
            "datavols[0].size",
            "Unknown field(s): datavols[0].size.",
        ),
        (
            {
                "datavols": [
                    {
                        "mount": "/d",
                        "newPvc": {"spec": {"resources": {"requests": {"storage": "1Gi"}}, "accessModes": []}},
                    }
                ]
            },
            "datavols[0].newPvc.spec.accessModes",
            "at least 1 item",
        ),
        (
            {
                "datavols": [
                    {
                        "mount": "/d",
                        "newPvc": {
                            "spec": {"resources": {"requests": {"storage": "1Gi"}}, "accessModes": ["ReadWriteSome"]}
                        },
                    }
                ]
            },
            "datavols[0].newPvc.spec.accessModes[0]",
            "must be one of",
        ),
        (
            {
                "datavols": [
                    {"mount": "/d", "existingSource": {"persistentVolumeClaim": {"claimName": "c", "readOnly": True}}}
                ]
            },
            "datavols[0].existingSource.persistentVolumeClaim.readOnly",
            "not supported yet",
        ),
        ({"gpus": {"num": [1]}}, "gpus.num", "whole number"),
        ({"configurations": "add-gcp-secret"}, "configurations", "must be a list"),
        ({"environment": ["A=1"]}, "environment", "JSON object"),
    ],
)
def test_the_model_refuses_a_body_of_the_wrong_shape_naming_the_field(
    change: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(InvalidNotebookSpec) as caught:
        parse({"name": "nb1", **change})
    assert (caught.value.field, caught.value.code) == (field, "invalid_notebook")
    assert words in caught.value.message


def test_a_bad_image_pull_policy_in_the_config_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="imagePullPolicy"):
        check_defaults(dataclasses.replace(DEFAULTS, image_pull_policy="Sometimes"))


@pytest.mark.parametrize("body", [[], "nb1", None, 3])
def test_a_body_that_is_not_an_object_is_refused(body: object) -> None:
    with pytest.raises(InvalidNotebookSpec, match="must be a JSON object"):
        parse(body)


KUBEFLOW_CONFIG = Path(__file__).parent / "kubeflow" / "spawner_ui_config.yaml"


def kubeflow_config(**sections: dict[str, Any]) -> SpawnerConfig:
    """Kubeflow's own spawner config, with every field `readOnly` and `sections` merged in."""
    form = yaml.safe_load(KUBEFLOW_CONFIG.read_text())["spawnerFormDefaults"]
    for value in form.values():
        if isinstance(value, dict) and "readOnly" in value:
            value["readOnly"] = True
    for name, extra in sections.items():
        form[name] = {**form[name], **extra}
    return SpawnerConfig.from_mapping(form)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cpu": "100000"}, "cpu"),
        ({"memory": "1000Ti"}, "memory"),
        ({"memoryLimit": "8Ei"}, "memoryLimit"),
        ({"cpuLimit": "4"}, "cpuLimit"),
        ({"imagePullPolicy": "Always"}, "imagePullPolicy"),
        ({"workspace": new_volume("nb1-workspace", "/home/jovyan", "1Ei")}, "workspace"),
        ({"noWorkspace": True}, "noWorkspace"),
        ({"datavols": [new_volume("d", "/data")]}, "datavols"),
        ({"configurations": ["add-gcp-secret"]}, "configurations"),
    ],
)
def test_a_read_only_field_cannot_be_changed(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidNotebookSpec, match="read-only") as caught:
        parse({"name": "nb1", **change}, kubeflow_config())
    assert caught.value.field == field


def test_read_only_fields_sent_back_unchanged_are_accepted() -> None:
    defaults = kubeflow_config()
    workspace = new_volume("nb1-workspace", "/home/jovyan", "5Gi")
    echoed = {"cpu": "0.5", "memory": "1.0Gi", "imagePullPolicy": "IfNotPresent", "workspace": workspace}
    assert parse({"name": "nb1", **echoed}, defaults) == parse({"name": "nb1"}, defaults)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cpu": "9"}, "cpu"),
        ({"cpu": "4", "cpuLimit": "17"}, "cpuLimit"),
        ({"memory": "33Gi"}, "memory"),
        ({"memory": "30Gi"}, "memoryLimit"),  # its limit, 1.2 x the request, is above 32Gi
        ({"workspace": new_volume("ws", "/home/jovyan", "1Ei")}, "workspace.newPvc.spec.resources.requests.storage"),
        ({"datavols": [new_volume("d", "/d", "2Ti")]}, "datavols[0].newPvc.spec.resources.requests.storage"),
    ],
)
def test_the_admins_maximums_are_enforced_by_field(change: dict[str, Any], field: str) -> None:
    sections = {"cpu": {"max": "8", "limitMax": "16"}, "memory": {"max": "32Gi", "limitMax": "32Gi"}}
    sections |= {"workspaceVolume": {"maxSize": "100Gi"}, "dataVolumes": {"maxSize": "1Ti"}}
    defaults = dataclasses.replace(kubeflow_config(**sections), read_only=frozenset())
    with pytest.raises(InvalidNotebookSpec, match="at most") as caught:
        parse({"name": "nb1", **change}, defaults)
    assert caught.value.field == field
    assert parse({"name": "nb1", "cpu": "8", "memory": "16Gi"}, defaults).cpu == "8"  # up to the maximum is fine


def test_a_maximum_that_is_not_a_quantity_is_a_malformed_config(tmp_path: Path) -> None:
    form = yaml.safe_load(KUBEFLOW_CONFIG.read_text())
    form["spawnerFormDefaults"]["cpu"]["max"] = "lots"
    (tmp_path / "spawner.yaml").write_text(yaml.safe_dump(form))
    with pytest.raises(ValueError, match="malformed"):
        SpawnerConfig.load(tmp_path / "spawner.yaml")


# -- the rest of the web app's form: server types, GPUs, affinity, tolerations, shared memory ------

AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "lifecycle", "operator": "In", "values": ["nb"]}]}]
        }
    }
}
TOLERATIONS = [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]
CHOICES = {
    "affinityConfig": {
        "value": "",
        "options": [{"configKey": "dedicated", "displayName": "Dedicated node", "affinity": AFFINITY}],
    },
    "tolerationGroup": {
        "value": "",
        "options": [{"groupKey": "gpu", "displayName": "GPU nodes", "tolerations": TOLERATIONS}],
    },
}


def editable_kubeflow_config(**sections: dict[str, Any]) -> SpawnerConfig:
    return dataclasses.replace(kubeflow_config(**sections), read_only=frozenset())


@pytest.mark.parametrize(
    ("server_type", "image"),
    [
        ("group-one", "ghcr.io/kubeflow/kubeflow/notebook-servers/codeserver-python:latest"),
        ("group-two", "ghcr.io/kubeflow/kubeflow/notebook-servers/rstudio-tidyverse:latest"),
    ],
)
def test_each_server_type_gets_its_own_default_image(server_type: str, image: str) -> None:
    spec = parse({"name": "nb1", "serverType": server_type}, editable_kubeflow_config())
    assert (spec.server_type, spec.image) == (server_type, image)


def test_a_server_type_without_images_in_the_config_is_not_offered() -> None:
    defaults = dataclasses.replace(DEFAULTS, group_images={})
    with pytest.raises(InvalidNotebookSpec, match="not offered here") as caught:
        parse({"name": "nb1", "serverType": "group-two"}, defaults)
    assert caught.value.field == "serverType"


def test_gpus_are_a_configured_vendor_and_an_offered_count() -> None:
    spec = parse({"name": "nb1", "gpus": {"num": "2", "vendor": "amd.com/gpu"}}, editable_kubeflow_config())
    assert spec.gpus == (("amd.com/gpu", 2),)
    assert parse({"name": "nb1", "gpus": {"num": 8, "vendor": "nvidia.com/gpu"}}).gpus == (("nvidia.com/gpu", 8),)
    assert parse({"name": "nb1", "gpus": {"num": "none", "vendor": ""}}).gpus == ()


def test_gpus_without_vendors_in_the_config_are_refused() -> None:
    defaults = dataclasses.replace(DEFAULTS, gpu_vendors=())
    with pytest.raises(InvalidNotebookSpec, match="no GPU vendors are configured") as caught:
        parse({"name": "nb1", "gpus": {"num": "1", "vendor": "nvidia.com/gpu"}}, defaults)
    assert caught.value.field == "gpus"


def test_the_gpu_counts_offered_come_from_the_config() -> None:
    vendors = [{"limitsKey": "nvidia.com/gpu", "uiName": "NVIDIA"}]
    gpus: dict[str, Any] = {"value": {"vendor": "nvidia.com/gpu", "vendors": vendors, "num": "1", "counts": [1, 3]}}
    defaults = editable_kubeflow_config(gpus=gpus)
    assert parse({"name": "nb1"}, defaults).gpus == (("nvidia.com/gpu", 1),)  # the default
    assert parse({"name": "nb1", "gpus": {"num": "3", "vendor": "nvidia.com/gpu"}}, defaults).gpus[0][1] == 3
    with pytest.raises(InvalidNotebookSpec, match="choose one of 1, 3"):
        parse({"name": "nb1", "gpus": {"num": "2", "vendor": "nvidia.com/gpu"}}, defaults)


def test_affinity_and_tolerations_are_the_admins_choices_by_key() -> None:
    defaults = editable_kubeflow_config(**CHOICES)
    spec = parse({"name": "nb1", "affinityConfig": "dedicated", "tolerationGroup": "gpu"}, defaults)
    assert (spec.affinity_config, spec.affinity) == ("dedicated", AFFINITY)
    assert (spec.toleration_group, spec.tolerations) == ("gpu", tuple(TOLERATIONS))
    none = parse({"name": "nb1", "affinityConfig": "none", "tolerationGroup": ""}, defaults)
    assert (none.affinity, none.tolerations) == (None, ())
    with pytest.raises(InvalidNotebookSpec, match="not one of the affinityConfig options: dedicated") as caught:
        parse({"name": "nb1", "affinityConfig": "other"}, defaults)
    assert caught.value.field == "affinityConfig"


def test_shared_memory_follows_the_config_unless_the_form_says() -> None:
    assert parse({"name": "nb1"}).shm is True  # Kubeflow's default, and ours
    assert parse({"name": "nb1", "shm": False}).shm is False


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"gpus": {"num": "1", "vendor": "nvidia.com/gpu"}}, "gpus"),
        ({"affinityConfig": "dedicated"}, "affinityConfig"),
        ({"tolerationGroup": "gpu"}, "tolerationGroup"),
        ({"shm": False}, "shm"),
        # A fixed image is each server type's default: VS Code's is taken, another one is not.
        ({"serverType": "group-one", "customImage": "example.com/code:1"}, "customImage"),
    ],
)
def test_read_only_pod_settings_cannot_be_changed(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidNotebookSpec, match="read-only") as caught:
        parse({"name": "nb1", **change}, kubeflow_config(**CHOICES, image={"readOnly": True}))
    assert caught.value.field == field
    echoed = {"gpus": {"num": "none", "vendor": ""}, "affinityConfig": "", "tolerationGroup": "", "shm": True}
    assert parse({"name": "nb1", **echoed}, kubeflow_config(**CHOICES)).shm is True
    vs_code = parse({"name": "nb1", "serverType": "group-one"}, kubeflow_config(**CHOICES, image={"readOnly": True}))
    assert vs_code.image == "ghcr.io/kubeflow/kubeflow/notebook-servers/codeserver-python:latest"


@pytest.mark.parametrize(
    "section",
    [
        {"gpus": {"value": {"vendors": [{"limitsKey": "not a resource", "uiName": "X"}], "num": "none"}}},
        {"gpus": {"value": {"vendor": "amd.com/gpu", "vendors": [], "num": "none"}}},
        {"gpus": {"value": {"vendors": [], "num": "none", "counts": [0]}}},
        {"affinityConfig": {"value": "missing", "options": []}},
        {"tolerationGroup": {"value": "", "options": [{"groupKey": "g", "tolerations": {"not": "a list"}}]}},
    ],
)
def test_a_malformed_pod_section_is_a_malformed_config(tmp_path: Path, section: dict[str, Any]) -> None:
    form = yaml.safe_load(KUBEFLOW_CONFIG.read_text())
    form["spawnerFormDefaults"] |= section
    (tmp_path / "spawner.yaml").write_text(yaml.safe_dump(form))
    with pytest.raises(ValueError, match="malformed"):
        SpawnerConfig.load(tmp_path / "spawner.yaml")


@pytest.mark.parametrize(
    ("section", "words"),
    [
        ({"cpu": {"limitFactor": "1.2"}}, r"cpu\.value: Field required"),
        (
            {"gpus": {"value": {"vendors": [{"uiName": "NVIDIA"}]}}},
            r"gpus\.value\.vendors\[0\]\.limitsKey: Field required",
        ),
        (
            {"affinityConfig": {"options": [{"configKey": "big", "affinity": []}]}},
            r"affinityConfig\.options\[0\]\.affinity",
        ),
        ({"shm": {"value": "sometimes"}}, r"shm\.value: Input should be a valid boolean"),
        (
            {"workspaceVolume": {"value": {"mount": ["/home"]}}},
            r"workspaceVolume\.value\.mount: Input should be a valid string",
        ),
    ],
)
def test_a_malformed_config_names_the_key_at_fault(tmp_path: Path, section: dict[str, Any], words: str) -> None:
    form = yaml.safe_load(KUBEFLOW_CONFIG.read_text())
    form["spawnerFormDefaults"] |= section
    (tmp_path / "spawner.yaml").write_text(yaml.safe_dump(form))
    with pytest.raises(ValueError, match=words):
        SpawnerConfig.load(tmp_path / "spawner.yaml")


def test_numbers_in_the_config_are_read_as_text_and_unknown_keys_are_left_alone(tmp_path: Path) -> None:
    form = yaml.safe_load(KUBEFLOW_CONFIG.read_text())
    form["spawnerFormDefaults"]["cpu"] |= {"value": 0.5, "limitFactor": 2, "max": 8}
    form["spawnerFormDefaults"]["somethingNew"] = {"value": "a later web app's"}
    (tmp_path / "spawner.yaml").write_text(yaml.safe_dump(form))
    config = SpawnerConfig.load(tmp_path / "spawner.yaml")
    assert (config.cpu, config.cpu_limit_factor, config.maximums["cpu"]) == ("0.5", "2", "8")


# -- the config's default data volumes and configurations (`dataVolumes.value`, `configurations.value`)

DEFAULT_VOLUMES = [
    new_volume("{notebook-name}-datavol-1", "/home/jovyan/datavol-1", "5Gi"),
    existing_volume("team-data", "/home/jovyan/shared"),
]
DEFAULT_SECTIONS: dict[str, dict[str, Any]] = {
    "dataVolumes": {"value": DEFAULT_VOLUMES, "readOnly": False},
    "configurations": {"value": ["add-gcp-secret"], "readOnly": False},
}


def test_a_body_without_volumes_or_configurations_gets_the_configs_defaults() -> None:
    defaults = dataclasses.replace(kubeflow_config(**DEFAULT_SECTIONS), read_only=frozenset())
    spec = parse({"name": "nb1"}, defaults)
    assert spec.data_volumes == (
        Volume(name="nb1-datavol-1", mount_path="/home/jovyan/datavol-1", size="5Gi"),  # {notebook-name} filled in
        Volume(name="team-data", mount_path="/home/jovyan/shared", existing=True),
    )
    assert spec.configurations == ("add-gcp-secret",)
    # The user removed them in the form: what the body says is what they get.
    spec = parse({"name": "nb1", "datavols": [], "configurations": []}, defaults)
    assert (spec.data_volumes, spec.configurations) == ((), ())


def test_read_only_default_volumes_and_configurations_are_kept_and_cannot_be_changed() -> None:
    defaults = kubeflow_config(
        **{section: {**values, "readOnly": True} for section, values in DEFAULT_SECTIONS.items()},
        image={"readOnly": False},
    )
    spec = parse({"name": "nb2"}, defaults)
    assert [volume.name for volume in spec.data_volumes] == ["nb2-datavol-1", "team-data"]
    assert spec.configurations == ("add-gcp-secret",)
    assert parse({"name": "nb2", "datavols": DEFAULT_VOLUMES, "configurations": ["add-gcp-secret"]}, defaults) == spec
    changes: list[tuple[dict[str, Any], str]] = [
        ({"datavols": []}, "datavols"),
        ({"configurations": []}, "configurations"),
    ]
    for change, field in changes:
        with pytest.raises(InvalidNotebookSpec, match="read-only") as caught:
            parse({"name": "nb2", **change}, defaults)
        assert caught.value.field == field


@pytest.mark.parametrize(
    ("section", "words"),
    [
        ({"dataVolumes": {"value": [{"mount": "relative/path", "newPvc": {}}]}}, "mount path"),
        ({"dataVolumes": {"value": [new_volume("Not A Name", "/data")]}}, "DNS-1123"),
        ({"configurations": {"value": ["bad label!"]}}, "PodDefault labels"),
        ({"dataVolumes": {"value": "a volume"}}, r"dataVolumes\.value: Input should be a valid list"),
        ({"dataVolumes": {"value": ["a volume"]}}, r"dataVolumes\.value\[0\]: Input should be a valid dictionary"),
        (
            {"configurations": {"value": [{"label": "x"}]}},
            r"configurations\.value\[0\]: Input should be a valid string",
        ),
    ],
)
def test_a_bad_default_stops_the_gateway_at_start(section: dict[str, Any], words: str, tmp_path: Path) -> None:
    form = yaml.safe_load(KUBEFLOW_CONFIG.read_text())["spawnerFormDefaults"]
    for name, extra in section.items():
        form[name] = {**form[name], **extra}
    path = tmp_path / "spawner_ui_config.yaml"
    path.write_text(yaml.safe_dump({"spawnerFormDefaults": form}))
    with pytest.raises(ValueError, match=words):
        check_defaults(SpawnerConfig.load(path))
