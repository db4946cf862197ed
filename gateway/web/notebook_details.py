"""A notebook server's detail page and the JSON routes behind it, on the Jupyter web app's paths:
`.../notebooks/<name>/pod`, `.../pod/<pod>/logs`, `.../events`, plus `.../resource` (ours: the YAML).

Everything here needs `view` on the server (the list's rule). The gateway never reads pods: `pod` is
what the Notebook's status says of its pod, and `logs` read only that pod's log, bounded in lines and
bytes by the backend (`LOG_TAIL_LINES`, `LOG_TAIL_BYTES`). Log lines, events and YAML are hostile text:
the page's templates escape them, and the JSON routes return them as strings.
"""

from __future__ import annotations

import yaml
from aiohttp import web

from .. import keys
from ..backends import LOG_TAIL_LINES, JsonObject, ServerDetails
from ..errors import BadRequest, MethodNotSupported, NotFound
from .api import name_of, namespace_of, notebook_items, success
from .pages import render

routes = web.RouteTableDef()

BASE = "/api/namespaces/{namespace}/notebooks/{name}"


@routes.get(BASE + "/pod", name="api_notebook_pod")
async def get_pod(request: web.Request) -> web.Response:
    namespace, name, details = _allowed(request)
    obj = await details.resource(namespace, name)
    return success(request, pod=_pod_summary(details.pod_name(namespace, name), namespace, obj))


@routes.get(BASE + "/pod/{pod}/logs", name="api_notebook_logs")
async def get_logs(request: web.Request) -> web.Response:
    namespace, name, details = _allowed(request)
    if request.match_info["pod"] != details.pod_name(namespace, name):  # only this server's pod, never another
        raise NotFound(f"Notebook server {namespace}/{name} runs in no pod of that name.")
    log = await details.logs(namespace, name, tail_lines=_tail(request))
    return success(request, logs=list(log.lines), note=log.note)


@routes.get(BASE + "/events", name="api_notebook_events")
async def get_events(request: web.Request) -> web.Response:
    namespace, name, details = _allowed(request)
    return success(request, events=await details.events(namespace, name))


@routes.get(BASE + "/resource", name="api_notebook_resource")
async def get_resource(request: web.Request) -> web.Response:
    namespace, name, details = _allowed(request)
    return success(request, resource=await details.resource(namespace, name))


@routes.get("/notebooks/{namespace}/{name}", name="notebook_page")
async def detail_page(request: web.Request) -> web.Response:
    namespace, name, details = _allowed(request)
    notebook = await request.app[keys.BACKEND].get(namespace, name)
    [item] = await notebook_items(request, [notebook])
    obj = await details.resource(namespace, name)
    log = await details.logs(namespace, name, tail_lines=_tail(request))
    status = obj.get("status")
    conditions = status.get("conditions") if isinstance(status, dict) else None
    return render(
        request,
        "notebook_detail.html",
        current="notebooks",
        notebook=item,
        conditions=[c for c in conditions if isinstance(c, dict)] if isinstance(conditions, list) else [],
        events=await details.events(namespace, name),
        log=log,
        tail=_tail(request),
        resource_yaml=yaml.safe_dump(obj, sort_keys=False, allow_unicode=True),
    )


def _allowed(request: web.Request) -> tuple[str, str, ServerDetails]:
    """The path's server, once the user may view it (403 otherwise, before anything is looked up)."""
    namespace, name = namespace_of(request), name_of(request)
    request.app[keys.AUTHZ].require(request[keys.IDENTITY], namespace, "view", name)
    backend = request.app[keys.BACKEND]
    if not isinstance(backend, ServerDetails):
        raise MethodNotSupported(f"The {backend.name} backend keeps no details of its servers.")
    return namespace, name, backend


def _tail(request: web.Request) -> int:
    raw = request.query.get("tail", str(LOG_TAIL_LINES))
    if not raw.isdigit() or not 1 <= int(raw) <= LOG_TAIL_LINES:
        raise BadRequest(f"tail must be a whole number from 1 to {LOG_TAIL_LINES}.", field="tail")
    return int(raw)


def _pod_summary(pod: str, namespace: str, obj: JsonObject) -> JsonObject:
    """What the Notebook's status says of its pod (the controller copies the container's state and the
    pod's conditions there): the gateway has no right to read the pod itself."""
    status = obj.get("status")
    status = status if isinstance(status, dict) else {}
    return {
        "metadata": {"name": pod, "namespace": namespace},
        "status": {key: status[key] for key in ("containerState", "conditions", "phase", "startedAt") if key in status},
    }
