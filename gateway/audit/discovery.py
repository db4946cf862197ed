"""`NotebookDiscovery`: one `notebook.discovered` event for each Notebook the gateway did not create
(kubectl, another tool), the first time any replica sees it, across restarts.

The Kubernetes backend reports which Notebooks exist (`seen`, `gone`) and which it is creating itself
(`creating`, `created`). A `Ledger` settles each Notebook uid once: Redis (`SET NX` per uid, shared by
every replica) or, without Redis, a file beside the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import redis.asyncio as redis
from redis.exceptions import RedisError

from ..backoff import Backoff
from .events import AuditEvent
from .log import AuditLog

log = logging.getLogger(__name__)

ACTION = "notebook.discovered"
# How long a new Notebook waits before another replica may call it discovered: the replica creating it
# claims its uid as soon as the API server answers, so this only has to outlast that answer.
GRACE_S = 10.0
# A uid stays in the Redis ledger this long; every start-up renews it for the Notebooks that still exist.
LEDGER_TTL_S = 400 * 24 * 3600
LEDGER_PREFIX = "ngw:audit:seen"
LEDGER_FILE = "discovered-notebooks"  # in the audit directory, whose lock keeps it to one writer
IDLE_S = 60.0
MIN_WAIT_S = 0.25  # while sightings are held back (the audit file is down, a create is in flight)
MIN_BACKOFF_S, MAX_BACKOFF_S = 0.5, 30.0


class Ledger(Protocol):
    """Notebook uids that are settled (recorded as discovered, or created by the gateway). `claim`
    settles `uids` and returns those that were not settled before: a uid is returned once, ever.
    Raises `RedisError` or `OSError` when it cannot tell."""

    async def claim(self, uids: list[str], how: str) -> set[str]: ...


class RedisLedger:
    """One key per uid, `ngw:audit:seen:<uid>`, set with NX: exactly one replica wins it."""

    def __init__(self, client: redis.Redis, prefix: str = LEDGER_PREFIX, ttl_s: int = LEDGER_TTL_S) -> None:
        self.client, self.prefix, self.ttl_s = client, prefix, ttl_s

    async def claim(self, uids: list[str], how: str) -> set[str]:
        pipe = self.client.pipeline(transaction=False)
        for uid in uids:
            key = f"{self.prefix}:{uid}"
            pipe.set(key, how, nx=True, ex=self.ttl_s)
            pipe.expire(key, self.ttl_s)  # a uid already there lives on while its Notebook does
        results = await pipe.execute()
        return {uid for uid, new in zip(uids, results[::2], strict=True) if new}


class FileLedger:
    """Without Redis (`dev`, one process): the settled uids, one a line (`<uid> <how>`), in a file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._uids: set[str] | None = None

    async def claim(self, uids: list[str], how: str) -> set[str]:
        return await asyncio.to_thread(self._claim, uids, how)

    def _claim(self, uids: list[str], how: str) -> set[str]:
        if self._uids is None:
            try:
                lines = self.path.read_text().splitlines()
            except FileNotFoundError:
                lines = []
            self._uids = {line.split(" ", 1)[0] for line in lines if line}
        fresh = [uid for uid in dict.fromkeys(uids) if uid not in self._uids]
        if fresh:
            # On disk before the event is emitted: a crash may then lose the event, never repeat it.
            with self.path.open("a") as file:
                file.write("".join(f"{uid} {how}\n" for uid in fresh))
                file.flush()
                os.fsync(file.fileno())
            self._uids.update(fresh)
        return set(fresh)


@dataclass(frozen=True, slots=True)
class _Sighting:
    namespace: str
    name: str
    uid: str
    creator: str | None
    created: str | None
    due: float  # the clock (time.monotonic) after which it may be settled


class NotebookDiscovery:
    """Hears the backend (plain methods on the event loop that return at once) and settles what it
    heard in `run()`. A Notebook the gateway is creating is never reported as discovered: its uid is
    claimed as "created" when the API server answers (its watch event may come first, and waits)."""

    def __init__(
        self,
        audit: AuditLog,
        ledger: Ledger,
        *,
        grace_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,  # injected by tests that walk through the window
    ) -> None:
        self.audit, self.ledger = audit, ledger
        self.grace_s = GRACE_S if grace_s is None else grace_s
        self._clock = clock
        self._pending: dict[str, _Sighting] = {}  # by uid, in the order seen
        self._settled: set[str] = set()  # uids of existing Notebooks that need nothing more
        self._ours: list[str] = []  # uids the gateway created, to claim in the ledger
        self._creating: Counter[tuple[str, str]] = Counter()
        self._wake = asyncio.Event()

    # -- what the backend reports ----------------------------------------------------------------

    def seen(self, namespace: str, name: str, uid: str, *, creator: str | None, created: str | None) -> None:
        """A Notebook exists (listed, added or modified)."""
        if uid in self._settled or uid in self._pending:
            return
        due = self._clock() + self.grace_s
        self._pending[uid] = _Sighting(namespace, name, uid, creator, created, due)
        self._wake.set()

    def gone(self, uid: str) -> None:
        """A Notebook was deleted. One still pending is recorded all the same: it did exist."""
        self._settled.discard(uid)

    def creating(self, namespace: str, name: str) -> None:
        """The gateway is about to create this Notebook."""
        self._creating[namespace, name] += 1

    def created(self, namespace: str, name: str, uid: str | None) -> None:
        """The create ended: `uid` is the new Notebook's, or None when it failed."""
        self._creating[namespace, name] -= 1
        if self._creating[namespace, name] <= 0:
            del self._creating[namespace, name]
        if uid is not None:
            self._settled.add(uid)
            self._pending.pop(uid, None)
            self._ours.append(uid)
        self._wake.set()

    # -- settling ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Settle sightings as they fall due, until cancelled; back off while the ledger fails."""
        backoff = Backoff(MIN_BACKOFF_S, MAX_BACKOFF_S)
        while True:
            self._wake.clear()
            try:
                wait_s = await self.settle()
            except (RedisError, OSError) as exc:
                delay = backoff.next()
                log.warning("notebook discovery: the ledger cannot be reached (%s); retrying in %.1fs", exc, delay)
            except Exception:
                delay = backoff.next()
                log.exception("notebook discovery failed; retrying in %.1fs", delay)
            else:
                backoff.reset()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await self._wake.wait()
                continue
            await asyncio.sleep(delay)

    async def settle(self) -> float:
        """Claim the gateway's own Notebooks, then record each due sighting that no replica has
        recorded yet. Returns how long to wait before there is more to do."""
        if self._ours:
            ours = list(self._ours)
            await self.ledger.claim(ours, "created")
            del self._ours[: len(ours)]
        now = self._clock()
        due = [s for s in self._pending.values() if s.due <= now and (s.namespace, s.name) not in self._creating]
        # Only while the audit file can be written: a uid claimed but not recorded would never be again.
        if due and self.audit.writable:
            fresh = await self.ledger.claim([s.uid for s in due], "discovered")
            for sighting in due:
                self._pending.pop(sighting.uid, None)
                self._settled.add(sighting.uid)
                if sighting.uid in fresh:
                    self._record(sighting)
        if not self._pending:
            return IDLE_S
        return max(min(s.due for s in self._pending.values()) - self._clock(), MIN_WAIT_S)

    def _record(self, sighting: _Sighting) -> None:
        log.info(
            "notebook %s/%s was created outside the gateway (uid %s)", sighting.namespace, sighting.name, sighting.uid
        )
        details: dict[str, object] = {
            "via": "kubernetes-api",
            "uid": sighting.uid,
            "creator": sighting.creator,  # the annotation: whoever created the object may have written anything
            "created": sighting.created,
        }
        event = AuditEvent(
            action=ACTION,
            outcome="allowed",
            actor="-",  # the Kubernetes API server's own audit log knows who; the gateway does not
            namespace=sighting.namespace,
            notebook=sighting.name,
            details=details,
        )
        self.audit.emit_after(event)
