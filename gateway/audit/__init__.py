"""The audit log: typed, versioned events (`events`), the hash-chained files (`filesink`, `chain`,
`verify`, and `stream_copy`, which checks them against the Redis stream's copy), the Redis stream and
the local index that answer queries (`redis_sink`, `index`, `query`), `discovery` of Notebooks made
outside the gateway, and `AuditLog`, which every part of the gateway hands its events to.
"""

from ..errors import AuditUnavailable
from .events import ACTIONS, AuditEvent, Outcome, session_hash
from .log import AuditLog, AuditSink

__all__ = ["ACTIONS", "AuditEvent", "AuditLog", "AuditSink", "AuditUnavailable", "Outcome", "session_hash"]
