"""Audit events for a request: who (identity, session hash), from where (client IP, user agent) and
which request (its id) are read from the request once, here, for every handler and middleware."""

from __future__ import annotations

import logging

from aiohttp import web

from .. import keys
from ..audit import AuditEvent, Outcome, session_hash
from ..errors import GatewayError
from ..identity import Identity
from ..routing import NOTEBOOK_ROOT
from ..sessions import Session

log = logging.getLogger(__name__)


def event(
    request: web.Request,
    action: str,
    outcome: Outcome,
    *,
    identity: Identity | None = None,
    session: Session | None = None,
    **fields: object,
) -> AuditEvent:
    """An event for `request`, by its signed-in identity unless another is given (at sign-in, the
    new session's, which is not on the request yet)."""
    identity = identity or request.get(keys.IDENTITY)
    session = session or request.get(keys.SESSION)
    context: dict[str, object] = {
        "request_id": request.get(keys.REQUEST_ID, "-"),
        "client_ip": request.get(keys.CLIENT_IP) or request.remote,
        "user_agent": request.headers.get("User-Agent"),
        "session": session_hash(session.id) if session is not None else None,
    }
    if identity is None:
        return AuditEvent(action=action, outcome=outcome, actor="-", **(context | fields))  # type: ignore[arg-type]
    return AuditEvent.by(identity, action, outcome, **(context | fields))


def emit(
    request: web.Request,
    action: str,
    outcome: Outcome,
    *,
    namespace: str | None = None,
    notebook: str | None = None,
    reason: str = "",
    details: dict[str, object] | None = None,
    done: bool = False,
) -> None:
    """Emit an event for `request`. `done`: the act is over (checked with `require_writable()` before it),
    so nothing is left to refuse: if the file broke meanwhile the event waits for it instead of a 503."""
    audit_event = event(
        request, action, outcome, namespace=namespace, notebook=notebook, reason=reason, details=details or {}
    )
    if done:
        request.app[keys.AUDIT].emit_after(audit_event)
    else:
        request.app[keys.AUDIT].emit(audit_event)


def refusal(request: web.Request, exc: GatewayError) -> None:
    """`access.denied` for a 401 or 403 on a notebook or an API route; for an anonymous request, only
    the client's first in the window (`audit.sampling`)."""
    if exc.status not in (401, 403) or not request.path.startswith((NOTEBOOK_ROOT, "/api/")):
        return
    if request.get(keys.IDENTITY) is None and request.app[keys.SETTINGS].audit_anonymous_refusals == "sampled":
        if not request.app[keys.REFUSALS].admit(request.get(keys.CLIENT_IP) or request.remote or "-"):
            return  # counted into this window's access.denied_summary
    target = request.get(keys.NOTEBOOK_PATH)
    details = {"status": exc.status, "code": exc.code, "method": request.method, "path": request.path[:500]}
    try:
        emit(
            request,
            "access.denied",
            "denied",
            namespace=target.namespace if target else request.match_info.get("namespace"),
            notebook=target.name if target else request.match_info.get("name"),
            reason=exc.message,
            details=details,
        )
    except GatewayError:  # not a must-audit event, so only a bug gets here; the refusal stands
        log.exception("could not audit a refusal")
