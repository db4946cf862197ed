"""Idle culling: stop notebook servers nobody used through the gateway for `GATEWAY_CULL_IDLE_AFTER`.

Stopping is what STOP does (the backend sets `kubeflow-resource-stopped`), so the user starts the
server again with START and finds their volumes as they left them. Kubeflow's culler asks Jupyter's
`/api/kernels` whether a kernel is busy, so it cannot see terminals, VS Code or RStudio; this one
counts what the gateway relays (see `gateway/activity.py`). A server nobody opened since it started
is idle from its start.

One replica culls at a time: each round first takes a lease in Redis (held by the replica that has
it while it keeps running, taken over by another within a few rounds if it dies). Without Redis
there is one process, which culls alone.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as redis

from .activity import Activity, rfc3339
from .audit import AuditEvent, AuditLog
from .backends import Notebook, NotebookBackend
from .errors import GatewayError

log = logging.getLogger(__name__)

ACTION = "notebook.culled"
ACTOR = "notebook-gateway (idle culling)"
LEASE_KEY = "notebook-gateway:culler"
LEASE_ROUNDS = 3  # the lease outlives this many rounds: a holder that dies is replaced within them
# Take the lease when it is free or ours (and extend it); answer 1 when we hold it now.
_LEASE_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


@dataclass(frozen=True, slots=True)
class CullPolicy:
    """Which servers are culled, and when."""

    idle_after_s: float
    exempt_namespaces: frozenset[str] = frozenset()
    warning_s: float = 3600.0  # the page warns this long before

    def culls_at(self, notebook: Notebook, last_activity: float | None) -> float | None:
        """When `notebook` will be stopped if nobody uses it (Unix time), or None: never (stopped, being
        deleted, exempt by its annotation or its namespace)."""
        if notebook.stopped or notebook.cull_exempt or notebook.namespace in self.exempt_namespaces:
            return None
        if notebook.status.phase in ("stopped", "terminating"):
            return None
        return self.idle_since(notebook, last_activity) + self.idle_after_s

    @staticmethod
    def idle_since(notebook: Notebook, last_activity: float | None) -> float:
        """The last use, or the server's (re)start or creation when that came later (never opened since)."""
        since = [notebook.created_at.timestamp(), last_activity or 0.0]
        if notebook.started_at is not None:
            since.append(notebook.started_at.timestamp())
        return max(since)


class Culler:
    """Rounds of: take the lease, read every server's last activity, stop the idle ones, audit each."""

    def __init__(
        self,
        policy: CullPolicy,
        backend: NotebookBackend,
        activity: Activity,
        audit: AuditLog,
        client: redis.Redis | None,
        clock: Callable[[], float],
        *,
        interval_s: float = 60.0,
    ) -> None:
        self.policy, self.backend, self.activity, self.audit = policy, backend, activity, audit
        self.client, self.clock, self.interval_s = client, clock, interval_s
        self.replica = uuid.uuid4().hex  # this process, as the lease's holder
        # Servers this replica stopped whose stop the backend's view (a watch) may not show yet: not
        # stopped (nor audited) twice. Forgotten once the view shows it, or after a few rounds at most.
        self._stopping: dict[tuple[str, str], int] = {}  # -> the round it was stopped in
        self._round = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.run_once()
            except Exception:  # one bad round (Redis, the API) must not end culling for good
                log.exception("idle culling: the round failed; trying again in %gs", self.interval_s)

    async def run_once(self) -> list[tuple[str, str]]:
        """One round; returns the servers it stopped."""
        if not await self._hold_lease():
            return []
        if not self.backend.synced:
            return []  # an incomplete view could make a running server look never used
        await self.activity.flush()  # this replica's latest traffic first, so Redis has every replica's
        notebooks = await self.backend.list_all()
        await self.activity.retain((notebook.namespace, notebook.name) for notebook in notebooks)
        last = await self.activity.last((notebook.namespace, notebook.name) for notebook in notebooks)
        now = self.clock()
        culled = []
        self._round += 1
        for notebook in notebooks:
            key = (notebook.namespace, notebook.name)
            if notebook.stopped or self._round - self._stopping.get(key, -LEASE_ROUNDS) > LEASE_ROUNDS:
                self._stopping.pop(key, None)
            if key in self._stopping:
                continue
            due = self.policy.culls_at(notebook, last.get(key))
            if due is not None and now >= due and await self._cull(notebook, last.get(key), now):
                culled.append(key)
                self._stopping[key] = self._round
        return culled

    async def _cull(self, notebook: Notebook, last_activity: float | None, now: float) -> bool:
        where = f"{notebook.namespace}/{notebook.name}"
        idle_since = self.policy.idle_since(notebook, last_activity)
        details: dict[str, object] = {
            "idle_seconds": int(now - idle_since),
            "idle_after_seconds": int(self.policy.idle_after_s),
            "last_activity": rfc3339(last_activity) if last_activity else None,
        }
        try:
            self.audit.require_writable()  # an act the log must record: not done unrecorded (fail_closed)
            await self.backend.stop(notebook.namespace, notebook.name)
        except GatewayError as exc:
            log.warning("idle culling: could not stop %s: %s", where, exc.message)
            self._emit(notebook, "failed", exc.message, details)
            return False
        log.info("idle culling: stopped %s, idle since %s", where, rfc3339(idle_since))
        self._emit(notebook, "allowed", f"no activity for {int(self.policy.idle_after_s)}s", details)
        return True

    def _emit(self, notebook: Notebook, outcome: str, reason: str, details: dict[str, object]) -> None:
        event = AuditEvent(
            action=ACTION,
            outcome="allowed" if outcome == "allowed" else "failed",
            actor=ACTOR,
            namespace=notebook.namespace,
            notebook=notebook.name,
            reason=reason,
            details=details,
        )
        if outcome == "allowed":
            self.audit.emit_after(event)  # the server is stopped: the event waits for the file if need be
        else:
            self.audit.emit(event)

    async def _hold_lease(self) -> bool:
        if self.client is None:
            return True
        ttl_ms = int(self.interval_s * LEASE_ROUNDS * 1000)
        try:
            held = await self.client.eval(_LEASE_SCRIPT, 1, LEASE_KEY, self.replica, str(ttl_ms))
        except (redis.RedisError, OSError) as exc:
            log.warning("idle culling: Redis did not answer (%s); no round until it does", exc)
            return False
        return bool(held)
