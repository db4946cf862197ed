"""Audit events: the typed, versioned record of one security-relevant act, and its JSON form.

`ACTIONS` is the catalogue of actions (docs/security.md describes each); `AuditEvent.to_record()`
is the flat JSON object every sink receives, with nothing secret in it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, get_args

from ..identity import Identity

log = logging.getLogger(__name__)

# Bump when a field changes meaning or goes away; adding a field with a default does not need it.
SCHEMA_VERSION = 1
# The JSON Schema of `to_record()` (with the chain fields the files add): keep it with every field added.
SCHEMA_PATH = Path(__file__).with_name("schema") / f"audit-event.v{SCHEMA_VERSION}.json"

Outcome = Literal["allowed", "denied", "failed"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)

# Free-text fields are cut to these lengths, so one request cannot write a megabyte into the log.
MAX_REASON = 1000
MAX_USER_AGENT = 512
MAX_TEXT = 2000


@dataclass(frozen=True, slots=True)
class ActionInfo:
    """What an action means. `must_audit`: when its `allowed` event cannot be written to the audit
    file, the act is refused (GATEWAY_AUDIT_MODE=fail_closed) rather than done unrecorded."""

    description: str
    must_audit: bool = False


ACTIONS: dict[str, ActionInfo] = {
    "auth.login": ActionInfo("A sign-in finished: allowed, or failed with the reason.", must_audit=True),
    "auth.logout": ActionInfo("A session was ended by the user or by the provider (back-channel)."),
    "auth.refresh_failed": ActionInfo("Refreshing a session's tokens failed; details say if the session ended."),
    "auth.rate_limited": ActionInfo("A sign-in was refused after too many failures (by client IP or user)."),
    "notebook.create": ActionInfo("A notebook server was created (image, CPU, memory, volumes).", must_audit=True),
    "notebook.stop": ActionInfo("A notebook server was stopped.", must_audit=True),
    "notebook.start": ActionInfo("A stopped notebook server was started.", must_audit=True),
    "notebook.delete": ActionInfo("A notebook server was deleted.", must_audit=True),
    "notebook.culled": ActionInfo(
        "Idle culling stopped a notebook server nobody used for GATEWAY_CULL_IDLE_AFTER (idle seconds, last activity).",
        must_audit=True,
    ),
    # Not must-audit: the Notebook already exists (made with kubectl or another tool), so nothing can be refused.
    "notebook.discovered": ActionInfo(
        "A Notebook the gateway did not create was first seen (uid; its creator annotation, which is a claim)."
    ),
    "notebook.access": ActionInfo(
        "A session's first proxied request to a server, or a WebSocket (on close, with duration and bytes).",
        must_audit=True,
    ),
    "access.denied": ActionInfo(
        "A request to a notebook or an API route was answered 401 or 403 (anonymous ones: the first per "
        "client per window; see access.denied_summary)."
    ),
    "access.denied_summary": ActionInfo(
        "Anonymous refusals in one window beyond the first per client: how many, from how many clients, the top ones."
    ),
    "policy.grant": ActionInfo("A role was granted (who, before and after, store version).", must_audit=True),
    "policy.revoke": ActionInfo("A role was revoked (who, before and after, store version).", must_audit=True),
    # Not must-audit: a reload is noticed, not requested, so there is nobody to refuse.
    "policy.reload": ActionInfo("The policies were reloaded from their store (version)."),
    "profile.create": ActionInfo(
        "A profile (a namespace, or a Kubeflow Profile) was created (owner, quota).", must_audit=True
    ),
    "profile.delete": ActionInfo("A profile and its namespace were deleted.", must_audit=True),
    "audit.read": ActionInfo("Someone read the audit log (filters, format, number of events).", must_audit=True),
    "configuration.create": ActionInfo(
        "A configuration (PodDefault) was created (env names, Secret names and mount paths; never values).",
        must_audit=True,
    ),
    "configuration.delete": ActionInfo("A configuration (PodDefault) was deleted.", must_audit=True),
}

_warned: set[str] = set()


def now_iso() -> str:
    """UTC, to the millisecond, with a `Z`: `2024-05-01T12:30:05.123Z`."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def session_hash(session_id: str) -> str:
    """A stable, one-way stand-in for a session id: it links a session's events without being a credential."""
    return hashlib.sha256(b"notebook-gateway session\0" + session_id.encode()).hexdigest()[:32]


def _cut(text: str | None, limit: int) -> str | None:
    return text if text is None or len(text) <= limit else text[:limit] + "…"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """What happened (action, outcome, reason), to what (namespace, notebook, details), by whom
    (actor, groups, auth method, session hash), from where (client IP, user agent), and when."""

    action: str  # one of ACTIONS, e.g. "notebook.create"
    outcome: Outcome
    actor: str  # the user (subject), a bearer token's subject, or "-" when nobody is signed in
    namespace: str | None = None
    notebook: str | None = None
    reason: str = ""
    request_id: str = "-"
    client_ip: str | None = None
    details: dict[str, object] = field(default_factory=dict)
    version: int = SCHEMA_VERSION
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    time: str = field(default_factory=now_iso)
    groups: tuple[str, ...] = ()
    auth_method: str | None = None  # "session" (browser cookie) or "bearer" (API token)
    session: str | None = None  # session_hash() of the session id, never the id itself
    user_agent: str | None = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"audit outcome must be one of {', '.join(OUTCOMES)}, not {self.outcome!r}")
        if self.action not in ACTIONS and self.action not in _warned:
            # Recorded anyway (an event is never dropped), but it should be added to the catalogue and docs.
            _warned.add(self.action)
            log.warning("audit action %r is not in the catalogue (gateway.audit.events.ACTIONS)", self.action)

    @classmethod
    def by(cls, identity: Identity, action: str, outcome: Outcome, **fields: object) -> AuditEvent:
        """An event whose actor is `identity` (its subject, groups and how it signed in)."""
        fields.setdefault("groups", identity.groups)
        fields.setdefault("auth_method", identity.method)
        return cls(action=action, outcome=outcome, actor=identity.subject, **fields)  # type: ignore[arg-type]

    @property
    def must_audit(self) -> bool:
        info = ACTIONS.get(self.action)
        return self.outcome == "allowed" and info is not None and info.must_audit

    def to_record(self) -> dict[str, object]:
        """The event as the flat JSON object that sinks store (see docs/security.md)."""
        return {
            "version": self.version,
            "event_id": self.event_id,
            "time": self.time,
            "action": self.action,
            "outcome": self.outcome,
            "reason": _cut(self.reason, MAX_REASON),
            "actor": self.actor,
            "groups": list(self.groups),
            "auth_method": self.auth_method,
            "session": self.session,
            "client_ip": self.client_ip,
            "user_agent": _cut(self.user_agent, MAX_USER_AGENT),
            "request_id": self.request_id,
            "namespace": self.namespace,
            "notebook": self.notebook,
            "details": plain_json(self.details),
        }


def plain_json(details: dict[str, object]) -> dict[str, object]:
    """`details` as JSON would read it back (string keys, lists, odd values as text, long text cut), so
    a record hashes the same before it is written and after it is parsed."""

    def clean(value: object) -> object:
        if isinstance(value, str):
            return _cut(value, MAX_TEXT)
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [clean(v) for v in (sorted(value, key=str) if isinstance(value, set | frozenset) else value)]
        if value is None or isinstance(value, bool | int):
            return value
        if isinstance(value, float):
            return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
        return _cut(str(value), MAX_TEXT)

    cleaned = clean(details)
    assert isinstance(cleaned, dict)
    # One round trip through the encoder settles anything the walk above left ambiguous.
    result: dict[str, object] = json.loads(json.dumps(cleaned))
    return result
