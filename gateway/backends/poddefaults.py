"""PodDefaults (kubeflow.org/v1alpha1), the web app's "configurations": read for the NEW SERVER form,
built from the Configurations page's form, and applied to a Notebook where no admission webhook runs.

Pure: plain JSON dicts in and out, no I/O. Secrets are named, never read: a PodDefault refers to a
Secret by name, so no secret value ever passes through the gateway.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping

from ..errors import BadRequest

JsonObject = dict[str, object]

API_VERSION = "kubeflow.org/v1alpha1"
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # a C identifier, as Kubernetes wants for env names
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
FORM_FIELDS = frozenset({"name", "desc", "env", "secretMounts", "envFromSecrets"})
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


def poddefault_object(namespace: str, form: object) -> JsonObject:
    """A PodDefault from the Configurations page's body: `{"name", "desc", "env": [{"name", "value"}],
    "secretMounts": [{"secret", "mountPath"}], "envFromSecrets": [secret]}`. Its selector label is its
    name. Raises `BadRequest` naming the field at fault; the API server checks the rest against the CRD."""
    if not isinstance(form, dict):
        raise BadRequest("The request body must be a JSON object.")
    unknown = sorted(set(form) - FORM_FIELDS)
    if unknown:
        raise BadRequest(f"Unknown field(s): {', '.join(unknown)}.", field=unknown[0])
    name = form.get("name")
    if not isinstance(name, str) or DNS_LABEL.fullmatch(name) is None:
        raise BadRequest("The name must be a DNS-1123 label (lowercase letters, digits and '-').", field="name")
    desc = _text(form.get("desc", ""), "desc") or name
    env = [_env(item, f"env[{i}]") for i, item in enumerate(_items(form, "env"))]
    env_from = [
        {"secretRef": {"name": _secret(item, f"envFromSecrets[{i}]")}}
        for i, item in enumerate(_items(form, "envFromSecrets"))
    ]
    volumes: list[JsonObject] = []
    mounts: list[JsonObject] = []
    for i, item in enumerate(_items(form, "secretMounts")):
        field = f"secretMounts[{i}]"
        if not isinstance(item, dict) or set(item) != {"secret", "mountPath"}:
            raise BadRequest(f'{field} must be {{"secret": <Secret name>, "mountPath": <path>}}.', field=field)
        secret, path = _secret(item["secret"], f"{field}.secret"), _path(item["mountPath"], f"{field}.mountPath")
        volume = f"{name}-{i}"[:63]
        volumes.append({"name": volume, "secret": {"secretName": secret}})
        mounts.append({"name": volume, "mountPath": path, "readOnly": True})
    if len({m["mountPath"] for m in mounts}) < len(mounts):
        raise BadRequest("Two Secrets are mounted at the same path.", field="secretMounts")
    spec: JsonObject = {"desc": desc, "selector": {"matchLabels": {name: "true"}}}
    for key, value in (("env", env), ("envFrom", env_from), ("volumes", volumes), ("volumeMounts", mounts)):
        if value:
            spec[key] = value
    return {
        "apiVersion": API_VERSION,
        "kind": "PodDefault",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def _items(form: Mapping[str, object], field: str) -> list[object]:
    value = form.get(field, [])
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise BadRequest(f"{field} must be a list of at most {MAX_ITEMS} items.", field=field)
    return value


def _text(value: object, field: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise BadRequest(f"{field} must be a string of at most {MAX_TEXT} characters.", field=field)
    return value.strip()


def _env(item: object, field: str) -> JsonObject:
    if not isinstance(item, dict) or set(item) != {"name", "value"}:
        raise BadRequest(f'{field} must be {{"name": <NAME>, "value": <text>}}.', field=field)
    name = item["name"]
    if not isinstance(name, str) or ENV_NAME.fullmatch(name) is None:
        raise BadRequest(f"{field}.name must be a variable name like MY_VAR.", field=f"{field}.name")
    return {"name": name, "value": _text(item["value"], f"{field}.value")}


def _secret(value: object, field: str) -> str:
    if not isinstance(value, str) or len(value) > 253 or DNS_SUBDOMAIN.fullmatch(value) is None:
        raise BadRequest(f"{field} must be the name of a Secret in this namespace.", field=field)
    return value


def _path(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or len(value) > MAX_TEXT:
        raise BadRequest(f"{field} must be an absolute path such as /etc/secrets/store.", field=field)
    segments = [segment for segment in value.split("/") if segment]
    if not segments or "." in segments or ".." in segments or any(ord(ch) < 0x20 for ch in value):
        raise BadRequest(f"{field} must be an absolute path without '.' or '..' segments.", field=field)
    return posixpath.join("/", *segments)


# -- applying --------------------------------------------------------------------------------------


def apply_poddefaults(notebook: JsonObject, poddefaults: Iterable[JsonObject]) -> JsonObject:
    """`notebook` with each PodDefault's env, envFrom, volumes and volumeMounts added to its pod, as
    Kubeflow's admission webhook would add them to the pod; what the notebook already has wins."""
    pod = _dict(_dict(_dict(notebook, "spec"), "template"), "spec")
    containers = _dicts(pod, "containers")
    if not containers:
        return notebook
    container = containers[0]
    for poddefault in poddefaults:
        spec = _dict(poddefault, "spec")
        _merge(container, "env", _dicts(spec, "env"), key="name")
        _merge(container, "envFrom", _dicts(spec, "envFrom"), key=None)
        _merge(container, "volumeMounts", _dicts(spec, "volumeMounts"), key="mountPath")
        _merge(pod, "volumes", _dicts(spec, "volumes"), key="name")
    return notebook


def _merge(target: JsonObject, field: str, additions: list[JsonObject], *, key: str | None) -> None:
    current = target.get(field)
    items: list[object] = current if isinstance(current, list) else []
    seen = {item.get(key) if key else repr(item) for item in items if isinstance(item, dict)}
    for addition in additions:
        marker = addition.get(key) if key else repr(addition)
        if marker not in seen:
            items.append(dict(addition))
            seen.add(marker)
    if items:
        target[field] = items


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
