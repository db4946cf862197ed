"""`AuditLog`: takes every event, writes it to the hash-chained file before `emit()` returns, and
hands it to the other sinks (stdout, the Redis stream, the search index).

When the file cannot be written, an `allowed` event of a must-audit action raises `AuditUnavailable`
(503) in `fail_closed` mode, so the act is not done unrecorded; `best_effort` keeps going. Either
way the event waits in memory and is written, in order, as soon as the file can be written again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from ..errors import AuditUnavailable
from .events import ACTIONS, OUTCOMES, AuditEvent
from .filesink import ChainedFile

log = logging.getLogger(__name__)
# The stdout sink: one JSON object per line, for log shippers (nothing else is logged here).
events_log = logging.getLogger("gateway.audit.events")

Mode = Literal["fail_closed", "best_effort"]
AccessSampling = Literal["first", "all"]

# How many (session, notebook) pairs `emit_first` remembers; the oldest are forgotten first.
FIRST_SEEN_MAX = 100_000


class AuditSink(Protocol):
    """Receives each event after the file has it. `accept` must return at once (never waits on the
    network); `problem` is None when the sink is fine, else what /readyz should say."""

    async def start(self) -> None: ...

    def accept(self, record: dict[str, object]) -> None: ...

    async def stop(self) -> None: ...

    def problem(self) -> str | None: ...


@runtime_checkable
class Spool(Protocol):
    """A sink that ships the files elsewhere (the Redis stream): what /metrics reports about it."""

    name: str
    failures: int  # attempts to ship that failed

    @property
    def spooled(self) -> int:
        """Events in the files that have not reached it yet."""
        ...


@dataclass(frozen=True, slots=True)
class AuditStats:
    """The audit log's state for /metrics, read at each scrape."""

    writable: bool
    written: dict[tuple[str, str], int]  # (action, outcome) -> events written to the file
    failures: dict[str, int]  # sink ("file", "redis") -> failed attempts to write to it
    waiting: int  # events in memory waiting for the file
    dropped: int  # events dropped because too many were waiting
    spooled: int | None  # events in the files not yet in Redis; None without Redis


class AuditLog:
    """Every security-relevant event goes through `emit()`. Without a file (tests, library use) events
    only go to the `gateway.audit.events` logger."""

    def __init__(
        self,
        file: ChainedFile | None = None,
        *,
        mode: Mode = "fail_closed",
        stdout: bool = True,
        access_sampling: AccessSampling = "first",
        access_ttl_s: float = 8 * 3600,
        fsync_interval_s: float = 1.0,
    ) -> None:
        self.file, self.mode = file, mode
        self.access_sampling, self.access_ttl_s = access_sampling, access_ttl_s
        self.fsync_interval_s = fsync_interval_s
        self.sinks: list[AuditSink] = [StdoutSink()] if stdout else []
        self._first_seen: OrderedDict[Hashable, float] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def add_sink(self, sink: AuditSink) -> None:
        self.sinks.append(sink)

    async def open(self) -> None:
        """Open the file (a busy directory raises; an unwritable one is reported) and start the sinks."""
        if self.file is not None:
            await asyncio.to_thread(self.file.open)
            self._task = asyncio.create_task(self._maintain(), name="audit-fsync")
        for sink in self.sinks:
            await sink.start()

    async def close(self) -> None:
        """Stop the sinks (Redis ships what it can), then fsync and close the file."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for sink in reversed(self.sinks):
            try:
                await sink.stop()
            except Exception:
                log.exception("audit sink %r did not stop cleanly", sink)
        if self.file is not None:
            self.file.close()
        self._closed = True

    # -- emitting --------------------------------------------------------------------------------

    def emit(self, event: AuditEvent) -> None:
        """Record `event`. Raises `AuditUnavailable` only for a must-audit act in fail_closed mode when
        the file cannot be written; any other trouble is logged, never raised into the request."""
        record = event.to_record()
        written = True
        if self.file is not None:
            if self._closed:
                log.error("audit: event %s %s after shutdown; not in the audit file", event.action, event.event_id)
            else:
                written = self.file.append(record)
        for sink in self.sinks:
            sink.accept(record)
        if not written and event.must_audit and self.mode == "fail_closed":
            raise AuditUnavailable()

    def emit_after(self, event: AuditEvent) -> None:
        """`emit` for an act that is over (a WebSocket that closed): there is nothing left to refuse, so
        the event waits in memory for the file instead of raising."""
        try:
            self.emit(event)
        except AuditUnavailable:
            log.warning("audit: %s %s is waiting for the audit file", event.action, event.event_id)

    def require_writable(self) -> None:
        """Before a must-audit act: raise `AuditUnavailable` (fail_closed) if its event could not be written.
        Call it before changing anything, so that a refused act leaves nothing changed."""
        if self.file is None or self.mode != "fail_closed":
            return
        self.file.check()  # a file removed or replaced behind our back counts now, not at the next tick
        if not self.file.retry():
            raise AuditUnavailable()

    @property
    def writable(self) -> bool:
        """Whether the last attempt to reach the file worked (no I/O: for /metrics)."""
        return self.file is None or self.file.problem is None

    def stats(self) -> AuditStats:
        """Counts for /metrics. Every catalogued action and outcome is present, at zero until it happens."""
        written = dict.fromkeys(((action, outcome) for action in ACTIONS for outcome in OUTCOMES), 0)
        failures = {"file": 0}
        spooled: int | None = None
        if self.file is not None:
            written.update(self.file.written)
            failures["file"] = self.file.failures
        for sink in self.sinks:
            if isinstance(sink, Spool):
                failures[sink.name] = sink.failures
                spooled = (spooled or 0) + sink.spooled
        file = self.file
        return AuditStats(
            writable=self.writable,
            written=written,
            failures=failures,
            waiting=len(file.backlog) if file is not None else 0,
            dropped=file.dropped if file is not None else 0,
            spooled=spooled,
        )

    def emit_first(self, key: Hashable, make: Callable[[], AuditEvent]) -> None:
        """Emit `make()` unless an event was emitted for `key` (e.g. a session and a notebook) in the last
        `access_ttl_s`; with access_sampling "all", always. The key is remembered only once written."""
        now = time.monotonic()
        if self.access_sampling == "first":
            seen = self._first_seen.get(key)
            if seen is not None and now - seen < self.access_ttl_s:
                return
        self.require_writable()  # refuse before the event exists, so no "allowed" is kept for a refusal
        self.emit(make())
        if self.access_sampling == "first":
            self._first_seen[key] = now
            self._first_seen.move_to_end(key)
            while len(self._first_seen) > FIRST_SEEN_MAX:
                self._first_seen.popitem(last=False)

    # -- health ------------------------------------------------------------------------------------

    def problem(self) -> str | None:
        """For /readyz: why events cannot be recorded, or None."""
        if self.file is not None and not self.file.retry():
            return self.file.problem
        problems = [problem for sink in self.sinks if (problem := sink.problem())]
        return "; ".join(problems) or None

    async def _maintain(self) -> None:
        """fsync at least every `fsync_interval_s`, notice a file removed behind our back, and keep
        retrying a file that could not be written (with nothing waiting too, so that `writable`
        recovers without a request having to try)."""
        assert self.file is not None
        file = self.file
        while True:
            await asyncio.sleep(self.fsync_interval_s)
            try:
                await asyncio.to_thread(file.sync)
                file.check()
                if file.problem is not None:
                    waited = bool(file.backlog)
                    if file.retry() and waited:
                        for sink in self.sinks:
                            sink.accept({})  # wake the followers: the backlog is in the file now
            except Exception:
                log.exception("audit file maintenance failed")


class StdoutSink:
    """Each event as one JSON line on the `gateway.audit.events` logger (`send_to_stdout()`: on stdout)."""

    async def start(self) -> None:
        return None

    def accept(self, record: dict[str, object]) -> None:
        if record and events_log.isEnabledFor(logging.INFO):
            events_log.info("%s", json.dumps(record, sort_keys=True, separators=(",", ":")))

    async def stop(self) -> None:
        return None

    def problem(self) -> str | None:
        return None


def send_to_stdout() -> None:
    """Production: audit lines go to stdout as bare JSON (logs go to stderr), for log shippers."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    events_log.handlers[:] = [handler]
    events_log.setLevel(logging.INFO)
    events_log.propagate = False
