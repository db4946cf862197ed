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
from pydantic import BaseModel, ConfigDict, ValidationError

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
        """`spawnerFormDefaults` read through `SpawnerFile`; raises ValueError naming the key at fault."""
        try:
            file = SpawnerFile.model_validate(form)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
            raise ValueError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None
        workspace = file.workspaceVolume.value if file.workspaceVolume else None
        workspace = workspace or Workspace()
        new_pvc = workspace.newPvc
        affinity, tolerations = file.affinityConfig or Affinities(), file.tolerationGroup or Tolerations()
        affinities = tuple(
            PodChoice(option.configKey, option.displayName or option.configKey, option.affinity)
            for option in affinity.options or ()
        )
        toleration_groups = tuple(
            PodChoice(option.groupKey, option.displayName or option.groupKey, option.tolerations)
            for option in tolerations.options or ()
        )
        return cls(
            image=file.image.value,
            images=tuple(file.image.options or ()),
            allow_custom_image=file.allowCustomImage,
            cpu=file.cpu.value,
            memory=file.memory.value,
            cpu_limit_factor=_opt_str(file.cpu.limitFactor),
            memory_limit_factor=_opt_str(file.memory.limitFactor),
            image_pull_policy=file.imagePullPolicy.value if file.imagePullPolicy else "IfNotPresent",
            workspace_mount=workspace.mount,
            workspace_name_template=new_pvc.metadata.name,
            workspace_size=new_pvc.spec.resources.requests.storage,
            workspace_access_mode=(new_pvc.spec.accessModes or ["ReadWriteOnce"])[0],
            read_only=frozenset(
                key
                for section, keys in READ_ONLY_FIELDS.items()
                if (part := getattr(file, section)) is not None and part.readOnly
                for key in keys
            ),
            maximums=_maximums(file),
            group_images=_group_images(file),
            **_gpus(file.gpus.value if file.gpus else None),
            affinity_default=_choice_default(affinity.value, affinities),
            affinity_options=affinities,
            toleration_default=_choice_default(tolerations.value, toleration_groups),
            toleration_options=toleration_groups,
            shm=bool(file.shm and file.shm.value),
            data_volumes=tuple(file.dataVolumes.value or ()) if file.dataVolumes else (),
            configurations=tuple(file.configurations.value or ()) if file.configurations else (),
            hide_registry=file.hideRegistry,
            hide_tag=file.hideTag,
        )


# -- the file's shape ------------------------------------------------------------------------------
# `spawnerFormDefaults` as models. An admin's YAML: numbers where text is meant are taken as text, and keys
# the gateway does not read are ignored (Kubeflow's own file has some). What a type cannot say (a default
# among its options, a vendor's resource name, the maximums as quantities) is checked by the functions below;
# the default volumes and configurations are checked as a body's are (`notebook_form.check_defaults`).


class Part(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)


class Section(Part):
    readOnly: bool = False  # the user must leave the field at its default


class Images(Section):
    value: str
    options: list[str] | None = None


class ImageGroup(Images):
    value: str = ""  # default: the first option


class Resource(Section):
    value: str
    limitFactor: str | None = None
    max: str | None = None
    limitMax: str | None = None


class TextSetting(Section):
    value: str = "IfNotPresent"


class Storage(Part):
    storage: str = "5Gi"


class StorageResources(Part):
    requests: Storage = Storage()


class PvcSpec(Part):
    resources: StorageResources = StorageResources()
    accessModes: list[str] | None = None


class PvcName(Part):
    name: str = "{notebook-name}-workspace"


class NewPvc(Part):
    metadata: PvcName = PvcName()
    spec: PvcSpec = PvcSpec()


class Workspace(Part):
    mount: str = "/home/jovyan"
    newPvc: NewPvc = NewPvc()


class WorkspaceSection(Section):
    value: Workspace | None = None
    maxSize: str | None = None


class DataVolumes(Section):
    # As the web app's body writes volumes; checked as a body's are when the app starts (`check_defaults`).
    value: list[dict[str, Any]] | None = None
    maxSize: str | None = None


class Vendor(Part):
    limitsKey: str
    uiName: str | None = None  # default: the limitsKey


class Gpus(Part):
    vendor: str | None = None  # the default vendor's limitsKey; none: no default
    vendors: list[Vendor] | None = None
    num: str = "none"
    counts: list[int] | None = None  # the gateway's: the counts the form offers


class GpuSection(Section):
    value: Gpus | None = None


class AffinityChoice(Part):
    configKey: str
    displayName: str | None = None
    affinity: dict[str, Any]  # a Kubernetes Affinity, as the admin wrote it


class TolerationChoice(Part):
    groupKey: str
    displayName: str | None = None
    tolerations: list[Any]  # Kubernetes Tolerations, as the admin wrote them


class Affinities(Section):
    value: str | None = None
    options: list[AffinityChoice] | None = None


class Tolerations(Section):
    value: str | None = None
    options: list[TolerationChoice] | None = None


class Switch(Section):
    value: bool | None = None


class Labels(Section):
    value: list[str] | None = None


class SpawnerFile(Part):
    """Kubeflow's `spawner_ui_config.yaml` `spawnerFormDefaults`, the sections the gateway reads."""

    image: Images
    imageGroupOne: ImageGroup | None = None
    imageGroupTwo: ImageGroup | None = None
    allowCustomImage: bool = True
    imagePullPolicy: TextSetting | None = None
    cpu: Resource
    memory: Resource
    workspaceVolume: WorkspaceSection | None = None
    dataVolumes: DataVolumes | None = None
    gpus: GpuSection | None = None
    affinityConfig: Affinities | None = None
    tolerationGroup: Tolerations | None = None
    shm: Switch | None = None
    configurations: Labels | None = None
    hideRegistry: bool = False
    hideTag: bool = False


def _group_images(file: SpawnerFile) -> dict[str, tuple[str, tuple[str, ...]]]:
    """VS Code's and RStudio's images (`imageGroupOne`, `imageGroupTwo`), for the groups that have any."""
    found = {}
    for server_type, group in (("group-one", file.imageGroupOne), ("group-two", file.imageGroupTwo)):
        if group is None:
            continue
        options = tuple(group.options or ())
        default = group.value or (options[0] if options else "")
        if default:
            found[server_type] = (default, options or (default,))
    return found


def _gpus(value: Gpus | None) -> dict[str, Any]:
    """`gpus.value`: `vendors` ({limitsKey, uiName}), the default `vendor` and `num`, and our `counts`."""
    if value is None:
        return {}
    vendors = tuple(GpuVendor(vendor.limitsKey, vendor.uiName or vendor.limitsKey) for vendor in value.vendors or ())
    for vendor in vendors:  # it becomes a key of the container's resource limits
        if not _RESOURCE_NAME.fullmatch(vendor.limits_key):
            raise ValueError(f"gpus vendor {vendor.limits_key!r} is not a resource name such as nvidia.com/gpu")
    counts = tuple(value.counts or GPU_COUNTS)
    if any(count < 1 or count > MAX_GPU_COUNT for count in counts):
        raise ValueError(f"gpus counts must be whole numbers from 1 to {MAX_GPU_COUNT}")
    default_num = 0 if value.num in ("none", "", "0") else int(value.num)
    if value.vendor and value.vendor not in {v.limits_key for v in vendors}:
        raise ValueError(f"the default gpus vendor {value.vendor!r} is not among the vendors")
    return {"gpu_vendors": vendors, "gpu_vendor": value.vendor or "", "gpu_num": default_num, "gpu_counts": counts}


def _choice_default(value: str | None, options: tuple[PodChoice, ...]) -> str:
    default = "" if value in (None, "", "none") else str(value)
    if default and default not in {option.key for option in options}:
        raise ValueError(f"the default {default!r} is not among the options")
    return default


def _maximums(file: SpawnerFile) -> dict[str, str]:
    """Form key -> the admin's maximum, from `cpu.max`, `cpu.limitMax`, `memory.max`, `memory.limitMax`,
    `workspaceVolume.maxSize` and `dataVolumes.maxSize`. Checked by `parse_quantity` at load time."""
    where = {
        "cpu": file.cpu.max,
        "cpuLimit": file.cpu.limitMax,
        "memory": file.memory.max,
        "memoryLimit": file.memory.limitMax,
        "workspace": file.workspaceVolume.maxSize if file.workspaceVolume else None,
        "datavols": file.dataVolumes.maxSize if file.dataVolumes else None,
    }
    found = {}
    for key, given in where.items():
        value = _opt_str(given)
        if value is not None:
            parse_quantity(value)  # a ValueError here is a malformed file
            found[key] = value
    return found


def _opt_str(value: object) -> str | None:
    return None if value in (None, "", "none") else str(value)
