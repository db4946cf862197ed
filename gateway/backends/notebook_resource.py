"""Kubeflow Notebook and PVC objects built from a `NotebookSpec` as the Jupyter web app builds them,
and Notebook objects read back into `Notebook`s with the status the web app would show.

Pure: plain JSON dicts in and out, no I/O. Anything malformed in an object read from the cluster
(someone's hand-written Notebook) reads as absent rather than raising.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from datetime import UTC, datetime

from ..kube.kubeflow_names import (
    APP_LABEL,
    CREATOR_ANNOTATION,
    EDITOR_ACCOUNT,
    HEADERS_ANNOTATION,
    SERVER_TYPE_ANNOTATION,
    STOP_ANNOTATION,
    URI_REWRITE_ANNOTATION,
)
from ..pod_security import notebook_container_security, notebook_pod_security
from . import Notebook, NotebookSpec, Status, Volume
from .poddefaults import Injected, injected_record, read_injected

JsonObject = dict[str, object]

API_VERSION = "kubeflow.org/v1"
# The volumes the gateway made with a notebook, as JSON {claim name: uid}: what a delete with
# `volumes=true` may remove (by uid, so a claim re-made under the same name by someone else is safe).
VOLUMES_ANNOTATION = "notebook-gateway.kubeflow.org/volumes"
MADE_FOR_LABEL = "notebook-gateway.kubeflow.org/notebook"  # on a PVC the gateway made: for which notebook
# Where the gateway applies configurations itself (no PodDefault webhook): what it put into the pod
# template, by configuration label (`poddefaults.injected_record`). A start takes exactly that out
# again before it applies the configurations as they are then; a Notebook without it is left alone.
# `"true"` on a Notebook: the gateway's idle culler leaves it running (Kubeflow's culler has no such annotation).
CULL_EXEMPT_ANNOTATION = "notebook-gateway.kubeflow.org/cull-exempt"
INJECTED_ANNOTATION = "notebook-gateway.kubeflow.org/poddefaults"
# Kubeflow profiles bind this account to kubeflow-edit, so code in the notebook can itself create
# Pods, Deployments, Services, Jobs, TFJobs and PyTorchJobs in its namespace.
SERVICE_ACCOUNT = EDITOR_ACCOUNT
WORKSPACE_MOUNT = "/home/jovyan"
# The web app's grace period for a Notebook the controller has not reported on yet.
NEW_NOTEBOOK_GRACE_S = 10
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # Kubernetes' timestamps (RFC 3339, UTC, whole seconds)
SHM_VOLUME, SHM_MOUNT = "dshm", "/dev/shm"  # the web app's names
# Container limits that are no device: what is left in the limits are GPUs and the like.
NOT_DEVICES = ("cpu", "memory", "ephemeral-storage")


# -- building --------------------------------------------------------------------------------------


def notebook_object(namespace: str, spec: NotebookSpec, *, creator: str | None, allow_root: bool = False) -> JsonObject:
    """The Notebook the web app's POST /api/namespaces/<ns>/notebooks creates for this form, with a
    securityContext that passes Pod Security `restricted` (runAsNonRoot unless `allow_root`).

    The controller adds the rest: NB_PREFIX=/notebook/<ns>/<name> in the container's environment,
    the StatefulSet, and the Service `<name>` on port 80 that the gateway routes to.
    """
    annotations = {SERVER_TYPE_ANNOTATION: spec.server_type}
    if spec.server_type in ("group-one", "group-two"):  # RStudio and VS Code serve from "/"
        annotations[URI_REWRITE_ANNOTATION] = "/"
    if spec.server_type == "group-two":
        annotations[HEADERS_ANNOTATION] = f'{{"X-RStudio-Root-Path":"/notebook/{namespace}/{spec.name}/"}}'
    if creator:
        annotations[CREATOR_ANNOTATION] = creator
    resources: dict[str, dict[str, str]] = {"requests": {"cpu": spec.cpu, "memory": spec.memory}}
    limits = {key: value for key, value in (("cpu", spec.cpu_limit), ("memory", spec.memory_limit)) if value}
    # As the web app writes them: the vendor's resource in the limits, the count as a string (Kubernetes
    # sets an extended resource's request to its limit).
    limits.update((vendor, str(count)) for vendor, count in spec.gpus)
    if limits:
        resources["limits"] = limits
    # The web app lists data volumes before the workspace; a claim mounted twice is one pod volume.
    volumes: dict[str, JsonObject] = {}
    mounts: list[JsonObject] = []
    for volume in (*spec.data_volumes, *([spec.workspace] if spec.workspace else [])):
        volumes.setdefault(volume.name, {"name": volume.name, "persistentVolumeClaim": {"claimName": volume.name}})
        mounts.append({"name": volume.name, "mountPath": volume.mount_path})
    if spec.shm:  # the web app's "Enable Shared Memory": PyTorch's data loaders need more than 64 MiB
        volumes[SHM_VOLUME] = {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}}
        mounts.append({"name": SHM_VOLUME, "mountPath": SHM_MOUNT})
    container: JsonObject = {
        "name": spec.name,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "resources": resources,
        "volumeMounts": mounts,
        "env": [],
        "securityContext": notebook_container_security(),
    }
    pod: JsonObject = {
        "serviceAccountName": SERVICE_ACCOUNT,
        "securityContext": notebook_pod_security(allow_root=allow_root),
        "containers": [container],
        "volumes": list(volumes.values()),
        "tolerations": [copy.deepcopy(toleration) for toleration in spec.tolerations],
    }
    if spec.affinity is not None:
        pod["affinity"] = copy.deepcopy(spec.affinity)
    return {
        "apiVersion": API_VERSION,
        "kind": "Notebook",
        "metadata": {
            "name": spec.name,
            "namespace": namespace,
            # The controller copies the Notebook's labels to its pod, where PodDefaults select by them
            # (the CRD's pod template has no metadata of its own).
            "labels": {APP_LABEL: spec.name, **dict.fromkeys(spec.configurations, "true")},
            "annotations": annotations,
        },
        "spec": {"template": {"spec": pod}},
    }


def new_claims(spec: NotebookSpec) -> list[Volume]:
    """The volumes this notebook needs created: the new claims, workspace first."""
    volumes = (*([spec.workspace] if spec.workspace else []), *spec.data_volumes)
    return [volume for volume in volumes if not volume.existing]


def pvc_object(namespace: str, volume: Volume, *, notebook: str) -> JsonObject:
    """A PersistentVolumeClaim for a new volume of `notebook` (the cluster's default storage class)."""
    if volume.size is None:
        raise ValueError(f"the new volume {volume.name} has no size")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": volume.name, "namespace": namespace, "labels": {MADE_FOR_LABEL: notebook}},
        "spec": {
            "accessModes": [volume.access_mode],
            "resources": {"requests": {"storage": volume.size}},
        },
    }


def with_made_volumes(body: JsonObject, made: dict[str, str]) -> JsonObject:
    """`body` (a Notebook) recording the claims made for it, {name: uid}."""
    if not made:
        return body
    metadata = _dict(body, "metadata")
    annotations = {**_dict(metadata, "annotations"), VOLUMES_ANNOTATION: json.dumps(made, sort_keys=True)}
    return {**body, "metadata": {**metadata, "annotations": annotations}}


def made_volumes(obj: JsonObject) -> dict[str, str]:
    """The claims the gateway made with this Notebook, {name: uid}; {} when none (or unreadable)."""
    text = _str(_dict(_dict(obj, "metadata"), "annotations"), VOLUMES_ANNOTATION)
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {name: uid for name, uid in data.items() if isinstance(name, str) and isinstance(uid, str) and uid}


def with_injected(body: JsonObject, injected: Injected) -> JsonObject:
    """`body` (a Notebook) recording what applying its configurations put into its pod."""
    metadata = _dict(body, "metadata")
    annotations = {**_dict(metadata, "annotations"), INJECTED_ANNOTATION: injected_record(injected)}
    return {**body, "metadata": {**metadata, "annotations": annotations}}


def injected_configurations(obj: JsonObject) -> Injected | None:
    """What the gateway put into this Notebook's pod from configurations; None when it has no record
    (made elsewhere, or before the gateway kept one) or an unreadable one."""
    text = _dict(_dict(obj, "metadata"), "annotations").get(INJECTED_ANNOTATION)
    return read_injected(text) if isinstance(text, str) else None


def claim_names(obj: JsonObject) -> set[str]:
    """Every claim a Notebook's pod uses, whichever container mounts it."""
    pod = _dict(_dict(_dict(obj, "spec"), "template"), "spec")
    volumes = [volume for volume in _list(pod, "volumes") if isinstance(volume, dict)]
    return {name for volume in volumes if (name := _str(_dict(volume, "persistentVolumeClaim"), "claimName"))}


def stop_patch(now: datetime) -> JsonObject:
    return {"metadata": {"annotations": {STOP_ANNOTATION: now.astimezone(UTC).strftime(TIME_FORMAT)}}}


START_PATCH: JsonObject = {"metadata": {"annotations": {STOP_ANNOTATION: None}}}  # merge patch: null removes


def reconfiguring_start_patch(current: JsonObject, updated: JsonObject, injected: Injected) -> JsonObject:
    """START_PATCH that also gives the pod `updated`'s containers and volumes (`current` with its
    configurations re-applied: they were `injected`), so the pod the controller starts has them.
    A merge patch replaces lists whole, so it names `current`'s resourceVersion: a Notebook edited
    meanwhile is refused (409) rather than overwritten with the old template."""
    metadata = _dict(current, "metadata")
    pod = _dict(_dict(_dict(updated, "spec"), "template"), "spec")
    template = {field: pod[field] for field in ("containers", "volumes") if field in pod}
    return {
        "metadata": {
            "resourceVersion": metadata.get("resourceVersion"),
            "annotations": {STOP_ANNOTATION: None, INJECTED_ANNOTATION: injected_record(injected)},
        },
        "spec": {"template": {"spec": template}},
    }


# -- reading ---------------------------------------------------------------------------------------


def read_notebook(obj: JsonObject, warnings: Iterable[JsonObject], now: datetime) -> Notebook:
    """A Notebook object as the gateway's `Notebook`; `warnings` are Warning events about it."""
    metadata = _dict(obj, "metadata")
    annotations = _dict(metadata, "annotations")
    return Notebook(
        namespace=_str(metadata, "namespace"),
        name=_str(metadata, "name"),
        spec=read_spec(obj),
        status=notebook_status(obj, warnings, now),
        created_at=_time(metadata.get("creationTimestamp")) or now,
        creator=_str(annotations, CREATOR_ANNOTATION) or None,
        stopped=STOP_ANNOTATION in annotations,
        started_at=_time(_dict(_dict(_dict(obj, "status"), "containerState"), "running").get("startedAt")),
        cull_exempt=_str(annotations, CULL_EXEMPT_ANNOTATION).lower() == "true",
    )


def read_spec(obj: JsonObject) -> NotebookSpec:
    """What the user asked for, read back from the pod template (volumes by claim name)."""
    metadata, pod = _dict(obj, "metadata"), _dict(_dict(_dict(obj, "spec"), "template"), "spec")
    name = _str(metadata, "name")
    containers = [c for c in _list(pod, "containers") if isinstance(c, dict)]
    container = next((c for c in containers if c.get("name") == name), containers[0] if containers else {})
    resources = _dict(container, "resources")
    requests, limits = _dict(resources, "requests"), _dict(resources, "limits")
    claims = {}
    shm = False
    for volume in _list(pod, "volumes"):
        if isinstance(volume, dict):
            shm = shm or (_str(volume, "name") == SHM_VOLUME and "emptyDir" in volume)
            claim = _str(_dict(volume, "persistentVolumeClaim"), "claimName")
            if claim:
                claims[_str(volume, "name")] = claim
    workspace, data = None, []
    for mount in _list(container, "volumeMounts"):
        if not isinstance(mount, dict) or _str(mount, "name") not in claims:
            continue  # not a claim (e.g. /dev/shm)
        volume = Volume(name=claims[_str(mount, "name")], mount_path=_str(mount, "mountPath"), existing=True)
        if volume.mount_path == WORKSPACE_MOUNT and workspace is None:
            workspace = volume
        else:
            data.append(volume)
    injected = injected_configurations(obj)
    return NotebookSpec(
        name=name,
        image=_str(container, "image"),
        cpu=_str(requests, "cpu"),
        memory=_str(requests, "memory"),
        cpu_limit=_str(limits, "cpu") or None,
        memory_limit=_str(limits, "memory") or None,
        workspace=workspace,
        data_volumes=tuple(data),
        server_type=_str(_dict(metadata, "annotations"), SERVER_TYPE_ANNOTATION) or "jupyter",
        image_pull_policy=_str(container, "imagePullPolicy") or "IfNotPresent",
        # The configurations the gateway applied to the pod template (none known where a webhook applies them).
        configurations=tuple(injected or ()),
        gpus=read_devices(limits),
        affinity=_dict(pod, "affinity") or None,
        tolerations=tuple(t for t in _list(pod, "tolerations") if isinstance(t, dict)),
        shm=shm,
    )


def read_devices(limits: JsonObject) -> tuple[tuple[str, int], ...]:
    """The device-plugin resources in a container's limits with whole counts, e.g. (("nvidia.com/gpu", 2),)."""
    devices = []
    for key, value in limits.items():
        if key in NOT_DEVICES or key.startswith("hugepages-") or "/" not in key:
            continue
        text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
        if text.isascii() and text.isdigit() and len(text) < 6:
            devices.append((key, int(text)))
    return tuple(devices)


def is_stopped(obj: JsonObject) -> bool:
    return STOP_ANNOTATION in _dict(_dict(obj, "metadata"), "annotations")


def is_routable(obj: JsonObject) -> bool:
    """Whether the gateway routes to this notebook: not stopped and not being deleted."""
    metadata = _dict(obj, "metadata")
    return STOP_ANNOTATION not in _dict(metadata, "annotations") and not metadata.get("deletionTimestamp")


def notebook_status(obj: JsonObject, warnings: Iterable[JsonObject], now: datetime) -> Status:
    """The web app's status, checked in its order: new, stopped, deleting, ready, container state,
    conditions, the newest Warning event, and otherwise a warning that nothing is known."""
    metadata, status = _dict(obj, "metadata"), _dict(obj, "status")
    ready = status.get("readyReplicas", 0)
    ready_replicas = ready if isinstance(ready, int) else 0
    container_state, conditions = _dict(status, "containerState"), _list(status, "conditions")
    created = _time(metadata.get("creationTimestamp"))
    if not container_state and not conditions and created and (now - created).total_seconds() <= NEW_NOTEBOOK_GRACE_S:
        return Status("waiting", "Waiting for StatefulSet to create the underlying Pod.")
    if STOP_ANNOTATION in _dict(metadata, "annotations"):
        if ready_replicas == 0:
            return Status("stopped", "No Pods are currently running for this Notebook Server.")
        return Status("waiting", "Notebook Server is stopping.")
    if metadata.get("deletionTimestamp"):
        return Status("terminating", "Deleting this Notebook Server.")
    if ready_replicas >= 1:
        return Status("ready", "Running")
    if "waiting" in container_state:
        waiting = _dict(container_state, "waiting")
        reason = _str(waiting, "reason")
        if reason == "PodInitializing":
            return Status("waiting", reason)
        message = _str(waiting, "message") or "No available message for container state."
        return Status("warning", f"{reason or 'Undefined'}: {message}")
    for condition in conditions:
        if isinstance(condition, dict) and "reason" in condition:
            return Status("warning", f"{_str(condition, 'reason')}: {_str(condition, 'message')}")
    newest = newest_warning(obj, warnings)
    if newest is not None:
        return Status("warning", newest)
    return Status("warning", "Couldn't find any information for the status of this notebook.")


def newest_warning(obj: JsonObject, events: Iterable[JsonObject]) -> str | None:
    """The message of the newest Warning event about this notebook, ignoring events about an earlier
    notebook of the same name (a different uid, or older than this one)."""
    metadata = _dict(obj, "metadata")
    uid, created = _str(metadata, "uid"), _time(metadata.get("creationTimestamp"))
    newest: tuple[datetime, str] | None = None
    for event in events:
        if _str(event, "type") != "Warning":
            continue
        involved = _dict(event, "involvedObject")
        if _str(involved, "kind") != "Notebook" or _str(involved, "name") != _str(metadata, "name"):
            continue
        when = event_time(event)
        if uid and _str(involved, "uid") and _str(involved, "uid") != uid:
            continue
        if created and when and when < created:
            continue
        if when is not None and (newest is None or when >= newest[0]):
            newest = (when, _str(event, "message"))
    return newest[1] if newest else None


def event_time(event: JsonObject) -> datetime | None:
    """When an event last happened: lastTimestamp, else eventTime, else its creation."""
    for value in (
        event.get("lastTimestamp"),
        event.get("eventTime"),
        _dict(event, "metadata").get("creationTimestamp"),
    ):
        when = _time(value)
        if when is not None:
            return when
    return None


# -- JSON access: anything of the wrong type reads as empty -----------------------------------------


def _dict(obj: JsonObject, key: str) -> JsonObject:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def _list(obj: JsonObject, key: str) -> list[object]:
    value = obj.get(key)
    return value if isinstance(value, list) else []


def _str(obj: JsonObject, key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def _time(value: object) -> datetime | None:
    """An RFC 3339 timestamp (`2024-05-01T12:30:05Z`, or with fractions / an offset), as UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
