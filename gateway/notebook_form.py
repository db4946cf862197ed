"""The new-notebook form (the Jupyter web app's JSON body) checked and turned into a `NotebookSpec`.

Pure: no I/O and no aiohttp, so the JSON API and the HTML form share it. The body's shape is the model
`NewNotebook` (also what /api/openapi.json describes); what depends on the spawner config is code. Every
problem is an `InvalidNotebookSpec` naming the field at fault; a request is either fully valid or refused.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from .backends import NotebookSpec, Volume
from .body_models import Model, parse_body
from .errors import Forbidden, InvalidNotebookSpec
from .names import is_dns_label, is_dns_subdomain
from .quantities import parse_quantity, scale_quantity
from .spawner import SERVER_TYPES as SPAWNER_SERVER_TYPES
from .spawner import PodChoice, SpawnerConfig

SERVER_TYPES = tuple(SPAWNER_SERVER_TYPES)  # jupyter (JupyterLab), group-one (VS Code), group-two (RStudio)
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")
NAME_PLACEHOLDER = "{notebook-name}"

# A container image reference as Docker's distribution/reference grammar has it:
# [registry[:port]/]path[/path...][:tag][@sha256:digest], e.g. ghcr.io/org/image:1.0.
_HOST_PART = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_PATH_PART = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
IMAGE_REFERENCE = re.compile(
    rf"(?:{_HOST_PART}(?:\.{_HOST_PART})*(?::[0-9]+)?/)?"
    rf"{_PATH_PART}(?:/{_PATH_PART})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@sha256:[a-f0-9]{64})?"
)
MAX_IMAGE_CHARS = 512
MAX_MOUNT_PATH_CHARS = 1024
# A label key: an optional DNS subdomain prefix and "/", then a name of at most 63 characters.
LABEL_KEY = re.compile(r"(?:[a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
MAX_LABEL_KEY_CHARS = 317


# -- the body's shape ------------------------------------------------------------------------------
# What the Jupyter web app's form sends (kubeflow/notebooks, NotebookFormObject, after its getSubmitNotebook()
# clean-up), as models: the types, the nested volumes and GPUs, anything else refused. A field left out takes
# the spawner config's default, so "given or not" is `model_fields_set`, and what needs the config (defaults,
# readOnly, maximums, the offered images, GPUs and pod options) is checked by the code below the models.


def _positive_quantity(value: object) -> str:
    """A quantity the web app may send as a string or, for CPU, as a number."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("must be a Kubernetes quantity such as 500m or 1.5Gi")
    text = value if isinstance(value, str) else str(value)
    if parse_quantity(text) <= 0:  # its ValueError says why the text is not a quantity
        raise ValueError(f"must be greater than zero; got {text!r}")
    return text


def _limit_quantity(value: object) -> object:
    return value if value == "" else _positive_quantity(value)  # "": request x the limit factor


def _notebook_name(value: str) -> str:
    if len(value) > 63:
        raise ValueError("must be at most 63 characters long")
    if not is_dns_label(value):
        raise ValueError(
            f"{value!r} is not a DNS-1123 label: use lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value


def _mount_path(value: str) -> str:
    """An absolute path without `.`/`..` segments or control characters, with `//` collapsed."""
    if not value.startswith("/"):
        raise ValueError("the mount path must be an absolute path such as /home/jovyan/data")
    if len(value) > MAX_MOUNT_PATH_CHARS or any(ord(ch) < 0x20 or ord(ch) == 0x7F or ch == "\\" for ch in value):
        raise ValueError("the mount path contains characters that are not allowed")
    segments = [segment for segment in value.split("/") if segment]
    if "." in segments or ".." in segments:
        raise ValueError("the mount path must not contain '.' or '..' segments")
    if not segments:
        raise ValueError("a volume cannot be mounted at '/'")
    return posixpath.join("/", *segments)


def _label_key(value: object) -> object:
    if not isinstance(value, str) or len(value) > MAX_LABEL_KEY_CHARS or LABEL_KEY.fullmatch(value) is None:
        raise ValueError("must name a configuration: PodDefault labels look like add-gcp-secret")
    return value


def _gpu_count(value: object) -> object:
    """`"none"`, `""`, or a whole number (the web app sends it as text) of at most three digits."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if text in ("none", "") or isinstance(text, str) and text.isascii() and text.isdigit() and len(text) < 4:
        return text
    raise ValueError("must be 'none' or a whole number")


def _environment(value: object) -> object:
    """The web app sends the environment as a JSON object in a string; plain objects are fine too."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError:
            value = None
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object of NAME: value")
    return value


# Numbers are taken as their text (the web app sends CPU as a number); the models hold the text.
NUMBER_OR_TEXT = {"type": ["string", "number"]}
Quantity = Annotated[
    str,
    BeforeValidator(_positive_quantity),
    WithJsonSchema({**NUMBER_OR_TEXT, "description": "A Kubernetes quantity, e.g. 500m, 1.5Gi or 2."}),
]
LimitQuantity = Annotated[str, BeforeValidator(_limit_quantity), WithJsonSchema(NUMBER_OR_TEXT)]
MountPath = Annotated[str, AfterValidator(_mount_path)]
AccessMode = Literal[ACCESS_MODES]  # type: ignore[valid-type]


class PvcName(Model):
    name: str = Field("", description="A DNS-1123 subdomain; `{notebook-name}` is replaced.")


class StorageRequest(Model):
    storage: Quantity


class StorageResources(Model):
    requests: StorageRequest


class PvcSpec(Model):
    resources: StorageResources
    accessModes: list[AccessMode] = Field(
        default_factory=list, min_length=1, max_length=1, description="One mode; default: the workspace's."
    )
    # Accepted for the web app's sake; `Volume` has no place for it yet.
    storageClassName: str = ""


class NewPvc(Model):
    metadata: PvcName = PvcName()
    spec: PvcSpec


class ClaimSource(Model):
    claimName: str = Field(description="An existing PersistentVolumeClaim of the namespace.")
    readOnly: bool = False

    @field_validator("readOnly")
    @classmethod
    def _writable(cls, value: bool) -> bool:
        if value:
            raise ValueError("read-only volume mounts are not supported yet")
        return value


class ExistingSource(Model):
    persistentVolumeClaim: ClaimSource

    @model_validator(mode="before")
    @classmethod
    def _a_claim(cls, data: object) -> object:
        if not isinstance(data, dict) or set(data) != {"persistentVolumeClaim"}:
            raise ValueError("must be a persistentVolumeClaim source")
        return data


class VolumeSource(Model):
    """A volume to mount: a new claim, or an existing one (`{"persistentVolumeClaim": {"claimName"}}`)."""

    mount: MountPath = Field(description="An absolute path without `.` or `..` segments.")
    newPvc: NewPvc | None = None
    existingSource: ExistingSource | None = None

    @model_validator(mode="after")
    def _exactly_one_source(self) -> VolumeSource:
        if (self.newPvc is None) == (self.existingSource is None):
            raise ValueError("needs exactly one of 'newPvc' or 'existingSource'")
        return self


class GpuRequest(Model):
    num: Annotated[str, BeforeValidator(_gpu_count), WithJsonSchema({"type": ["string", "integer"]})] = Field(
        "none", description='`"none"` or a count the configuration offers (a number or its text).'
    )
    vendor: str = Field("", description="A vendor's `limitsKey`, e.g. `nvidia.com/gpu`; default: the config's.")


def _no_defaults(schema: dict[str, Any]) -> None:
    """The defaults are the spawner configuration's (GET /api/config), not the model's placeholders."""
    properties = schema.get("properties")
    for field in properties.values() if isinstance(properties, dict) else ():
        field.pop("default", None)


class NewNotebook(Model):
    """The NEW SERVER form's fields (Kubeflow's Jupyter web app form); any other field is refused. All but
    `name` default to the gateway's spawner configuration (GET /api/config); a field the configuration
    makes `readOnly` may only be left out or sent as its default."""

    model_config = ConfigDict(json_schema_extra=_no_defaults)

    name: Annotated[str, AfterValidator(_notebook_name)] = Field(description="A DNS-1123 label.")
    namespace: str = Field("", description="The URL's namespace, if given.")
    serverType: Literal[(*SERVER_TYPES, "")] = Field(  # type: ignore[valid-type]
        "", description="JupyterLab, VS Code or RStudio (one the configuration has images for); empty: jupyter."
    )
    image: str = ""
    customImage: str = ""
    customImageCheck: bool = Field(True, description="Use `customImage` (when the configuration allows it).")
    allowCustomImage: bool = Field(False, description="Echoed by the web app; the configuration decides.")
    imagePullPolicy: Literal[(*PULL_POLICIES, "")] = ""  # type: ignore[valid-type]
    # Titles: what a refusal calls the field, as the form labels it.
    cpu: Quantity = Field("", title="CPU", description="The CPU request, a quantity or a number.")
    cpuLimit: LimitQuantity | None = Field(
        None, title="CPU limit", description="At least `cpu`; empty or null: `cpu` x the limit factor."
    )
    memory: Quantity = Field("", title="Memory", description="The memory request, a quantity such as 1Gi.")
    memoryLimit: LimitQuantity | None = Field(
        None, title="Memory limit", description="At least `memory`; empty or null: `memory` x the limit factor."
    )
    gpus: GpuRequest = GpuRequest()
    affinityConfig: str = Field("", description="An affinity option's `configKey`, or `none`.")
    tolerationGroup: str = Field("", description="A toleration group's `groupKey`, or `none`.")
    shm: bool = Field(False, description="Mount a memory-backed /dev/shm.")
    configurations: list[Annotated[str, BeforeValidator(_label_key)]] = Field(
        default_factory=list, description="PodDefault labels to apply."
    )
    environment: Annotated[
        dict[str, Any],
        BeforeValidator(_environment),
        WithJsonSchema({"type": ["string", "object"], "description": "Not supported yet: must be empty."}),
    ] = {}
    noWorkspace: bool = False
    workspace: VolumeSource | None = Field(None, description="null: no workspace volume.")
    datavols: list[VolumeSource] = Field(default_factory=list)


# -- checks that need the spawner config -----------------------------------------------------------


def parse_notebook_form(body: object, *, namespace: str, defaults: SpawnerConfig) -> NotebookSpec:
    """Check a create request for `namespace` and fill in what it left out from `defaults`.

    Raises `InvalidNotebookSpec` (with `field` set) for the first problem found.
    """
    form = parse_body(NewNotebook, body, error=InvalidNotebookSpec)
    given = form.model_fields_set
    name = form.name
    if "namespace" in given and form.namespace != namespace:
        raise InvalidNotebookSpec(
            f"The body's namespace {form.namespace[:100]!r} differs from the URL's {namespace!r}.", field="namespace"
        )
    server_type = form.serverType or "jupyter"  # the web app sends "" for "not chosen"
    if server_type not in defaults.server_types:
        raise InvalidNotebookSpec(
            f"The server type {server_type} is not offered here: it has no images in the spawner config.",
            field="serverType",
        )
    image = _image(form, defaults, server_type)
    cpu = form.cpu if "cpu" in given else _default_quantity(defaults.cpu, "cpu")
    memory = form.memory if "memory" in given else _default_quantity(defaults.memory, "memory")
    workspace = _workspace(form, defaults)
    datavols = (
        form.datavols
        if "datavols" in given
        else [
            parse_body(VolumeSource, raw, error=InvalidNotebookSpec, at=f"datavols[{index}]")
            for index, raw in enumerate(defaults.data_volumes)
        ]
    )
    data_volumes = [
        (f"datavols[{index}]", _volume(source, f"datavols[{index}]", name, defaults.workspace_access_mode))
        for index, source in enumerate(datavols)
    ]
    _check_unique([("workspace", workspace)] if workspace else [], data_volumes)
    if form.environment:
        # A `NotebookSpec` cannot carry variables yet: refuse rather than create a server without them.
        raise InvalidNotebookSpec("Environment variables cannot be set yet.", field="environment")
    affinity = _pod_choice(form, "affinityConfig", defaults.affinity_default, defaults.affinity_options)
    toleration = _pod_choice(form, "tolerationGroup", defaults.toleration_default, defaults.toleration_options)
    spec = NotebookSpec(
        name=name,
        image=image,
        cpu=cpu,
        memory=memory,
        cpu_limit=_limit(form.cpuLimit, "cpuLimit", cpu, defaults.cpu_limit_factor, "CPU"),
        memory_limit=_limit(form.memoryLimit, "memoryLimit", memory, defaults.memory_limit_factor, "Memory"),
        workspace=workspace,
        data_volumes=tuple(volume for _, volume in data_volumes),
        server_type=server_type,
        image_pull_policy=_pull_policy(form, defaults.image_pull_policy),
        configurations=_configurations(form, defaults.configurations),
        gpus=_gpus(form, defaults),
        affinity_config=affinity.key if affinity else "",
        affinity=affinity.value if affinity else None,
        toleration_group=toleration.key if toleration else "",
        tolerations=tuple(toleration.value) if toleration else (),
        shm=form.shm if "shm" in given else defaults.shm,
    )
    if defaults.read_only:
        bare = {"name": name, "serverType": server_type}  # the type picks which default image applies
        fixed = parse_notebook_form(bare, namespace=namespace, defaults=_free(defaults))
        _check_read_only(given, spec, fixed, defaults.read_only)
    _check_maximums(spec, defaults.maximums)
    return spec


def check_defaults(defaults: SpawnerConfig) -> SpawnerConfig:
    """The config's defaults checked as a request's body is (e.g. `dataVolumes.value`, given as the
    web app's body writes volumes), so a bad default fails at start, not on every create. Raises ValueError."""
    try:
        parse_notebook_form({"name": "example"}, namespace="example", defaults=defaults)
    except InvalidNotebookSpec as exc:
        raise ValueError(f"the spawner config's defaults are refused ({exc.field}): {exc.message}") from None
    return defaults


def check_one_notebook_grant(spec: NotebookSpec, defaults: SpawnerConfig) -> None:
    """What a user whose grant is on this one notebook (not the namespace) may ask for when creating it:
    no existing volumes (they may be anyone's), and new volumes only under this notebook's own names,
    `<workspace template>` and `<name>-datavol-<n>`, so nobody else's volume, nor the default workspace
    name of another server, can be taken. Checked before anything is looked up, so a refusal says
    nothing about which names exist. Raises `Forbidden` naming the field."""
    workspace_name = _volume_name(defaults.workspace_name_template, spec.name, "workspace")
    fields = [("workspace", spec.workspace, {workspace_name})] if spec.workspace else []
    fields += [
        (f"datavols[{index}]", volume, {f"{spec.name}-datavol-{n}" for n in range(1, len(spec.data_volumes) + 1)})
        for index, volume in enumerate(spec.data_volumes)
    ]
    for field, volume, names in fields:
        if volume is None:
            continue
        if volume.existing:
            raise Forbidden(
                "With a grant on this notebook only, you cannot attach existing volumes; ask for new ones.",
                field=field,
            )
        if volume.name not in names:
            allowed = " or ".join(sorted(names))
            raise Forbidden(f"With a grant on this notebook only, this volume must be named {allowed}.", field=field)


def _free(defaults: SpawnerConfig) -> SpawnerConfig:
    """The config without its read-only fields and maximums: what a bare name gets."""
    return dataclasses.replace(defaults, read_only=frozenset(), maximums={})


def _check_read_only(given: set[str], spec: NotebookSpec, fixed: NotebookSpec, read_only: frozenset[str]) -> None:
    """A field the admin made `readOnly` must come out as it would with nothing sent (left out, or the
    same value again, as the web app sends it); anything else is refused, naming the field."""
    differs = {
        "image": spec.image != fixed.image,
        "customImage": spec.image != fixed.image,
        "imagePullPolicy": spec.image_pull_policy != fixed.image_pull_policy,
        "cpu": not _same_quantity(spec.cpu, fixed.cpu),
        "cpuLimit": not _same_quantity(spec.cpu_limit, fixed.cpu_limit),
        "memory": not _same_quantity(spec.memory, fixed.memory),
        "memoryLimit": not _same_quantity(spec.memory_limit, fixed.memory_limit),
        "workspace": spec.workspace != fixed.workspace,
        "noWorkspace": spec.workspace != fixed.workspace,
        "datavols": spec.data_volumes != fixed.data_volumes,
        "configurations": spec.configurations != fixed.configurations,
        "gpus": spec.gpus != fixed.gpus,
        "affinityConfig": spec.affinity_config != fixed.affinity_config,
        "tolerationGroup": spec.toleration_group != fixed.toleration_group,
        "shm": spec.shm != fixed.shm,
    }
    # Name a field the body sent before one it did not (a limit that followed a changed request).
    for field in sorted(read_only, key=lambda key: (key not in given, key)):
        if differs.get(field):
            raise InvalidNotebookSpec(
                f"{field} is set by the administrator (read-only); leave it out to get the default.", field=field
            )


def _same_quantity(a: str | None, b: str | None) -> bool:
    return a == b or (a is not None and b is not None and parse_quantity(a) == parse_quantity(b))


def _check_maximums(spec: NotebookSpec, maximums: Mapping[str, str]) -> None:
    """The admin's ceilings on requests, limits and the sizes of new volumes, each refused by its field."""
    size = ".newPvc.spec.resources.requests.storage"
    asked: list[tuple[str, str, str | None]] = [
        ("cpu", "cpu", spec.cpu),
        ("cpuLimit", "cpuLimit", spec.cpu_limit),
        ("memory", "memory", spec.memory),
        ("memoryLimit", "memoryLimit", spec.memory_limit),
    ]
    if spec.workspace is not None and not spec.workspace.existing:
        asked.append(("workspace", "workspace" + size, spec.workspace.size))
    asked += [
        ("datavols", f"datavols[{index}]{size}", volume.size)
        for index, volume in enumerate(spec.data_volumes)
        if not volume.existing
    ]
    for key, field, value in asked:
        ceiling = maximums.get(key)
        if ceiling is not None and value is not None and parse_quantity(value) > parse_quantity(ceiling):
            raise InvalidNotebookSpec(f"{field} may be at most {ceiling} here; got {value}.", field=field)


def _image(form: NewNotebook, defaults: SpawnerConfig, server_type: str) -> str:
    """The image to run: a standard one of the server type, or a custom one if the configuration
    allows them (the web app takes a custom image for any server type)."""
    default, standard = defaults.images_for(server_type)
    custom = form.customImage.strip()
    if form.customImageCheck and custom:
        image, field = custom, "customImage"
    elif "customImageCheck" in form.model_fields_set and form.customImageCheck:
        raise InvalidNotebookSpec("Enter the custom image to use.", field="customImage")
    else:
        image, field = form.image.strip() or default, "image"
    if image in (default, *standard):
        return image
    if not defaults.allow_custom_image:
        other = "" if server_type == "jupyter" else " of this server type"
        raise InvalidNotebookSpec(
            f"Custom images are not allowed here: pick one of the standard images{other}.", field=field
        )
    if len(image) > MAX_IMAGE_CHARS or IMAGE_REFERENCE.fullmatch(image) is None:
        raise InvalidNotebookSpec(
            f"{image[:100]!r} is not a container image reference like registry.example.com/team/image:tag.",
            field=field,
        )
    return image


def _pull_policy(form: NewNotebook, default: str) -> str:
    policy = form.imagePullPolicy or default  # the model checked the body's; this is for the config's
    if policy not in PULL_POLICIES:
        raise InvalidNotebookSpec(
            f"imagePullPolicy must be one of {', '.join(PULL_POLICIES)}.", field="imagePullPolicy"
        )
    return policy


def _default_quantity(value: str, field: str) -> str:
    """A request the config gives (checked as a body's is, so `check_defaults` refuses a bad one)."""
    try:
        return _positive_quantity(value)
    except ValueError as exc:
        raise InvalidNotebookSpec(f"{field}: {exc}.", field=field) from None


def _limit(value: str | None, field: str, request: str, factor: str | None, what: str) -> str | None:
    """The explicit limit, or request x the configured factor (as the web app does), or None."""
    if not value:
        return None if factor is None else scale_quantity(request, Decimal(factor))
    if parse_quantity(value) < parse_quantity(request):
        raise InvalidNotebookSpec(
            f"The {what} limit ({value}) must be at least the {what} request ({request}).", field=field
        )
    return value


def _workspace(form: NewNotebook, defaults: SpawnerConfig) -> Volume | None:
    """The workspace volume: the configured default when absent, none when null or `noWorkspace`."""
    if form.noWorkspace or ("workspace" in form.model_fields_set and form.workspace is None):
        return None
    if form.workspace is None:
        return Volume(
            name=_volume_name(defaults.workspace_name_template, form.name, "workspace"),
            mount_path=defaults.workspace_mount,
            size=defaults.workspace_size,
            access_mode=defaults.workspace_access_mode,
        )
    return _volume(form.workspace, "workspace", form.name, defaults.workspace_access_mode)


def _volume(source: VolumeSource, field: str, notebook: str, default_mode: str) -> Volume:
    """A new claim, named from its template, or an existing one."""
    if source.existingSource is not None:
        claim = source.existingSource.persistentVolumeClaim.claimName
        name = _volume_name(claim, None, f"{field}.existingSource.persistentVolumeClaim.claimName")
        return Volume(name=name, mount_path=source.mount, existing=True)
    assert source.newPvc is not None  # VolumeSource has exactly one of the two
    pvc = source.newPvc
    name = _volume_name(pvc.metadata.name, notebook, f"{field}.newPvc.metadata.name")
    modes = pvc.spec.accessModes or [default_mode]
    return Volume(name=name, mount_path=source.mount, size=pvc.spec.resources.requests.storage, access_mode=modes[0])


def _volume_name(template: str, notebook: str | None, field: str) -> str:
    name = template.replace(NAME_PLACEHOLDER, notebook) if notebook is not None else template
    if not is_dns_subdomain(name):
        raise InvalidNotebookSpec(
            f"The volume name {name[:100]!r} is not a DNS-1123 subdomain "
            "(lowercase letters, digits, '-' and '.', at most 253 characters).",
            field=field,
        )
    return name


def _check_unique(*groups: list[tuple[str, Volume]]) -> None:
    """Each mount path once; each new claim name once and not also the name of another volume."""
    mounts: set[str] = set()
    names: dict[str, bool] = {}  # name -> is an existing claim (which may be mounted twice)
    for field, volume in (pair for group in groups for pair in group):
        if volume.mount_path in mounts:
            raise InvalidNotebookSpec(f"Two volumes are mounted at {volume.mount_path}.", field=f"{field}.mount")
        mounts.add(volume.mount_path)
        if volume.name in names and not (volume.existing and names[volume.name]):
            raise InvalidNotebookSpec(f"The volume name {volume.name!r} is used twice.", field=field)
        names[volume.name] = volume.existing


def _configurations(form: NewNotebook, default: tuple[str, ...]) -> tuple[str, ...]:
    """PodDefault selector labels (label keys, as the web app sends them), each once, in order; the
    config's `configurations.value` when the body leaves them out (checked as a body's are)."""
    if "configurations" in form.model_fields_set:
        return tuple(dict.fromkeys(form.configurations))
    for index, label in enumerate(default):
        try:
            _label_key(label)
        except ValueError as exc:
            raise InvalidNotebookSpec(f"configurations[{index}]: {exc}.", field=f"configurations[{index}]") from None
    return tuple(dict.fromkeys(default))


def _gpus(form: NewNotebook, defaults: SpawnerConfig) -> tuple[tuple[str, int], ...]:
    """A vendor of the config and a count it offers; none when the body (or the config) says "none"."""
    asked = form.gpus.model_fields_set if "gpus" in form.model_fields_set else set()
    num = form.gpus.num if "num" in asked else "none" if "gpus" in form.model_fields_set else str(defaults.gpu_num)
    vendor = form.gpus.vendor if "vendor" in asked else defaults.gpu_vendor
    if num in ("none", "", "0"):
        return ()
    if not defaults.gpu_vendors:
        raise InvalidNotebookSpec("GPUs cannot be requested: no GPU vendors are configured.", field="gpus")
    if not vendor:
        raise InvalidNotebookSpec("Choose the GPU vendor.", field="gpus.vendor")
    if defaults.gpu_vendor_named(vendor) is None:
        offered = ", ".join(v.limits_key for v in defaults.gpu_vendors)
        raise InvalidNotebookSpec(
            f"{vendor[:100]!r} is not a GPU vendor offered here; use one of {offered}.", field="gpus.vendor"
        )
    count = int(num)
    if count not in defaults.gpu_counts:
        offered = ", ".join(str(n) for n in defaults.gpu_counts)
        raise InvalidNotebookSpec(f"{count} GPUs are not offered here; choose one of {offered}.", field="gpus.num")
    return ((vendor, count),)


def _pod_choice(
    form: NewNotebook, field: Literal["affinityConfig", "tolerationGroup"], default: str, options: tuple[PodChoice, ...]
) -> PodChoice | None:
    """An affinity config or toleration group of the config, by key; None for "none" (or "")."""
    key = getattr(form, field) if field in form.model_fields_set else default
    if key in ("", "none"):
        return None
    chosen = next((option for option in options if option.key == key), None)
    if chosen is None:
        if not options:
            raise InvalidNotebookSpec(f"No {field} options are configured here; use 'none'.", field=field)
        offered = ", ".join(option.key for option in options)
        raise InvalidNotebookSpec(f"{key[:100]!r} is not one of the {field} options: {offered}.", field=field)
    return chosen
