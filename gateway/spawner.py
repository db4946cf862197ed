"""The spawner form's defaults and standard images, read from a file shaped like Kubeflow's
`spawner_ui_config.yaml` (only `spawnerFormDefaults` matters to us): each field's `value`, whether it is
`readOnly` (the user cannot change it), the images of each server type (`image`, `imageGroupOne` for
VS Code, `imageGroupTwo` for RStudio), the GPU vendors, the affinity and toleration choices, shared
memory, and the admin's maximums, which Kubeflow's file lacks: `max` and `limitMax` under `cpu` and
`memory`, `maxSize` under `workspaceVolume` and `dataVolumes`, and `gpus.value.counts` (the GPU counts
offered; Kubeflow's form offers 1, 2, 4 and 8)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .quantities import parse_quantity

# A Kubernetes resource name with a domain prefix, as an extended resource's is (nvidia.com/gpu).
_RESOURCE_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")

DEFAULT_FILE = "spawner_ui_config.yaml"
# The web app's server types, and the config section holding each one's images.
SERVER_TYPES = {"jupyter": "image", "group-one": "imageGroupOne", "group-two": "imageGroupTwo"}
GPU_COUNTS = (1, 2, 4, 8)  # what the web app's GPU dropdown offers unless `gpus.value.counts` says otherwise
MAX_GPU_COUNT = 64
# The spawner config's fields that may be `readOnly`, as the form's keys name them.
READ_ONLY_FIELDS = {
    "image": ("image", "customImage"),
    "imagePullPolicy": ("imagePullPolicy",),
    "cpu": ("cpu", "cpuLimit"),
    "memory": ("memory", "memoryLimit"),
    "workspaceVolume": ("workspace", "noWorkspace"),
    "dataVolumes": ("datavols",),
    "configurations": ("configurations",),
    "gpus": ("gpus",),
    "affinityConfig": ("affinityConfig",),
    "tolerationGroup": ("tolerationGroup",),
    "shm": ("shm",),
}


@dataclass(frozen=True, slots=True)
class GpuVendor:
    """A device plugin's resource (`limitsKey`, e.g. nvidia.com/gpu) and the name the form shows."""

    limits_key: str
    ui_name: str


@dataclass(frozen=True, slots=True)
class PodChoice:
    """An affinity config (`configKey`, `affinity`) or a toleration group (`groupKey`, `tolerations`):
    the key the form sends, the name it shows, and what goes into the pod spec, as the admin wrote it."""

    key: str
    display_name: str
    value: Any  # the affinity object, or the list of tolerations


@dataclass(frozen=True, slots=True)
class SpawnerConfig:
    image: str
    images: tuple[str, ...]
    allow_custom_image: bool
    cpu: str
    memory: str
    cpu_limit_factor: str | None
    memory_limit_factor: str | None
    image_pull_policy: str
    workspace_mount: str
    workspace_name_template: str  # "{notebook-name}-workspace"
    workspace_size: str
    workspace_access_mode: str
    read_only: frozenset[str] = frozenset()  # the form's keys the user must leave at their defaults
    # The admin's ceilings (Kubernetes quantities; None: none): requests, limits and new volumes' sizes.
    maximums: dict[str, str] = field(default_factory=dict)  # form key -> quantity, e.g. {"cpu": "8"}
    # Server types other than JupyterLab: server type -> (default image, the images offered); a type
    # with no images is not offered.
    group_images: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    gpu_vendors: tuple[GpuVendor, ...] = ()  # none: GPUs cannot be asked for
    gpu_vendor: str = ""  # the default vendor's limitsKey
    gpu_num: int = 0  # the default count (0: "none")
    gpu_counts: tuple[int, ...] = GPU_COUNTS
    affinity_default: str = ""  # a configKey, or "" for none
    affinity_options: tuple[PodChoice, ...] = ()
    toleration_default: str = ""  # a groupKey, or "" for none
    toleration_options: tuple[PodChoice, ...] = ()
    shm: bool = False  # mount a memory-backed /dev/shm (the web app's "Enable Shared Memory")
    # `dataVolumes.value`: the data volumes a new server starts with, as the web app's body writes them
    # ({mount, newPvc | existingSource}; `{notebook-name}` in a new claim's name becomes the server's name).
    data_volumes: tuple[dict[str, Any], ...] = ()
    configurations: tuple[str, ...] = ()  # `configurations.value`: the PodDefault labels chosen by default
    hide_registry: bool = False  # show images without their registry...
    hide_tag: bool = False  # ...or without their tag (display only)

    @property
    def server_types(self) -> tuple[str, ...]:
        """The server types offered: JupyterLab always, the others when they have images."""
        return ("jupyter", *(kind for kind in ("group-one", "group-two") if kind in self.group_images))

    def images_for(self, server_type: str) -> tuple[str, tuple[str, ...]]:
        """(default image, standard images) of a server type."""
        if server_type == "jupyter":
            return self.image, self.images
        return self.group_images.get(server_type, ("", ()))

    def gpu_vendor_named(self, limits_key: str) -> GpuVendor | None:
        return next((vendor for vendor in self.gpu_vendors if vendor.limits_key == limits_key), None)

    @classmethod
    def load(cls, path: Path | None = None) -> SpawnerConfig:
        """Read `path`, or the copy shipped with the gateway. Raises ValueError on a malformed file."""
        if path is None:
            text = resources.files("gateway").joinpath(DEFAULT_FILE).read_text()
        else:
            try:
                text = path.read_text()
            except OSError as exc:  # e.g. unreadable: a clear line at start, not a traceback
                raise ValueError(f"spawner config {path} cannot be read: {exc.strerror or exc}") from None
        try:
            return cls.from_mapping(yaml.safe_load(text)["spawnerFormDefaults"])
        except (AttributeError, KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
            raise ValueError(f"spawner config {path or DEFAULT_FILE} is malformed: {exc!r}") from exc

    @classmethod
    def from_mapping(cls, form: dict[str, Any]) -> SpawnerConfig:
        workspace = form.get("workspaceVolume", {}).get("value", {}) or {}
        new_pvc = workspace.get("newPvc", {})
        return cls(
            image=str(form["image"]["value"]),
            images=tuple(str(i) for i in form["image"].get("options", [])),
            allow_custom_image=bool(form.get("allowCustomImage", True)),
            cpu=str(form["cpu"]["value"]),
            memory=str(form["memory"]["value"]),
            cpu_limit_factor=_opt_str(form["cpu"].get("limitFactor")),
            memory_limit_factor=_opt_str(form["memory"].get("limitFactor")),
            image_pull_policy=str(form.get("imagePullPolicy", {}).get("value", "IfNotPresent")),
            workspace_mount=str(workspace.get("mount", "/home/jovyan")),
            workspace_name_template=str(new_pvc.get("metadata", {}).get("name", "{notebook-name}-workspace")),
            workspace_size=str(new_pvc.get("spec", {}).get("resources", {}).get("requests", {}).get("storage", "5Gi")),
            workspace_access_mode=str((new_pvc.get("spec", {}).get("accessModes") or ["ReadWriteOnce"])[0]),
            read_only=frozenset(
                key
                for section, keys in READ_ONLY_FIELDS.items()
                if isinstance(form.get(section), dict) and form[section].get("readOnly") is True
                for key in keys
            ),
            maximums=_maximums(form),
            group_images=_group_images(form),
            **_gpus(form.get("gpus")),
            affinity_default=_choice_default(
                form.get("affinityConfig"),
                affinities := _choices(form.get("affinityConfig"), "configKey", "affinity", dict),
            ),
            affinity_options=affinities,
            toleration_default=_choice_default(
                form.get("tolerationGroup"),
                tolerations := _choices(form.get("tolerationGroup"), "groupKey", "tolerations", list),
            ),
            toleration_options=tolerations,
            shm=bool((form.get("shm") or {}).get("value", False)),
            data_volumes=tuple(_default_list(form.get("dataVolumes"), dict, "dataVolumes")),
            configurations=tuple(_default_list(form.get("configurations"), str, "configurations")),
            hide_registry=bool(form.get("hideRegistry", False)),
            hide_tag=bool(form.get("hideTag", False)),
        )


def _group_images(form: dict[str, Any]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """VS Code's and RStudio's images (`imageGroupOne`, `imageGroupTwo`), for the groups that have any."""
    found = {}
    for server_type, section in SERVER_TYPES.items():
        group = form.get(section)
        if server_type == "jupyter" or not isinstance(group, dict):
            continue
        options = tuple(str(image) for image in group.get("options") or [])
        default = str(group.get("value") or (options[0] if options else ""))
        if default:
            found[server_type] = (default, options or (default,))
    return found


def _gpus(section: object) -> dict[str, Any]:
    """`gpus.value`: `vendors` ({limitsKey, uiName}), the default `vendor` and `num`, and our `counts`."""
    value = section.get("value") if isinstance(section, dict) else None
    if not isinstance(value, dict):
        return {}
    vendors = tuple(
        GpuVendor(limits_key=str(vendor["limitsKey"]), ui_name=str(vendor.get("uiName") or vendor["limitsKey"]))
        for vendor in value.get("vendors") or []
    )
    for vendor in vendors:  # it becomes a key of the container's resource limits
        if not _RESOURCE_NAME.fullmatch(vendor.limits_key):
            raise ValueError(f"gpus vendor {vendor.limits_key!r} is not a resource name such as nvidia.com/gpu")
    counts = tuple(int(count) for count in value.get("counts") or GPU_COUNTS)
    if not counts or any(count < 1 or count > MAX_GPU_COUNT for count in counts):
        raise ValueError(f"gpus counts must be whole numbers from 1 to {MAX_GPU_COUNT}")
    num = str(value.get("num", "none"))
    default_num = 0 if num in ("none", "", "0") else int(num)
    default_vendor = str(value.get("vendor") or "")
    if default_vendor and default_vendor not in {v.limits_key for v in vendors}:
        raise ValueError(f"the default gpus vendor {default_vendor!r} is not among the vendors")
    return {"gpu_vendors": vendors, "gpu_vendor": default_vendor, "gpu_num": default_num, "gpu_counts": counts}


def _default_list(section: object, kind: type, name: str) -> list[Any]:
    """A section's `value` that is a list (data volumes, configurations), each item of `kind`. What is
    in them is checked as a request's body is, when the app starts (`notebook_form.check_defaults`)."""
    value = section.get("value") if isinstance(section, dict) else None
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, kind) for item in value):
        raise ValueError(f"{name}.value must be a list of {kind.__name__}")
    return value


def _choice_default(section: object, options: tuple[PodChoice, ...]) -> str:
    value = section.get("value") if isinstance(section, dict) else None
    default = "" if value in (None, "", "none") else str(value)
    if default and default not in {option.key for option in options}:
        raise ValueError(f"the default {default!r} is not among the options")
    return default


def _choices(section: object, key: str, content: str, kind: type) -> tuple[PodChoice, ...]:
    """An affinity config's or toleration group's `options`, each with its key, name and content."""
    options = section.get("options") if isinstance(section, dict) else None
    choices = []
    for option in options or []:
        if not isinstance(option.get(content), kind):
            raise ValueError(f"option {option.get(key)!r} needs {content!r} ({kind.__name__})")
        name = str(option[key])
        choices.append(PodChoice(key=name, display_name=str(option.get("displayName") or name), value=option[content]))
    return tuple(choices)


def _maximums(form: dict[str, Any]) -> dict[str, str]:
    """Form key -> the admin's maximum, from `cpu.max`, `cpu.limitMax`, `memory.max`, `memory.limitMax`,
    `workspaceVolume.maxSize` and `dataVolumes.maxSize`. Checked by `parse_quantity` at load time."""
    where = {
        "cpu": ("cpu", "max"),
        "cpuLimit": ("cpu", "limitMax"),
        "memory": ("memory", "max"),
        "memoryLimit": ("memory", "limitMax"),
        "workspace": ("workspaceVolume", "maxSize"),
        "datavols": ("dataVolumes", "maxSize"),
    }
    found = {}
    for key, (section, name) in where.items():
        value = _opt_str((form.get(section) or {}).get(name))
        if value is not None:
            parse_quantity(value)  # a ValueError here is a malformed file
            found[key] = value
    return found


def _opt_str(value: object) -> str | None:
    return None if value in (None, "", "none") else str(value)
