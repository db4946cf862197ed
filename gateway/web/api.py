"""The notebook servers JSON API, on the Jupyter web app's routes and in its response shapes.

Each handler authorizes once (`authz.require`), talks only to the backend, and audits every
create / stop / start / delete, whether it succeeded, failed or was denied.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC

from aiohttp import web

from .. import keys
from ..activity import rfc3339
from ..audit import Outcome
from ..authz.rules import Action
from ..backends import Notebook
from ..errors import BadRequest, Forbidden, GatewayError, InvalidPath
from ..kube.kubeflow_names import CREATOR_ANNOTATION, SERVER_TYPE_ANNOTATION, STOP_ANNOTATION
from ..names import is_dns_label
from ..notebook_form import check_one_notebook_grant, parse_notebook_form
from ..routing import NOTEBOOK_ROOT
from ..spawner import SpawnerConfig
from . import audit_request
from .api_models import NotebookPatch, parse_body
from .bodies import read_json

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

# Bodies are tiny forms; the app itself sets no size cap (uploads are streamed to notebooks).
MAX_BODY_BYTES = 64 * 1024

# -- routes ----------------------------------------------------------------------------------------


@routes.get("/api/config", name="api_config")
async def get_config(request: web.Request) -> web.Response:
    # Not namespaced, so no authorization decision: these are the form's defaults, the same for everyone.
    return success(request, config=spawner_form_defaults(request.app[keys.SPAWNER]))


@routes.get("/api/namespaces/{namespace}/notebooks", name="api_notebooks")
async def list_notebooks(request: web.Request) -> web.Response:
    namespace = namespace_of(request)
    _authorize(request, namespace, "view")
    notebooks = await request.app[keys.BACKEND].list(namespace)
    return success(request, notebooks=await notebook_items(request, notebooks))


@routes.get("/api/namespaces/{namespace}/notebooks/{name}", name="api_notebook")
async def get_notebook(request: web.Request) -> web.Response:
    namespace, name = namespace_of(request), name_of(request)
    _authorize(request, namespace, "view", name)
    notebook = await request.app[keys.BACKEND].get(namespace, name)
    return success(request, notebook=(await notebook_items(request, [notebook]))[0])


@routes.post("/api/namespaces/{namespace}/notebooks", name="api_create_notebook")
async def create_notebook(request: web.Request) -> web.Response:
    namespace = namespace_of(request)
    with _audited(request, "notebook.create", namespace) as audit:
        body = await read_json(request, MAX_BODY_BYTES)
        spec = parse_notebook_form(body, namespace=namespace, defaults=request.app[keys.SPAWNER])
        volumes = [volume.name for volume in (spec.workspace, *spec.data_volumes) if volume is not None]
        audit.notebook = spec.name
        audit.details.update(image=spec.image, cpu=spec.cpu, memory=spec.memory, volumes=volumes)
        if spec.server_type != "jupyter":
            audit.details.update(server_type=spec.server_type)
        if spec.gpus:
            audit.details.update(gpus={vendor: count for vendor, count in spec.gpus})
        _authorize(request, namespace, "create", spec.name)
        if not _allowed(request, namespace, "create"):  # a grant on this notebook only
            check_one_notebook_grant(spec, request.app[keys.SPAWNER])
        notebook = await request.app[keys.BACKEND].create(namespace, spec, creator=request[keys.IDENTITY].subject)
        request.app[keys.ACTIVITY].touch(namespace, spec.name)  # idle time counts from here
    log.info("notebook %s/%s created by %s", namespace, spec.name, request[keys.IDENTITY].subject)
    # The web app answers 200 (not 201) with a message; existing clients check for exactly that.
    return success(
        request, message="Notebook created successfully.", notebook=(await notebook_items(request, [notebook]))[0]
    )


@routes.patch("/api/namespaces/{namespace}/notebooks/{name}", name="api_patch_notebook")
async def patch_notebook(request: web.Request) -> web.Response:
    namespace, name = namespace_of(request), name_of(request)
    stopped = _stopped(await read_json(request, MAX_BODY_BYTES))
    action: Action = "stop" if stopped else "start"
    with _audited(request, f"notebook.{action}", namespace, name) as audit:
        _authorize(request, namespace, action, name)
        backend = request.app[keys.BACKEND]
        notebook = await (backend.stop(namespace, name) if stopped else backend.start(namespace, name))
        if not stopped:
            request.app[keys.ACTIVITY].touch(namespace, name)  # a start is use: idle time counts from here
        if not stopped and notebook.spec.configurations:  # re-applied by the gateway (no PodDefault webhook)
            audit.details.update(configurations=list(notebook.spec.configurations))
    verb = "stopped" if stopped else "started"
    return success(
        request,
        message=f"Notebook {name} {verb} successfully.",
        notebook=(await notebook_items(request, [notebook]))[0],  # with its activity and cull time, as the list
    )


@routes.delete("/api/namespaces/{namespace}/notebooks/{name}", name="api_delete_notebook")
async def delete_notebook(request: web.Request) -> web.Response:
    """`?volumes=true` also deletes the volumes the gateway made with the notebook (never attached ones)."""
    namespace, name = namespace_of(request), name_of(request)
    with _audited(request, "notebook.delete", namespace, name) as audit:
        volumes = _flag(request, "volumes")
        audit.details.update(delete_volumes=volumes)
        _authorize(request, namespace, "delete", name)
        deletion = await request.app[keys.BACKEND].delete(namespace, name, volumes=volumes)
        await request.app[keys.ACTIVITY].forget(namespace, name)  # a new server of this name starts afresh
        kept = [{"name": volume, "reason": why} for volume, why in deletion.kept]
        if volumes:
            audit.details.update(volumes_deleted=list(deletion.volumes), volumes_kept=kept)
    message = f"Notebook {name} successfully deleted."
    if not volumes:
        return success(request, message=message)
    if deletion.volumes:
        message += f" Volumes deleted: {', '.join(deletion.volumes)}."
    message += "".join(f" Volume {volume} kept: {why}." for volume, why in deletion.kept)
    return success(request, message=message, volumes_deleted=list(deletion.volumes), volumes_kept=kept)


# -- response shapes ---------------------------------------------------------------------------


async def notebook_items(request: web.Request, notebooks: list[Notebook]) -> list[dict[str, object]]:
    """`notebook_item` for each, with its last activity (one Redis read for them all)."""
    last = await request.app[keys.ACTIVITY].last((notebook.namespace, notebook.name) for notebook in notebooks)
    culling = request.app.get(keys.CULLING)
    items = []
    for notebook in notebooks:
        item = notebook_item(notebook, request.app[keys.SPAWNER], used := last.get((notebook.namespace, notebook.name)))
        culls_at = culling.culls_at(notebook, used) if culling is not None else None
        item["cull_at"] = rfc3339(culls_at) if culls_at is not None else ""  # ours: when idle culling stops it
        items.append(item)
    return items


def notebook_item(notebook: Notebook, config: SpawnerConfig, last_activity: float | None = None) -> dict[str, object]:
    """One notebook as the Jupyter web app lists it, plus a few facts of ours (`url`, `notes`, limits).
    `last_activity`: a Unix time, shown as the web app shows Kubeflow's last-activity annotation."""
    spec = notebook.spec
    created = notebook.created_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    timestamp = created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # Kubernetes' creationTimestamp format
    annotations = {SERVER_TYPE_ANNOTATION: spec.server_type}
    if notebook.creator:
        annotations[CREATOR_ANNOTATION] = notebook.creator
    if notebook.stopped:
        annotations[STOP_ANNOTATION] = "true"
    return {
        "name": notebook.name,
        "namespace": notebook.namespace,
        "serverType": spec.server_type,
        "age": timestamp,
        "last_activity": rfc3339(last_activity) if last_activity else "",
        "image": spec.image,
        "shortImage": spec.image.rsplit("/", 1)[-1],
        "cpu": spec.cpu,
        "memory": spec.memory,
        "cpuLimit": spec.cpu_limit,
        "memoryLimit": spec.memory_limit,
        "gpus": gpu_summary(spec.gpus, config),
        "volumes": [volume.name for volume in (spec.workspace, *spec.data_volumes) if volume is not None],
        "status": {"phase": notebook.status.phase, "message": notebook.status.message, "state": ""},
        "stopped": notebook.stopped,
        "url": f"{NOTEBOOK_ROOT}{notebook.namespace}/{notebook.name}/",
        "notes": list(notebook.notes),
        "metadata": {
            "name": notebook.name,
            "namespace": notebook.namespace,
            "creationTimestamp": timestamp,
            "annotations": annotations,
            "labels": {},
        },
    }


def gpu_summary(gpus: tuple[tuple[str, int], ...], config: SpawnerConfig) -> dict[str, object]:
    """The web app's `gpus` of a listed notebook: the total of the configured vendors' devices and
    a message such as "1 NVIDIA, 2 AMD" (other device resources are not GPUs to it)."""
    count, parts = 0, []
    for vendor in config.gpu_vendors:
        for key, number in gpus:
            if key == vendor.limits_key:
                count += number
                parts.append(f"{number} {vendor.ui_name}")
    return {"count": count, "message": ", ".join(parts)}


def spawner_form_defaults(config: SpawnerConfig) -> dict[str, object]:
    """The defaults in the shape of spawner_ui_config.yaml's `spawnerFormDefaults`, which the web app's
    form reads from /api/config. Options the gateway does not offer are present and empty."""
    read_only = config.read_only

    def section(name: str, value: object, key: str | None = None, **extra: object) -> dict[str, object]:
        return {"value": value, **extra, **({"readOnly": True} if (key or name) in read_only else {})}

    def group(server_type: str) -> dict[str, object]:
        default, options = config.images_for(server_type)
        return {"value": default, "options": list(options)}

    new_pvc = {
        "metadata": {"name": config.workspace_name_template},
        "spec": {
            "resources": {"requests": {"storage": config.workspace_size}},
            "accessModes": [config.workspace_access_mode],
        },
    }
    vendors = [{"limitsKey": vendor.limits_key, "uiName": vendor.ui_name} for vendor in config.gpu_vendors]
    gpus = {"vendor": config.gpu_vendor, "vendors": vendors, "num": str(config.gpu_num or "none")}
    return {
        "image": section("image", config.image, options=list(config.images)),
        "imageGroupOne": group("group-one"),
        "imageGroupTwo": group("group-two"),
        "allowCustomImage": config.allow_custom_image,
        "hideRegistry": config.hide_registry,
        "hideTag": config.hide_tag,
        "imagePullPolicy": section("imagePullPolicy", config.image_pull_policy),
        "cpu": section("cpu", config.cpu, limitFactor=config.cpu_limit_factor or "none"),
        "memory": section("memory", config.memory, limitFactor=config.memory_limit_factor or "none"),
        "workspaceVolume": section(
            "workspaceVolume", {"mount": config.workspace_mount, "newPvc": new_pvc}, "workspace"
        ),
        "dataVolumes": section("dataVolumes", [], "datavols"),
        "gpus": section("gpus", gpus, counts=list(config.gpu_counts)),
        "affinityConfig": section(
            "affinityConfig",
            config.affinity_default,
            options=[
                {"configKey": o.key, "displayName": o.display_name, "affinity": o.value}
                for o in config.affinity_options
            ],
        ),
        "tolerationGroup": section(
            "tolerationGroup",
            config.toleration_default,
            options=[
                {"groupKey": o.key, "displayName": o.display_name, "tolerations": o.value}
                for o in config.toleration_options
            ],
        ),
        "shm": section("shm", config.shm),
        "configurations": section("configurations", []),
        "environment": {"value": {}},
    }


def success(request: web.Request, **payload: object) -> web.Response:
    """The web app's envelope: `success`, `status` and `user`."""
    return web.json_response({"success": True, "status": 200, "user": request[keys.IDENTITY].subject, **payload})


# -- request parts ---------------------------------------------------------------------------


def namespace_of(request: web.Request) -> str:
    namespace = request.match_info["namespace"]
    if not is_dns_label(namespace):
        raise InvalidPath(f"Namespace {namespace[:100]!r} is not a valid DNS-1123 label.", field="namespace")
    return namespace


def name_of(request: web.Request) -> str:
    name = request.match_info["name"]
    if not is_dns_label(name):
        raise InvalidPath(f"Notebook name {name[:100]!r} is not a valid DNS-1123 label.", field="name")
    return name


def _authorize(request: web.Request, namespace: str, action: Action, name: str | None = None) -> None:
    request.app[keys.AUTHZ].require(request[keys.IDENTITY], namespace, action, name)


def _allowed(request: web.Request, namespace: str, action: Action) -> bool:
    """Whether the user may do `action` namespace-wide (not only on one notebook)."""
    try:
        _authorize(request, namespace, action)
    except Forbidden:
        return False
    return True


def _flag(request: web.Request, key: str) -> bool:
    """A boolean query parameter: absent, `false` or `true` (anything else is refused, not guessed)."""
    value = request.query.get(key, "false").lower()
    if value not in ("true", "false"):
        raise BadRequest(f"{key} must be true or false.", field=key)
    return value == "true"


def _stopped(body: object) -> bool:
    """A PATCH body is exactly `{"stopped": true}` or `{"stopped": false}`."""
    return parse_body(NotebookPatch, body).stopped


# -- audit ---------------------------------------------------------------------------------------


@dataclass
class _AuditNote:
    """What the handler learns while it works, for the event written when it ends."""

    notebook: str | None
    details: dict[str, object] = field(default_factory=dict)


@contextlib.contextmanager
def _audited(request: web.Request, action: str, namespace: str, notebook: str | None = None) -> Iterator[_AuditNote]:
    """Emit one audit event for the block: allowed when it returns, denied or failed when it raises."""
    note = _AuditNote(notebook)
    try:
        request.app[keys.AUDIT].require_writable()  # fail closed before acting, not after
        yield note
    except GatewayError as exc:
        outcome: Outcome = "denied" if isinstance(exc, Forbidden) else "failed"
        _emit(request, action, outcome, namespace, note, reason=exc.message, error=exc.code)
        raise
    except Exception:  # a bug: still on record, then error_pages logs it and answers 500
        _emit(request, action, "failed", namespace, note, reason="internal error", error="internal_error")
        raise
    _emit(request, action, "allowed", namespace, note, done=True)


def _emit(
    request: web.Request,
    action: str,
    outcome: Outcome,
    namespace: str,
    note: _AuditNote,
    *,
    reason: str = "",
    error: str | None = None,
    done: bool = False,
) -> None:
    """`done`: the act succeeded (the log was writable before it), so if the file broke meanwhile the
    event waits for it rather than answering 503 for a change that stands."""
    details = {**note.details, **({"error": error} if error else {})}
    event = audit_request.event(
        request, action, outcome, namespace=namespace, notebook=note.notebook, reason=reason, details=details
    )
    if done:
        request.app[keys.AUDIT].emit_after(event)
    else:
        request.app[keys.AUDIT].emit(event)
