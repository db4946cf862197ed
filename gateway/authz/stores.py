"""Where the editable policy lives: a file (shared by every replica that mounts it) or memory.

Every change is a read-modify-write under a lock, checked against the version the caller saw
(optimistic concurrency, as a ConfigMap's resourceVersion), and written atomically: a temporary
file, fsync, rename, fsync of the directory. A crash mid-write leaves the old file whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal, Protocol

from ..errors import PreconditionFailed
from ..kube.watch_health import WatchHealth
from .rules import EMPTY, PolicyDoc, PolicyError, parse_policy, version_of

log = logging.getLogger(__name__)

Edit = Callable[[PolicyDoc], PolicyDoc]


class PolicyStore(Protocol):
    """Holds the policy document. `update()` applies an edit atomically and returns (before, after);
    `changed()` returns the document when someone else changed it since this store last saw it
    (None otherwise) and raises `PolicyError` for a malformed one, once per change. `open()` comes
    first and `close()` last (both no-ops but for the ConfigMap store's watch)."""

    kind: Literal["file", "configmap", "memory"]
    location: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def watch_health(self) -> WatchHealth | None:
        """Its watch of the Kubernetes API, for /readyz; None when it has none (a file, memory)."""
        ...

    async def load(self) -> PolicyDoc: ...

    async def update(self, edit: Edit, if_match: str | None = None) -> tuple[PolicyDoc, PolicyDoc]: ...

    async def changed(self) -> PolicyDoc | None: ...


def _check(doc: PolicyDoc, if_match: str | None) -> None:
    if if_match is not None and if_match != doc.version:
        raise PreconditionFailed(
            f"The policies are at version {doc.version}, not {if_match}; reload them and try again."
        )


class _Unwatched:
    """A store in this process or on a mounted file: nothing to open, close or watch."""

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def watch_health(self) -> WatchHealth | None:
        return None


class MemoryPolicyStore(_Unwatched):
    """Policies for this process only (lost on restart): tests, and a gateway without GATEWAY_POLICY_FILE."""

    kind: Literal["file", "configmap", "memory"] = "memory"
    location = "memory"

    def __init__(self, doc: PolicyDoc = EMPTY) -> None:
        self._doc = doc
        self._lock = asyncio.Lock()

    async def load(self) -> PolicyDoc:
        return self._doc

    async def update(self, edit: Edit, if_match: str | None = None) -> tuple[PolicyDoc, PolicyDoc]:
        async with self._lock:
            before = self._doc
            _check(before, if_match)
            self._doc = edit(before)
            return before, self._doc

    async def changed(self) -> PolicyDoc | None:
        return None


_StatToken = tuple[int, int, int]  # (inode, size, mtime_ns): a rename or an edit changes one of them
_MISSING: _StatToken = (-1, -1, -1)


class FilePolicyStore(_Unwatched):
    """A CSV policy file. File I/O runs in worker threads; `flock` on a sibling `.lock` file keeps
    two processes (or threads) from interleaving their read-modify-write cycles."""

    kind: Literal["file", "configmap", "memory"] = "file"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)
        self._lock_path = path.with_name(f".{path.name}.lock")
        self._seen: tuple[_StatToken | None, PolicyDoc | None] = (None, None)

    async def load(self) -> PolicyDoc:
        """The file's policy, creating the file (with its header) when there is none yet."""
        return await asyncio.to_thread(self._load)

    async def update(self, edit: Edit, if_match: str | None = None) -> tuple[PolicyDoc, PolicyDoc]:
        return await asyncio.to_thread(self._update, edit, if_match)

    async def changed(self) -> PolicyDoc | None:
        return await asyncio.to_thread(self._changed)

    # -- in worker threads --------------------------------------------------------------------

    def _load(self) -> PolicyDoc:
        if self.path.exists():
            return self._read()  # no lock: writes are atomic renames (and a mounted ConfigMap is read-only)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            if not self.path.exists():
                log.info("creating the policy file %s (no rules yet)", self.path)
                self._write(EMPTY.text.encode())
            return self._read()

    def _update(self, edit: Edit, if_match: str | None) -> tuple[PolicyDoc, PolicyDoc]:
        with self._locked():
            before = self._read() if self.path.exists() else EMPTY
            _check(before, if_match)
            after = edit(before)
            if after.version != before.version:
                self._write(after.text.encode())
                self._seen = (self._stat(), after)
            return before, after

    def _changed(self) -> PolicyDoc | None:
        seen_token, seen_doc = self._seen
        try:
            token = self._stat()
        except FileNotFoundError:
            if seen_token == _MISSING:
                return None
            self._seen = (_MISSING, seen_doc)
            raise PolicyError(f"{self.path} is gone") from None
        if token == seen_token:
            return None
        content = self.path.read_bytes()
        self._seen = (token, seen_doc)  # a malformed file is reported once, not on every poll
        if seen_doc is not None and version_of(content) == seen_doc.version:
            return None  # touched, or rewritten with the same content
        doc = parse_policy(content)
        self._seen = (token, doc)
        return doc

    def _read(self) -> PolicyDoc:
        token = self._stat()
        content = self.path.read_bytes()
        _, seen_doc = self._seen
        # Parsing 100k rules takes a while; the same bytes need not be parsed twice.
        doc = seen_doc if seen_doc is not None and version_of(content) == seen_doc.version else parse_policy(content)
        self._seen = (token, doc)
        return doc

    def _stat(self) -> _StatToken:
        stat = os.stat(self.path)
        return (stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def _write(self, content: bytes) -> None:
        directory = self.path.parent
        mode = self.path.stat().st_mode & 0o777 if self.path.exists() else 0o644
        fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(content)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temp, mode)
            os.replace(temp, self.path)  # atomic: readers see the old file or the new one
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power cut
        finally:
            os.close(dir_fd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._lock_path, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
