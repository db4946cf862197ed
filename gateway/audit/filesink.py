"""`ChainedFile`: the append-only, hash-chained JSON-lines files under GATEWAY_AUDIT_DIR.

Each event is sealed into the chain and written with one `write()` before `emit()` returns, so a
process crash loses nothing that was acknowledged; `sync()` (at least once a second, and at close)
makes it survive a power cut too. Files rotate by size; the chain runs on across them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
from collections import Counter, deque
from pathlib import Path

from .chain import GENESIS, Sealed, Sealer, seal
from .segments import segment_path, segments, tail

log = logging.getLogger(__name__)

# Events kept in memory while the file cannot be written (best_effort, or events that need not
# be refused): written, in order, once it can be again. Beyond this, the oldest are dropped.
BACKLOG_MAX = 100_000


class AuditDirBusy(OSError):
    """Another process holds the directory's lock: two writers would fork the chain."""


class ChainedFile:
    """The writer. Not thread-safe: `append` runs on the event loop; only `sync` runs in a thread."""

    def __init__(self, directory: Path, sealer: Sealer, rotate_bytes: int) -> None:
        self.directory, self.sealer, self.rotate_bytes = directory, sealer, rotate_bytes
        self.chain_id = ""
        self.seq, self.prev = 0, GENESIS  # the last event written
        self.segment = 0
        self.size = 0
        self.problem: str | None = "not opened yet"
        self.backlog: deque[dict[str, object]] = deque()
        self.dropped = 0
        # For /metrics: events written, by (action, outcome), and failed attempts to write.
        self.written: Counter[tuple[str, str]] = Counter()
        self.failures = 0
        self.dirty = False
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._torn = False  # a write failed half-way: the next event starts a new file

    # -- life cycle ------------------------------------------------------------------------------

    def open(self) -> None:
        """Lock the directory and find where the chain ends. A directory that cannot be written is
        not fatal (`problem` says why; every later write tries again); a busy one is."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock()
            self._recover()
            self.problem = None
        except AuditDirBusy:
            raise  # at start-up this is a configuration error, not an outage
        except OSError as exc:
            self._fail(exc)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.flush()
        self._close_segment()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None
        if self.backlog:
            log.error(
                "audit: %d event(s) could not be written to %s before shutdown", len(self.backlog), self.directory
            )

    def _lock(self) -> None:
        if self._lock_fd is not None:
            return
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AuditDirBusy(f"another process is writing the audit log in {self.directory}") from None
        self._lock_fd = fd

    def _recover(self) -> None:
        """Continue the chain from the last complete event on disk. A torn last line (a crash during a
        write) is left where it is and the chain continues in a new file, so `audit verify` can show it."""
        self.chain_id = self._chain_id()
        files = segments(self.directory)
        self.seq, self.prev, start_new = 0, GENESIS, not files
        for index, (number, path) in enumerate(reversed(files)):
            lines, torn = tail(path)
            if index == 0:
                self.segment = number
                start_new = torn
            found = _last_event(lines)
            if found is not None:
                self.seq, self.prev = found
                break
        if start_new:
            self._start_segment((files[-1][0] if files else 0) + 1)
        else:
            self._open_segment(self.segment)

    def _chain_id(self) -> str:
        """A random id for this directory's chain: where Redis keeps how far it has been shipped."""
        path = self.directory / "chain-id"
        with contextlib.suppress(FileNotFoundError):
            text = path.read_text().strip()
            if text:
                return text
        chain_id = secrets.token_hex(8)
        path.write_text(chain_id + "\n")
        return chain_id

    # -- writing ---------------------------------------------------------------------------------

    def append(self, record: dict[str, object]) -> bool:
        """Queue `record` and write everything queued, in order. False when it could not be written
        now (the record stays queued for the next try, unless the backlog overflows)."""
        if len(self.backlog) >= BACKLOG_MAX:
            self.backlog.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("audit: backlog full; %d event(s) dropped from the file", self.dropped)
        self.backlog.append(record)
        try:
            self.flush()
        except OSError as exc:
            self._fail(exc)
            return False
        return True

    def flush(self) -> None:
        """Write the backlog; raises OSError (leaving the rest queued) when the file cannot be written."""
        if self.backlog and (self._fd is None or self.problem is not None):
            self._reopen()
        while self.backlog:
            sealed = seal(self.backlog[0], self.seq + 1, self.prev, self.sealer)
            self._write(sealed)
            record = self.backlog.popleft()
            self.seq, self.prev = sealed.seq, sealed.hash
            self.written[str(record.get("action")), str(record.get("outcome"))] += 1
        if self.problem is not None:
            log.warning("audit: the audit file can be written again (%s)", self.directory)
            self.problem = None

    def retry(self) -> bool:
        """Try again to reach a writable file (for /readyz and before must-audit acts); True if it is."""
        if self.problem is None:
            return True
        try:
            self._reopen()
            self.flush()
        except OSError as exc:
            self._fail(exc)
            return False
        return True

    def _write(self, sealed: Sealed) -> None:
        if self._torn or (self.size > 0 and self.size + len(sealed.line) > self.rotate_bytes):
            self._rotate()
        assert self._fd is not None
        view = memoryview(sealed.line)
        while view:
            try:
                written = os.write(self._fd, view)
            except OSError:
                # Part of the line may be on disk: never append after it.
                self._torn = self._torn or len(view) < len(sealed.line)
                raise
            self.size += written
            self.dirty = True
            view = view[written:]

    def _reopen(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._lock_fd is None:
            self._lock()
            self._recover()
        elif self._fd is None or not self._segment_exists():
            self._rotate()

    def _segment_exists(self) -> bool:
        """False when the open file was removed or replaced behind our back (then a new one is started)."""
        if self._fd is None:
            return False
        try:
            return os.path.samestat(os.fstat(self._fd), os.stat(segment_path(self.directory, self.segment)))
        except OSError:
            return False

    def _rotate(self) -> None:
        self._close_segment()
        self._torn = False
        self._start_segment(self.segment + 1)

    def _start_segment(self, number: int) -> None:
        self._open_segment(number)
        _fsync_dir(self.directory)  # the new file's name must survive a power cut too

    def _open_segment(self, number: int) -> None:
        path = segment_path(self.directory, number)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self.segment = number
        self.size = os.fstat(self._fd).st_size

    def _close_segment(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(fd)
            os.close(fd)
            self.dirty = False

    def check(self) -> None:
        """Start a new file if the current one was removed or replaced behind our back (events written
        to a removed file would be lost); `audit verify` will show the gap."""
        if self._fd is not None and self.problem is None and not self._segment_exists():
            log.error("audit: %s was removed or replaced; the chain continues in a new file", self.directory)
            try:
                self._close_segment()
                self.directory.mkdir(parents=True, exist_ok=True)
                self._start_segment(self.segment + 1)
            except OSError as exc:
                self._fail(exc)

    def sync(self) -> None:
        """fsync the current file if anything was written since the last time (runs in a thread)."""
        fd = self._fd
        if fd is None or not self.dirty:
            return
        self.dirty = False
        try:
            os.fsync(fd)
        except OSError as exc:  # EBADF: rotated meanwhile (and fsynced then); EIO: the next write will say
            log.debug("audit fsync: %s", exc)

    def _fail(self, exc: OSError) -> None:
        self.failures += 1
        problem = f"the audit file in {self.directory} cannot be written: {exc.strerror or exc}"
        if problem != self.problem:
            log.error("audit: %s", problem)
        self.problem = problem


def _last_event(lines: list[bytes]) -> tuple[int, str] | None:
    """(seq, hash) of the last line that parses as a chained event."""
    for line in reversed(lines):
        try:
            record = json.loads(line)
            seq, digest = record["seq"], record["hash"]
        except (ValueError, KeyError, TypeError):
            log.error("audit: an unreadable line at the end of the audit log; `audit verify` will report it")
            continue
        if isinstance(seq, int) and isinstance(digest, str):
            return seq, digest
    return None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
