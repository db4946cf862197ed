"""The new-notebook form (the Jupyter web app's JSON body) checked and turned into a `NotebookSpec`.

Pure: no I/O and no aiohttp, so the JSON API and the HTML form share it. Every problem is an
`InvalidNotebookSpec` naming the field at fault; a request is either fully valid or refused.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re
from collections.abc import Mapping
from decimal import Decimal

from .backends import NotebookSpec, Volume
from .errors import Forbidden, InvalidNotebookSpec
from .names import is_dns_label, is_dns_subdomain
from .quantities import parse_quantity, scale_quantity
from .spawner import SERVER_TYPES as SPAWNER_SERVER_TYPES
from .spawner import PodChoice, SpawnerConfig

# What the Jupyter web app's form sends (kubeflow/notebooks, NotebookFormObject, after its
# getSubmitNotebook() clean-up). Anything else is refused, so a typo never passes silently.
FIELDS = frozenset(
    {
        "name",
        "namespace",
        "image",
        "customImage",
        "customImageCheck",
        "imagePullPolicy",
        "allowCustomImage",
        "serverType",
        "cpu",
        "cpuLimit",
        "memory",
        "memoryLimit",
        "gpus",
        "affinityConfig",
        "tolerationGroup",
        "shm",
        "configurations",
        "environment",
        "noWorkspace",
        "workspace",
        "datavols",
    }
)
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


def parse_notebook_form(body: object, *, namespace: str, defaults: SpawnerConfig) -> NotebookSpec:
    """Check a create request for `namespace` and fill in what it left out from `defaults`.

    Raises `InvalidNotebookSpec` (with `field` set) for the first problem found.
    """
    form = _object(body, "", "The request body must be a JSON object.")
    _keys(form, "", FIELDS)
    name = _name(form)
    given_namespace = form.get("namespace", namespace)
    if given_namespace != namespace:
        raise InvalidNotebookSpec(
            f"The body's namespace {str(given_namespace)[:100]!r} differs from the URL's {namespace!r}.",
            field="namespace",
        )
    server_type = _choice(form, "serverType", SERVER_TYPES, "jupyter")
    if server_type not in defaults.server_types:
        raise InvalidNotebookSpec(
            f"The server type {server_type} is not offered here: it has no images in the spawner config.",
            field="serverType",
        )
    image = _image(form, defaults, server_type)
    cpu = _quantity(form, "cpu", defaults.cpu, "CPU")
    memory = _quantity(form, "memory", defaults.memory, "Memory")
    workspace = _workspace(form, name, defaults)
    data_volumes = [
        (field, _volume(raw, field, name, defaults.workspace_access_mode))
        for field, raw in (
            (f"datavols[{index}]", raw) for index, raw in enumerate(_list(form, "datavols", defaults.data_volumes))
        )
    ]
    _check_unique([("workspace", workspace)] if workspace else [], data_volumes)
    _check_unsupported(form)
    affinity = _pod_choice(form, "affinityConfig", defaults.affinity_default, defaults.affinity_options)
    toleration = _pod_choice(form, "tolerationGroup", defaults.toleration_default, defaults.toleration_options)
    spec = NotebookSpec(
        name=name,
        image=image,
        cpu=cpu,
        memory=memory,
        cpu_limit=_limit(form, "cpuLimit", cpu, defaults.cpu_limit_factor, "CPU"),
        memory_limit=_limit(form, "memoryLimit", memory, defaults.memory_limit_factor, "Memory"),
        workspace=workspace,
        data_volumes=tuple(volume for _, volume in data_volumes),
        server_type=server_type,
        image_pull_policy=_choice(form, "imagePullPolicy", PULL_POLICIES, defaults.image_pull_policy),
        configurations=_configurations(form, defaults.configurations),
        gpus=_gpus(form, defaults),
        affinity_config=affinity.key if affinity else "",
        affinity=affinity.value if affinity else None,
        toleration_group=toleration.key if toleration else "",
        tolerations=tuple(toleration.value) if toleration else (),
        shm=_bool(form, "shm", defaults.shm),
    )
    if defaults.read_only:
        bare = {"name": name, "serverType": server_type}  # the type picks which default image applies
        fixed = parse_notebook_form(bare, namespace=namespace, defaults=_free(defaults))
        _check_read_only(form, spec, fixed, defaults.read_only)
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


def _check_read_only(
    form: Mapping[str, object], spec: NotebookSpec, fixed: NotebookSpec, read_only: frozenset[str]
) -> None:
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
    for field in sorted(read_only, key=lambda key: (key not in form, key)):
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


def _object(value: object, field: str, message: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise InvalidNotebookSpec(message, field=field or None)
    return value


def _keys(value: Mapping[str, object], field: str, allowed: frozenset[str] | set[str]) -> None:
    """Refuse keys outside `allowed`, naming every one of them (`field` is their parent's path)."""
    unknown = [f"{field}.{key}" if field else key for key in sorted(set(value) - allowed)]
    if unknown:
        raise InvalidNotebookSpec(f"Unknown field(s): {', '.join(unknown)}.", field=unknown[0])


def _str(form: Mapping[str, object], field: str, default: str, *, path: str | None = None) -> str:
    value = form.get(field, default)
    if not isinstance(value, str):
        raise InvalidNotebookSpec(f"{path or field} must be a string.", field=path or field)
    return value


def _bool(form: Mapping[str, object], field: str, default: bool) -> bool:
    value = form.get(field, default)
    if not isinstance(value, bool):
        raise InvalidNotebookSpec(f"{field} must be true or false.", field=field)
    return value


def _list(form: Mapping[str, object], field: str, default: tuple[object, ...] = ()) -> list[object]:
    value = form.get(field, list(default))
    if not isinstance(value, list):
        raise InvalidNotebookSpec(f"{field} must be a list.", field=field)
    return value


def _choice(form: Mapping[str, object], field: str, choices: tuple[str, ...], default: str) -> str:
    value = _str(form, field, default) or default  # the web app sends "" for "not chosen"
    if value not in choices:
        raise InvalidNotebookSpec(f"{field} must be one of {', '.join(choices)}; got {value[:100]!r}.", field=field)
    return value


def _name(form: Mapping[str, object]) -> str:
    if "name" not in form:
        raise InvalidNotebookSpec("Give the notebook server a name.", field="name")
    name = _str(form, "name", "")
    if len(name) > 63:
        raise InvalidNotebookSpec("The name must be at most 63 characters long.", field="name")
    if not is_dns_label(name):
        raise InvalidNotebookSpec(
            f"The name {name!r} is not a DNS-1123 label: use lowercase letters, digits and '-', "
            "starting and ending with a letter or digit.",
            field="name",
        )
    return name


def _image(form: Mapping[str, object], defaults: SpawnerConfig, server_type: str) -> str:
    """The image to run: a standard one of the server type, or a custom one if the configuration
    allows them (the web app takes a custom image for any server type)."""
    default, standard = defaults.images_for(server_type)
    _bool(form, "allowCustomImage", defaults.allow_custom_image)  # the client echoes the config; ours decides
    use_custom = _bool(form, "customImageCheck", True)
    custom = _str(form, "customImage", "").strip()
    if use_custom and custom:
        image, field = custom, "customImage"
    elif "customImageCheck" in form and use_custom:
        raise InvalidNotebookSpec("Enter the custom image to use.", field="customImage")
    else:
        image, field = _str(form, "image", default).strip() or default, "image"
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


def _quantity_text(value: object, field: str, what: str) -> str:
    """A quantity the web app may send as a string or, for CPU, as a number."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal | float):
        raise InvalidNotebookSpec(f"{what} must be a Kubernetes quantity such as 500m or 1.5Gi.", field=field)
    text = value if isinstance(value, str) else str(value)
    try:
        amount = parse_quantity(text)
    except ValueError as exc:
        raise InvalidNotebookSpec(f"{what}: {exc}.", field=field) from None
    if amount <= 0:
        raise InvalidNotebookSpec(f"{what} must be greater than zero; got {text!r}.", field=field)
    return text


def _quantity(form: Mapping[str, object], field: str, default: str, what: str) -> str:
    return _quantity_text(form.get(field, default), field, what)


def _limit(form: Mapping[str, object], field: str, request: str, factor: str | None, what: str) -> str | None:
    """The explicit limit, or request x the configured factor (as the web app does), or None."""
    value = form.get(field)
    if value is None or value == "":
        return None if factor is None else scale_quantity(request, Decimal(factor))
    limit = _quantity_text(value, field, f"{what} limit")
    if parse_quantity(limit) < parse_quantity(request):
        raise InvalidNotebookSpec(
            f"The {what} limit ({limit}) must be at least the {what} request ({request}).", field=field
        )
    return limit


def _workspace(form: Mapping[str, object], name: str, defaults: SpawnerConfig) -> Volume | None:
    """The workspace volume: the configured default when absent, none when null or `noWorkspace`."""
    if _bool(form, "noWorkspace", False) or ("workspace" in form and form["workspace"] is None):
        return None
    if "workspace" not in form:
        return Volume(
            name=_volume_name(defaults.workspace_name_template, name, "workspace"),
            mount_path=defaults.workspace_mount,
            size=defaults.workspace_size,
            access_mode=defaults.workspace_access_mode,
        )
    return _volume(form["workspace"], "workspace", name, defaults.workspace_access_mode)


def _volume(raw: object, field: str, notebook: str, default_mode: str) -> Volume:
    """`{mount, newPvc: {metadata: {name}, spec: {...}}}` or `{mount, existingSource: {persistentVolumeClaim}}`."""
    volume = _object(raw, field, f"{field} must be an object with 'mount' and 'newPvc' or 'existingSource'.")
    _keys(volume, field, {"mount", "newPvc", "existingSource"})
    mount = _mount_path(volume.get("mount"), f"{field}.mount")
    if ("newPvc" in volume) == ("existingSource" in volume):
        raise InvalidNotebookSpec(f"{field} needs exactly one of 'newPvc' or 'existingSource'.", field=field)
    if "existingSource" in volume:
        return Volume(
            name=_existing_claim(volume["existingSource"], f"{field}.existingSource"), mount_path=mount, existing=True
        )
    pvc = _object(volume["newPvc"], f"{field}.newPvc", f"{field}.newPvc must be an object.")
    _keys(pvc, f"{field}.newPvc", {"metadata", "spec"})
    metadata = _object(pvc.get("metadata", {}), f"{field}.newPvc.metadata", "metadata must be an object.")
    _keys(metadata, f"{field}.newPvc.metadata", {"name"})
    name_field = f"{field}.newPvc.metadata.name"
    name = _volume_name(_str(metadata, "name", "", path=name_field), notebook, name_field)
    spec_field = f"{field}.newPvc.spec"
    spec = _object(pvc.get("spec", {}), spec_field, f"{spec_field} must be an object.")
    # storageClassName is accepted for the web app's sake; `Volume` has no place for it yet.
    _keys(spec, spec_field, {"resources", "accessModes", "storageClassName"})
    _str(spec, "storageClassName", "", path=f"{spec_field}.storageClassName")
    resources = _object(spec.get("resources", {}), f"{spec_field}.resources", "resources must be an object.")
    _keys(resources, f"{spec_field}.resources", {"requests"})
    requests = _object(
        resources.get("requests"),
        f"{spec_field}.resources.requests",
        f"{spec_field}.resources.requests must be an object with 'storage'.",
    )
    _keys(requests, f"{spec_field}.resources.requests", {"storage"})
    size_field = f"{spec_field}.resources.requests.storage"
    size = _quantity_text(requests.get("storage"), size_field, "The volume size")
    return Volume(name=name, mount_path=mount, size=size, access_mode=_access_mode(spec, spec_field, default_mode))


def _access_mode(spec: Mapping[str, object], field: str, default: str) -> str:
    modes = spec.get("accessModes", [default])
    if not isinstance(modes, list) or len(modes) != 1 or modes[0] not in ACCESS_MODES:
        raise InvalidNotebookSpec(
            f"{field}.accessModes must be a list of one of {', '.join(ACCESS_MODES)}.", field=f"{field}.accessModes"
        )
    return str(modes[0])


def _existing_claim(raw: object, field: str) -> str:
    source = _object(raw, field, f"{field} must be an object.")
    if set(source) != {"persistentVolumeClaim"}:
        raise InvalidNotebookSpec(f"{field} must be a persistentVolumeClaim source.", field=field)
    claim_field = f"{field}.persistentVolumeClaim"
    claim = _object(source["persistentVolumeClaim"], claim_field, f"{claim_field} must be an object.")
    _keys(claim, claim_field, {"claimName", "readOnly"})
    if claim.get("readOnly", False) is not False:
        raise InvalidNotebookSpec("Read-only volume mounts are not supported yet.", field=f"{claim_field}.readOnly")
    name_field = f"{claim_field}.claimName"
    return _volume_name(_str(claim, "claimName", "", path=name_field), None, name_field)


def _volume_name(template: str, notebook: str | None, field: str) -> str:
    name = template.replace(NAME_PLACEHOLDER, notebook) if notebook is not None else template
    if not is_dns_subdomain(name):
        raise InvalidNotebookSpec(
            f"The volume name {name[:100]!r} is not a DNS-1123 subdomain "
            "(lowercase letters, digits, '-' and '.', at most 253 characters).",
            field=field,
        )
    return name


def _mount_path(value: object, field: str) -> str:
    """An absolute path without `.`/`..` segments or control characters, with `//` collapsed."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise InvalidNotebookSpec("The mount path must be an absolute path such as /home/jovyan/data.", field=field)
    if len(value) > MAX_MOUNT_PATH_CHARS or any(ord(ch) < 0x20 or ord(ch) == 0x7F or ch == "\\" for ch in value):
        raise InvalidNotebookSpec("The mount path contains characters that are not allowed.", field=field)
    segments = [segment for segment in value.split("/") if segment]
    if "." in segments or ".." in segments:
        raise InvalidNotebookSpec("The mount path must not contain '.' or '..' segments.", field=field)
    if not segments:
        raise InvalidNotebookSpec("A volume cannot be mounted at '/'.", field=field)
    return posixpath.join("/", *segments)


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


def _configurations(form: Mapping[str, object], default: tuple[str, ...]) -> tuple[str, ...]:
    """PodDefault selector labels (label keys, as the web app sends them), each once, in order; the
    config's `configurations.value` when the body leaves them out."""
    labels = _list(form, "configurations", default)
    for index, label in enumerate(labels):
        if not isinstance(label, str) or len(label) > MAX_LABEL_KEY_CHARS or LABEL_KEY.fullmatch(label) is None:
            raise InvalidNotebookSpec(
                "configurations must be a list of PodDefault labels such as add-gcp-secret.",
                field=f"configurations[{index}]",
            )
    return tuple(dict.fromkeys(str(label) for label in labels))


def _check_unsupported(form: Mapping[str, object]) -> None:
    """Check the fields a `NotebookSpec` cannot carry yet; refuse a request that needs one of them,
    rather than create a notebook server without what was asked for."""
    if _environment(form.get("environment", "")):
        raise InvalidNotebookSpec("Environment variables cannot be set yet.", field="environment")


def _gpus(form: Mapping[str, object], defaults: SpawnerConfig) -> tuple[tuple[str, int], ...]:
    """`{"num": "none" | "<n>", "vendor": "<limitsKey>"}`: a vendor of the config and a count it offers."""
    default = {"num": str(defaults.gpu_num or "none"), "vendor": defaults.gpu_vendor}
    gpus = _object(form.get("gpus", default), "gpus", 'gpus must be an object like {"num": "none"}.')
    _keys(gpus, "gpus", {"num", "vendor"})
    vendor = _str(gpus, "vendor", defaults.gpu_vendor, path="gpus.vendor")
    num = gpus.get("num", "none")
    if num in ("none", "", 0, "0"):
        return ()
    whole = (isinstance(num, int) and num > 0) or (
        isinstance(num, str) and num.isascii() and num.isdigit() and len(num) < 4
    )
    if isinstance(num, bool) or not whole:
        raise InvalidNotebookSpec("gpus.num must be 'none' or a whole number.", field="gpus.num")
    if not defaults.gpu_vendors:
        raise InvalidNotebookSpec("GPUs cannot be requested: no GPU vendors are configured.", field="gpus")
    if not vendor:
        raise InvalidNotebookSpec("Choose the GPU vendor.", field="gpus.vendor")
    if defaults.gpu_vendor_named(vendor) is None:
        offered = ", ".join(v.limits_key for v in defaults.gpu_vendors)
        raise InvalidNotebookSpec(
            f"{vendor[:100]!r} is not a GPU vendor offered here; use one of {offered}.", field="gpus.vendor"
        )
    count = num if isinstance(num, int) else int(str(num))
    if count not in defaults.gpu_counts:
        offered = ", ".join(str(n) for n in defaults.gpu_counts)
        raise InvalidNotebookSpec(f"{count} GPUs are not offered here; choose one of {offered}.", field="gpus.num")
    return ((vendor, count),)


def _pod_choice(
    form: Mapping[str, object], field: str, default: str, options: tuple[PodChoice, ...]
) -> PodChoice | None:
    """An affinity config or toleration group of the config, by key; None for "none" (or "")."""
    key = _str(form, field, default)
    if key in ("", "none"):
        return None
    chosen = next((option for option in options if option.key == key), None)
    if chosen is None:
        if not options:
            raise InvalidNotebookSpec(f"No {field} options are configured here; use 'none'.", field=field)
        offered = ", ".join(option.key for option in options)
        raise InvalidNotebookSpec(f"{key[:100]!r} is not one of the {field} options: {offered}.", field=field)
    return chosen


def _environment(value: object) -> dict[str, object]:
    """The web app sends the environment as a JSON object in a string; plain objects are fine too."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError:
            value = None
    if not isinstance(value, dict):
        raise InvalidNotebookSpec("environment must be a JSON object of NAME: value.", field="environment")
    return value
