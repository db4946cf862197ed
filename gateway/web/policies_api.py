"""The admins' JSON API: `/api/policies` (list, grant, revoke, replace), `/api/policies/check`
("may X do Y in Z, and which rules say so") and `/api/namespaces/<ns>/access`.

Namespace admins act inside their namespaces only; cluster-admins anywhere, and alone may touch
cluster roles, rules for every namespace (`*`) and the whole rule set. Every change is audited.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator

from aiohttp import web

from .. import keys
from ..audit import AuditEvent
from ..authz.manager import Change
from ..authz.rules import (
    CLUSTER_ROLES,
    EVERY_NAMESPACE,
    ROLES,
    PolicyError,
    Rule,
    normalise_subject,
    rule_from_json,
)
from ..errors import BadRequest, Conflict, Forbidden, InvalidPath, RuleLimitReached, ServiceUnavailable
from ..names import is_dns_label
from .api_models import AccessCheck, PolicyReplace, parse_body
from .bodies import read_json

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

RULE_BODY_MAX_BYTES = 16 * 1024
RULES_BODY_MAX_BYTES = 32 * 1024 * 1024  # PUT: a whole rule set (100k rules is about 8 MiB)
MAX_NAME_CHARS = 256

CLUSTER_ONLY = (
    "Only a cluster-admin may change cluster roles (cluster-admin, auditor), rules for every namespace (*), "
    "or the whole rule set."
)


@routes.get("/api/policies", name="api_policies")
async def list_policies(request: web.Request) -> web.Response:
    query = request.query
    namespace, subject, role = query.get("namespace"), query.get("subject"), query.get("role")
    subject = normalise_subject(subject) if subject is not None else None
    if role is not None and role not in ROLES:
        raise BadRequest(f"role must be one of {', '.join(ROLES)}.", field="role")
    if namespace is not None and namespace != EVERY_NAMESPACE and not is_dns_label(namespace):
        raise BadRequest("namespace must be a DNS-1123 label or *.", field="namespace")
    # Without a namespace filter this lists everyone's rules: cluster-admins only.
    _require_manage(request, namespace or EVERY_NAMESPACE)
    manager = request.app[keys.POLICIES]
    doc = manager.doc
    rules = [
        rule.to_json()
        for rule in doc.rules
        if (namespace is None or rule.namespace == namespace)
        and (subject is None or rule.subject == subject)
        and (role is None or rule.role == role)
    ]
    body = {"version": doc.version, "rules": rules, "bootstrap_admins": list(manager.bootstrap_admins)}
    return web.json_response(body, headers=_etag(doc.version))


@routes.post("/api/policies", name="api_policies_grant")
async def grant(request: web.Request) -> web.Response:
    body = await read_json(request, RULE_BODY_MAX_BYTES)
    rule = _rule(body)
    _authorize_change(request, rule)
    cluster_level = _cluster_level(request)
    if cluster_level:
        if rule.effect == "deny" and isinstance(body, dict) and "guard" not in body:
            # A deny set from above is aimed at someone below: the namespace's own admin must not lift it.
            rule = dataclasses.replace(rule, guard="cluster")
    elif rule.guard == "cluster":
        raise Forbidden("Only a cluster-admin may set guard cluster (a rule only cluster-admins may change).")
    request.app[keys.AUDIT].require_writable()  # 503 before the change, never after it
    # A namespace admin's grants count against their namespace's limit; a cluster-admin's do not.
    limit = None if cluster_level else request.app[keys.SETTINGS].namespace_rule_limit
    with _store_errors():
        try:
            change = await request.app[keys.POLICIES].grant(rule, if_match(request), limit=limit)
        except RuleLimitReached:
            request.app[keys.METRICS].rule_limit_refusals.inc()
            raise
    audit_change(request, change)
    return _changed(change)


@routes.delete("/api/policies", name="api_policies_revoke")
async def revoke(request: web.Request) -> web.Response:
    rule = _rule(await read_json(request, RULE_BODY_MAX_BYTES))
    _authorize_change(request, rule)
    request.app[keys.AUDIT].require_writable()  # 503 before the change, never after it
    with _store_errors():
        change = await request.app[keys.POLICIES].revoke(rule, if_match(request), cluster_level=_cluster_level(request))
    audit_change(request, change)
    return _changed(change)


@routes.put("/api/policies", name="api_policies_replace")
async def replace(request: web.Request) -> web.Response:
    wanted = parse_body(PolicyReplace, await read_json(request, RULES_BODY_MAX_BYTES))
    rules = []
    for index, item in enumerate(wanted.rules):
        try:
            rules.append(rule_from_json(item))
        except PolicyError as exc:
            raise BadRequest(f"rules[{index}]: {exc.message}", field=f"rules[{index}].{exc.field or ''}") from None
    _require_manage(request, EVERY_NAMESPACE, CLUSTER_ONLY)
    request.app[keys.AUDIT].require_writable()
    with _store_errors():
        before, after, changes = await request.app[keys.POLICIES].replace_rules(rules, if_match(request))
    for change in changes:
        audit_change(request, change)
    added = sum(change.action == "policy.grant" for change in changes)
    body = {"version": after, "previous_version": before, "added": added, "removed": len(changes) - added}
    return web.json_response(body, headers=_etag(after))


@routes.post("/api/policies/check", name="api_policies_check")
async def check(request: web.Request) -> web.Response:
    asked = parse_body(AccessCheck, await read_json(request, RULE_BODY_MAX_BYTES))
    user, groups, namespace, action, notebook = asked.user, asked.groups, asked.namespace, asked.action, asked.notebook
    _require_manage(request, namespace)
    username = user.lower() if "@" in user else user  # as sign-in normalises it
    explanation = request.app[keys.POLICIES].authorizer.explain(
        username, tuple(sorted(set(groups))), namespace, action, notebook
    )
    return web.json_response(explanation.to_json())


@routes.get("/api/namespaces/{namespace}/access", name="api_namespace_access")
async def access(request: web.Request) -> web.Response:
    namespace = request.match_info["namespace"]
    if not is_dns_label(namespace):
        raise InvalidPath(f"Namespace {namespace[:100]!r} is not a valid DNS-1123 label.", field="namespace")
    _require_manage(request, namespace)
    authorizer = request.app[keys.POLICIES].authorizer
    entries = [
        {**rule.to_json(), "kind": rule.kind, **source.to_json()} for rule, source in authorizer.access(namespace)
    ]
    return web.json_response({"namespace": namespace, "version": authorizer.version, "access": entries})


# -- authorization -------------------------------------------------------------------------------


def _require_manage(request: web.Request, namespace: str, refusal: str | None = None) -> None:
    """Admin of `namespace`, or cluster-admin (who may manage anywhere, even where a deny rule
    stops them using notebooks, so that they can always repair the policy)."""
    authz, identity = request.app[keys.AUTHZ], request[keys.IDENTITY]
    if namespace != EVERY_NAMESPACE:
        try:
            authz.require(identity, namespace, "manage")
            return
        except Forbidden:
            pass
    try:
        authz.require(identity, EVERY_NAMESPACE, "manage")
    except Forbidden:
        where = "every namespace (*)" if namespace == EVERY_NAMESPACE else f"namespace {namespace}"
        raise Forbidden(
            refusal or f"You may not manage roles in {where}: that takes admin there, or cluster-admin."
        ) from None


def _cluster_level(request: web.Request) -> bool:
    """Whether the caller manages roles everywhere (a cluster-admin): above every namespace admin."""
    try:
        request.app[keys.AUTHZ].require(request[keys.IDENTITY], EVERY_NAMESPACE, "manage")
    except Forbidden:
        return False
    return True


def _authorize_change(request: web.Request, rule: Rule) -> None:
    """A refusal is audited as `access.denied`, like every 403 on the API."""
    cluster_wide = rule.role in CLUSTER_ROLES or rule.namespace == EVERY_NAMESPACE
    _require_manage(request, rule.namespace, CLUSTER_ONLY if cluster_wide else None)


# -- request and response parts ------------------------------------------------------------------


def _rule(body: object) -> Rule:
    try:
        return rule_from_json(body)
    except PolicyError as exc:
        raise BadRequest(f"{exc.message}.", field=exc.field) from None


def if_match(request: web.Request) -> str | None:
    """The version named by If-Match (`abc`, `"abc"` or `W/"abc"`); None when absent or `*`."""
    value = request.headers.get("If-Match", "").strip()
    if value in ("", "*"):
        return None
    return value.removeprefix("W/").strip('"')


def _etag(version: str) -> dict[str, str]:
    return {"ETag": f'"{version}"', "Cache-Control": "no-store"}


def _changed(change: Change) -> web.Response:
    assert change.rule is not None
    body = {"version": change.version_after, "changed": change.changed, "rule": change.rule.to_json()}
    return web.json_response(body, headers=_etag(change.version_after))


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    """A malformed policy file on disk blocks changes through the API until someone fixes it (409);
    a store that cannot be written is a 503."""
    try:
        yield
    except PolicyError as exc:
        raise Conflict(f"The stored policies are malformed ({exc}); fix them before changing policies here.") from None
    except OSError as exc:  # e.g. a read-only mount: the policies can be read, not changed here
        log.error("writing the policy store failed: %s", exc)
        raise ServiceUnavailable(f"The policy store cannot be written ({exc.strerror or exc}).") from None


# -- audit ---------------------------------------------------------------------------------------


def audit_change(request: web.Request, change: Change) -> None:
    """`policy.grant` / `policy.revoke`, with the rule, the store version before and after, and
    whether anything changed (a grant of a rule already there changes nothing). The change is made by
    now, so an audit file that broke since `require_writable` keeps the event waiting rather than
    answering 503 for a change that stands."""
    rule = change.rule
    request.app[keys.AUDIT].emit_after(
        AuditEvent(
            action=change.action,
            outcome="allowed",
            actor=request[keys.IDENTITY].subject,
            namespace=rule.namespace if rule else None,
            notebook=rule.notebook if rule else None,
            request_id=request.get(keys.REQUEST_ID, "-"),
            client_ip=request.get(keys.CLIENT_IP),
            details=change.details(),
        )
    )


def reload_audit(app: web.Application) -> Callable[[Change, str | None], None]:
    """What the policy watcher calls after each reload it tried: one `policy.reload` event."""

    def emit(change: Change, error: str | None) -> None:
        if error:
            app[keys.METRICS].policy_reloads_rejected.inc()
        app[keys.AUDIT].emit(
            AuditEvent(
                action="policy.reload",
                outcome="failed" if error else "allowed",
                actor="-",
                reason=error or "",
                details=change.details(),
            )
        )

    return emit
