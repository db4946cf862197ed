"""Audit events: one typed record per security-relevant act, handed to `AuditLog.emit()`.

The event shape is the stable part; the durable, hash-chained sinks come later. For now the
log writes each event as one JSON line on the `gateway.audit` logger (stdout for shippers).
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Literal

from .identity import Identity

log = logging.getLogger("gateway.audit")

Outcome = Literal["allowed", "denied", "failed"]


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """What happened, to what, by whom, and how it ended."""

    action: str  # e.g. "notebook.create", "notebook.access", "access.denied"
    outcome: Outcome
    actor: str
    namespace: str | None = None
    notebook: str | None = None
    reason: str = ""
    request_id: str = "-"
    client_ip: str | None = None
    details: dict[str, object] = field(default_factory=dict)
    version: int = 1
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))

    @classmethod
    def by(cls, identity: Identity, action: str, outcome: Outcome, **fields: object) -> AuditEvent:
        return cls(action=action, outcome=outcome, actor=identity.subject, **fields)  # type: ignore[arg-type]


class AuditLog:
    """Receives every audit event. `emit` never raises into the request that caused the event."""

    def emit(self, event: AuditEvent) -> None:
        # json.dumps escapes CR/LF, so a hostile username or path cannot forge a second line.
        log.info("%s", json.dumps(asdict(event), sort_keys=True, default=str))
