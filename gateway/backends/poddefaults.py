"""PodDefaults (kubeflow.org/v1alpha1), the web app's "configurations": read for the NEW SERVER form,
built from the Configurations page's form, and applied to a Notebook where no admission webhook runs
(at creation, and again at each start with what an earlier application added taken out first).

Pure: plain JSON dicts in and out, no I/O. Secrets are named, never read: a PodDefault refers to a
Secret by name, so no secret value ever passes through the gateway.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, Field, field_validator

from ..body_models import Model, parse_body
from ..names import is_dns_label, is_dns_subdomain

JsonObject = dict[str, object]

API_VERSION = "kubeflow.org/v1alpha1"
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # a C identifier, as Kubernetes wants for env names
MAX_ITEMS = 50
MAX_TEXT = 1024


# -- reading ---------------------------------------------------------------------------------------


def selector_label(obj: JsonObject) -> str:
    """The label a PodDefault selects pods by: its first `matchLabels` key ("" when it has none)."""
    spec = _dict(obj, "spec")
    labels = _dict(_dict(spec, "selector"), "matchLabels")
    return next(iter(labels), "")


def configuration_item(obj: JsonObject) -> JsonObject:
    """One PodDefault as the Jupyter web app lists it (`label`, `desc`, `name`), plus what it adds:
    variable names, Secret names and mount paths, never a value."""
    spec, metadata = _dict(obj, "spec"), _dict(obj, "metadata")
    env = [_str(item, "name") for item in _dicts(spec, "env")]
    env_from = [_str(_dict(item, "secretRef"), "name") for item in _dicts(spec, "envFrom")]
    secrets = {_str(volume, "name"): _str(_dict(volume, "secret"), "secretName") for volume in _dicts(spec, "volumes")}
    mounts = [
        {"secret": secrets.get(_str(mount, "name"), ""), "mountPath": _str(mount, "mountPath")}
        for mount in _dicts(spec, "volumeMounts")
    ]
    return {
        "label": selector_label(obj),
        "desc": _str(spec, "desc") or _str(metadata, "name"),
        "name": _str(metadata, "name"),
        "env": env,
        "envFromSecrets": [name for name in env_from if name],
        "secretMounts": mounts,
    }


def audit_details(obj: JsonObject) -> JsonObject:
    """What an audit event records about a PodDefault: names and paths, never a value."""
    spec = _dict(obj, "spec")
    secrets = {_str(_dict(item, "secretRef"), "name") for item in _dicts(spec, "envFrom")}
    secrets |= {_str(_dict(volume, "secret"), "secretName") for volume in _dicts(spec, "volumes")}
    return {
        "name": _str(_dict(obj, "metadata"), "name"),
        "env": [_str(item, "name") for item in _dicts(spec, "env")],
        "secrets": sorted(secrets - {""}),
        "mounts": [_str(mount, "mountPath") for mount in _dicts(spec, "volumeMounts")],
    }


# -- building --------------------------------------------------------------------------------------


def _dns_label(value: str) -> str:
    if not is_dns_label(value):
        raise ValueError("must be a DNS-1123 label (lowercase letters, digits and '-')")
    return value


def _env_name(value: str) -> str:
    if ENV_NAME.fullmatch(value) is None:
        raise ValueError("must be a variable name like MY_VAR")
    return value


def _secret_name(value: str) -> str:
    if not is_dns_subdomain(value):
        raise ValueError("must be the name of a Secret in this namespace")
    return value


def _absolute_path(value: str) -> str:
    """An absolute path without `.`/`..` segments or control characters, with `//` collapsed."""
    segments = [segment for segment in value.split("/") if segment]
    if not value.startswith("/") or not segments:
        raise ValueError("must be an absolute path such as /etc/secrets/store")
    if "." in segments or ".." in segments or any(ord(ch) < 0x20 for ch in value):
        raise ValueError("must be an absolute path without '.' or '..' segments")
    return posixpath.join("/", *segments)


Text = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(str.strip)]
SecretName = Annotated[str, AfterValidator(_secret_name)]


class EnvVariable(Model):
    name: Annotated[str, AfterValidator(_env_name)]
    value: Text


class NewSecretMount(Model):
    secret: SecretName
    mountPath: Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_absolute_path)]


class NewConfiguration(Model):
    """A configuration (PodDefault) to create, from the Configurations page: variables, Secrets to mount and
    Secrets to read variables from, named, never a Secret's value. Its selector label is its name."""

    name: Annotated[str, AfterValidator(_dns_label)] = Field(description="A DNS-1123 label; also its label.")
    desc: Text = Field("", description="What it is for; default: the name.")
    env: list[EnvVariable] = Field(default_factory=list, max_length=MAX_ITEMS)
    secretMounts: list[NewSecretMount] = Field(default_factory=list, max_length=MAX_ITEMS)
    envFromSecrets: list[SecretName] = Field(
        default_factory=list, max_length=MAX_ITEMS, description="Secrets whose every key becomes a variable."
    )

    @field_validator("secretMounts")
    @classmethod
    def _one_secret_a_path(cls, mounts: list[NewSecretMount]) -> list[NewSecretMount]:
        if len({mount.mountPath for mount in mounts}) < len(mounts):
            raise ValueError("two Secrets are mounted at the same path")
        return mounts


def poddefault_object(namespace: str, form: object) -> JsonObject:
    """A PodDefault from the Configurations page's body (`NewConfiguration`). Raises `BadRequest` naming
    the field at fault; the API server checks the rest against the CRD."""
    config = parse_body(NewConfiguration, form)
    name = config.name
    volumes: list[JsonObject] = []
    mounts: list[JsonObject] = []
    for i, mount in enumerate(config.secretMounts):
        volume = f"{name}-{i}"[:63]
        volumes.append({"name": volume, "secret": {"secretName": mount.secret}})
        mounts.append({"name": volume, "mountPath": mount.mountPath, "readOnly": True})
    spec: JsonObject = {"desc": config.desc or name, "selector": {"matchLabels": {name: "true"}}}
    parts = (
        ("env", [{"name": item.name, "value": item.value} for item in config.env]),
        ("envFrom", [{"secretRef": {"name": secret}} for secret in config.envFromSecrets]),
        ("volumes", volumes),
        ("volumeMounts", mounts),
    )
    for key, value in parts:
        if value:
            spec[key] = value
    return {
        "apiVersion": API_VERSION,
        "kind": "PodDefault",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


# -- applying --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Injection:
    """What applying one configuration put into a notebook's pod, by the key each item is merged by:
    env names, envFrom sources (canonical JSON), volume names and mount paths. Names only, no values:
    it is recorded on the Notebook so that a later start can take exactly these items out again."""

    env: tuple[str, ...] = ()
    env_from: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    mounts: tuple[str, ...] = ()

    def __add__(self, other: Injection) -> Injection:
        return Injection(
            self.env + other.env,
            self.env_from + other.env_from,
            self.volumes + other.volumes,
            self.mounts + other.mounts,
        )


Injected = dict[str, Injection]  # by configuration (selector) label


def chosen_poddefaults(poddefaults: Iterable[JsonObject], labels: Iterable[str]) -> list[JsonObject]:
    """The PodDefaults a notebook with these configuration labels gets: those selecting one of them."""
    wanted = set(labels)
    return [obj for obj in poddefaults if selector_label(obj) in wanted]


def configuration_labels(labels: Mapping[str, object]) -> list[str]:
    """A Notebook's labels that choose configurations: `<label>: "true"`, as the form sets them."""
    return [key for key, value in labels.items() if value == "true"]


def apply_poddefaults(notebook: JsonObject, poddefaults: Iterable[JsonObject]) -> Injected:
    """Add each PodDefault's env, envFrom, volumes and volumeMounts to `notebook`'s pod (in place), as
    Kubeflow's admission webhook would add them to the pod, and say what was added. What the notebook
    already has wins, and so does an earlier PodDefault (they come sorted by name)."""
    pod = _dict(_dict(_dict(notebook, "spec"), "template"), "spec")
    containers = _dicts(pod, "containers")
    if not containers:
        return {}
    container = containers[0]
    injected: Injected = {}
    for poddefault in poddefaults:
        spec = _dict(poddefault, "spec")
        added = Injection(
            env=_merge(container, "env", _dicts(spec, "env"), key="name"),
            env_from=_merge(container, "envFrom", _dicts(spec, "envFrom"), key=None),
            volumes=_merge(pod, "volumes", _dicts(spec, "volumes"), key="name"),
            mounts=_merge(container, "volumeMounts", _dicts(spec, "volumeMounts"), key="mountPath"),
        )
        label = selector_label(poddefault)
        injected[label] = injected.get(label, Injection()) + added
    return injected


def remove_injected(notebook: JsonObject, injected: Mapping[str, Injection]) -> None:
    """Take out of `notebook`'s pod (in place) what `apply_poddefaults` put in. The merge never added
    an item whose key the pod already had, so these keys name the gateway's items, not the user's."""
    pod = _dict(_dict(_dict(notebook, "spec"), "template"), "spec")
    containers = _dicts(pod, "containers")
    if not containers:
        return
    container, items = containers[0], Injection()
    for injection in injected.values():
        items += injection
    _remove(container, "env", set(items.env), key="name")
    _remove(container, "envFrom", set(items.env_from), key=None)
    _remove(container, "volumeMounts", set(items.mounts), key="mountPath")
    _remove(pod, "volumes", set(items.volumes), key="name")


def injected_record(injected: Mapping[str, Injection]) -> str:
    """`injected` as the Notebook's annotation: JSON {label: {"env": [names], "envFrom": [sources],
    "volumes": [names], "volumeMounts": [paths]}}, empty lists left out."""
    record: JsonObject = {}
    for label, injection in injected.items():
        fields = (
            ("env", list(injection.env)),
            ("envFrom", [json.loads(source) for source in injection.env_from]),
            ("volumes", list(injection.volumes)),
            ("volumeMounts", list(injection.mounts)),
        )
        record[label] = {field: values for field, values in fields if values}
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def read_injected(text: str) -> Injected | None:
    """The annotation `injected_record` wrote; None when it is not that shape (nothing is then known
    to be the gateway's). Items of the wrong type are skipped."""
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    injected: Injected = {}
    for label, entry in record.items():
        if not isinstance(entry, dict):
            return None
        injected[label] = Injection(
            env=tuple(_strs(entry, "env")),
            env_from=tuple(_canonical(source) for source in _dicts(entry, "envFrom")),
            volumes=tuple(_strs(entry, "volumes")),
            mounts=tuple(_strs(entry, "volumeMounts")),
        )
    return injected


def _merge(target: JsonObject, field: str, additions: list[JsonObject], *, key: str | None) -> tuple[str, ...]:
    """Append the additions whose key `target[field]` lacks; their keys."""
    current = target.get(field)
    items: list[object] = current if isinstance(current, list) else []
    seen = {_key(item, key) for item in items if isinstance(item, dict)}
    added: list[str] = []
    for addition in additions:
        marker = _key(addition, key)
        if marker not in seen:
            items.append(dict(addition))
            seen.add(marker)
            added.append(marker)
    if items:
        target[field] = items
    return tuple(added)


def _remove(target: JsonObject, field: str, keys: set[str], *, key: str | None) -> None:
    current = target.get(field)
    if keys and isinstance(current, list):
        target[field] = [item for item in current if not (isinstance(item, dict) and _key(item, key) in keys)]


def _key(item: JsonObject, key: str | None) -> str:
    """What an item is merged by: a field (env name, mount path, volume name) or, for an envFrom
    source, the whole item."""
    return _str(item, key) if key else _canonical(item)


def _canonical(item: JsonObject) -> str:
    return json.dumps(item, sort_keys=True, separators=(",", ":"))


# -- JSON access: anything of the wrong type reads as empty -----------------------------------------


def _dict(obj: JsonObject, key: str) -> JsonObject:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def _dicts(obj: JsonObject, key: str) -> list[JsonObject]:
    value = obj.get(key)
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _str(obj: JsonObject, key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def _strs(obj: JsonObject, key: str) -> list[str]:
    value = obj.get(key)
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []
