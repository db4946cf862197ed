"""The audit log: typed, versioned events (`events`), the hash-chained files (`filesink`, `chain`,
`verify`), the Redis stream and the local index that answer queries (`redis_sink`, `index`, `query`),
and `AuditLog`, which every part of the gateway hands its events to.
"""

from .events import ACTIONS, AuditEvent, Outcome, session_hash
from .log import AuditLog, AuditSink, AuditUnavailable

__all__ = ["ACTIONS", "AuditEvent", "AuditLog", "AuditSink", "AuditUnavailable", "Outcome", "session_hash"]
