"""`GET /api/profiles`, `POST /api/profiles` and `DELETE /api/profiles/<name>?confirm=<name>`:
cluster-admins list, create and delete profiles (a namespace set up for notebooks, or a Kubeflow
Profile); creating and deleting are audited.
"""

from __future__ import annotations

import dataclasses
import logging

from aiohttp import web

from .. import keys
from ..audit import AuditEvent
from ..authz.rules import EVERY_NAMESPACE, Rule
from ..errors import BadRequest, Forbidden, ServiceUnavailable
from ..names import is_dns_label
from ..profiles import Provisioner, describe, parse_profile
from .bodies import read_json
from .policies_api import audit_change

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

PROFILE_BODY_MAX_BYTES = 16 * 1024


@routes.get("/api/profiles", name="api_profiles_list")
async def list_profiles(request: web.Request) -> web.Response:
    _require_cluster_admin(request)
    provisioner = _provisioner(request)
    profiles = [describe(profile) for profile in await provisioner.list_profiles()]
    return web.json_response({"profiles": profiles, "mode": provisioner.mode})


@routes.post("/api/profiles", name="api_profiles_create")
async def create(request: web.Request) -> web.Response:
    _require_cluster_admin(request)
    vendors = [vendor.limits_key for vendor in request.app[keys.SPAWNER].gpu_vendors]
    profile = parse_profile(await read_json(request, PROFILE_BODY_MAX_BYTES), gpu_vendors=vendors)
    provisioner = _provisioner(request)
    request.app[keys.AUDIT].require_writable()  # 503 before anything is made, never after
    await provisioner.create(profile)
    if provisioner.mode == "kubeflow":  # Kubeflow's profile controller mounts the token whatever was asked
        profile = dataclasses.replace(profile, mount_token=True)
    _audit(request, "profile.create", profile.name, {**describe(profile), "mode": provisioner.mode})
    if provisioner.mode == "gateway":  # in Kubeflow the Profile's owner comes in through GATEWAY_KUBEFLOW_POLICIES
        owner = Rule(profile.owner, profile.name, "admin")
        audit_change(request, await request.app[keys.POLICIES].grant(owner, via="profile"))
    return web.json_response({**describe(profile), "mode": provisioner.mode}, status=201)


@routes.delete("/api/profiles/{name}", name="api_profiles_delete")
async def delete(request: web.Request) -> web.Response:
    _require_cluster_admin(request)
    name = request.match_info["name"]
    if not is_dns_label(name):
        raise BadRequest("The profile name must be a DNS-1123 label.", field="name")
    # Deleting a namespace deletes every notebook, volume and job in it: make the caller say it twice.
    if request.query.get("confirm") != name:
        raise BadRequest(f"Add ?confirm={name} to delete profile {name} and everything in it.", field="confirm")
    provisioner = _provisioner(request)
    request.app[keys.AUDIT].require_writable()
    await provisioner.delete(name)
    changes = []
    if provisioner.mode == "gateway":
        # Roles in a namespace that is gone would pass to whoever gets a namespace of that name next.
        manager = request.app[keys.POLICIES]
        for rule in [rule for rule in manager.doc.rules if rule.namespace == name]:
            changes.append(await manager.revoke(rule, via="profile"))
    revoked = [change.rule.to_json() for change in changes if change.rule is not None]
    _audit(request, "profile.delete", name, {"mode": provisioner.mode, "revoked": revoked})
    for change in changes:  # each revoked rule is a policy change of its own, as through the policy API
        audit_change(request, change)
    return web.json_response({"name": name, "deleted": True, "mode": provisioner.mode, "revoked": revoked})


def _require_cluster_admin(request: web.Request) -> None:
    try:
        request.app[keys.AUTHZ].require(request[keys.IDENTITY], EVERY_NAMESPACE, "manage")
    except Forbidden:
        raise Forbidden("Only a cluster-admin may list, create or delete profiles.") from None


def _provisioner(request: web.Request) -> Provisioner:
    provisioner = request.app.get(keys.PROFILES)
    if provisioner is None:
        raise ServiceUnavailable("Profiles need the Kubernetes backend (GATEWAY_BACKEND=kubernetes).")
    return provisioner


def _audit(request: web.Request, action: str, namespace: str, details: dict[str, object]) -> None:
    """After the act (checked writable before it): a file that broke meanwhile keeps the event waiting."""
    request.app[keys.AUDIT].emit_after(
        AuditEvent.by(
            request[keys.IDENTITY],
            action,
            "allowed",
            namespace=namespace,
            request_id=request.get(keys.REQUEST_ID, "-"),
            client_ip=request.get(keys.CLIENT_IP),
            details=details,
        )
    )
