"""`FileIndex`: a SQLite index over the local audit files (who, where, what, when -> file and
offset), so the last 1,000 events of one user come back in milliseconds without reading the rest.

The index is derived data: it follows the files (as a sink, within a second) and catches up before
each search; delete it and it is rebuilt. The files stay the record; searches read events from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import BinaryIO

from .query import BadQuery, Filter, Page, PageFiller, StoreUnavailable
from .segments import ChainReader, segment_path

log = logging.getLogger(__name__)

INDEX_NAME = "index.sqlite3"
BATCH = 5000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, time TEXT, actor TEXT, namespace TEXT, notebook TEXT,
    action TEXT, outcome TEXT, segment INTEGER, offset INTEGER, length INTEGER);
CREATE INDEX IF NOT EXISTS by_actor ON events (actor, seq);
CREATE INDEX IF NOT EXISTS by_namespace ON events (namespace, notebook, seq);
CREATE INDEX IF NOT EXISTS by_namespace_seq ON events (namespace, seq);
CREATE INDEX IF NOT EXISTS by_action ON events (action, seq);
CREATE INDEX IF NOT EXISTS by_outcome ON events (outcome, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""
# Each filter's index ends in seq, so a page is a walk down that index from the cursor, newest first, that
# stops at `limit`: (namespace, notebook, seq) alone would make a namespace's search read and sort every
# event of the namespace for each page (an export of a busy namespace: once per page). The statements run
# at every open, so an index file made before an index existed gets it then (built once from its rows).


class FileIndex:
    """Searches the audit files of one directory (this replica's, or a copy for `audit query`)."""

    source = "files"

    def __init__(self, directory: Path, index_path: Path | None = None) -> None:
        self.directory = directory
        self.index_path = index_path or directory / INDEX_NAME
        self._lock = threading.Lock()  # one connection, used from worker threads one at a time
        self._db: sqlite3.Connection | None = None
        self._reader = ChainReader(directory)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- as a sink: follow the files -------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="audit-index")

    def accept(self, record: dict[str, object]) -> None:
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def problem(self) -> str | None:
        return None  # a stale index delays searches a little; it never loses an event

    async def _follow(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await asyncio.to_thread(self.catch_up)
            except (OSError, sqlite3.Error) as exc:
                log.warning("audit index: %s", exc)
                await asyncio.sleep(5)

    # -- indexing --------------------------------------------------------------------------------

    def catch_up(self) -> int:
        """Index what was written since the last call; returns how many events that was."""
        with self._lock:
            db = self._connect()
            total = 0
            while batch := self._reader.read(BATCH):
                rows = [
                    (
                        s.seq,
                        _text(s.record.get("time")),
                        _text(s.record.get("actor")),
                        _text(s.record.get("namespace")),
                        _text(s.record.get("notebook")),
                        _text(s.record.get("action")),
                        _text(s.record.get("outcome")),
                        s.segment,
                        s.offset,
                        len(s.line),
                    )
                    for s in batch
                ]
                reader = self._reader
                with db:  # one transaction per batch, position included
                    db.executemany("INSERT OR REPLACE INTO events VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
                    db.executemany(
                        "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                        [
                            ("segment", str(reader.segment)),
                            ("offset", str(reader.offset)),
                            ("seq", str(reader.last_seq)),
                        ],
                    )
                total += len(rows)
            return total

    def _connect(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        chain_id = _read(self.directory / "chain-id")
        try:
            db = self._open()
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:  # a damaged index: it is only derived data
            log.warning("audit index %s is unreadable (%s); rebuilding it", self.index_path, exc)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.index_path}{suffix}").unlink(missing_ok=True)
            db = self._open()
            meta = {}
        if meta.get("chain") != chain_id:  # new files (or none yet): start over
            with db:
                db.execute("DELETE FROM events")
                db.execute("DELETE FROM meta")
                db.execute("INSERT INTO meta VALUES ('chain', ?)", (chain_id,))
            self._reader.position(0, 0, 0)
        else:
            self._reader.position(int(meta.get("segment", 0)), int(meta.get("offset", 0)), int(meta.get("seq", 0)))
        self._db = db
        return db

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.index_path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # losing the last commits only means re-indexing them
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(_SCHEMA)
        db.isolation_level = "DEFERRED"  # `with db:` transactions from here on
        return db

    # -- searching -------------------------------------------------------------------------------

    async def search(self, filter: Filter, *, cursor: str | None = None, limit: int = 100) -> Page:
        before = _parse_cursor(cursor)
        try:
            await asyncio.to_thread(self.catch_up)
            return await asyncio.to_thread(self._search, filter, before, limit)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"the audit files in {self.directory} cannot be searched: {exc}") from exc

    def _search(self, filter: Filter, before: int, limit: int) -> Page:
        sql, params = page_query(filter)
        chunk = limit if not filter.text else max(limit, 1000)
        filling = PageFiller(filter, limit)
        with self._lock, _Files(self.directory) as files:
            db = self._connect()
            while True:
                rows = db.execute(sql, (before, *params, chunk)).fetchall()
                for seq, segment, offset, length in rows:
                    before = seq
                    if filling.take(files.read(segment, offset, length)):
                        return filling.page(f"f{seq}")
                if len(rows) < chunk:
                    return filling.page(None)
                if filling.over_budget:
                    return filling.page(f"f{before}")


def page_query(filter: Filter) -> tuple[str, list[object]]:
    """The statement that reads one chunk of a search (file positions, newest first) and the filter's
    parameters; it takes `before` (the cursor's seq) first and the chunk's size last."""
    where, params = _conditions(filter)
    return f"SELECT seq, segment, offset, length FROM events WHERE seq < ? {where} ORDER BY seq DESC LIMIT ?", params


def _conditions(filter: Filter) -> tuple[str, list[object]]:
    """The SQL for every filter but `text` (which is checked on the event itself)."""
    clauses: list[str] = []
    params: list[object] = []
    for column, value in (
        ("actor", filter.user),
        ("namespace", filter.namespace),
        ("notebook", filter.notebook),
        ("outcome", filter.outcome),
    ):
        if value is not None:
            clauses.append(f"AND {column} = ?")
            params.append(value)
    if filter.action is not None:
        if filter.action.endswith(".*"):
            clauses.append("AND action LIKE ? ESCAPE '\\'")
            params.append(filter.action[:-1].replace("_", "\\_") + "%")
        else:
            clauses.append("AND action = ?")
            params.append(filter.action)
    if filter.since is not None:
        clauses.append("AND time >= ?")
        params.append(filter.since)
    if filter.until is not None:
        clauses.append("AND time < ?")
        params.append(filter.until)
    return " ".join(clauses), params


def _parse_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 2**62
    if not (cursor.startswith("f") and cursor[1:].isdigit()):
        raise BadQuery("this cursor was not made by this audit store", "cursor")
    return int(cursor[1:])


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


class _Files:
    """Open audit files for one search, each opened once."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files: dict[int, BinaryIO] = {}

    def __enter__(self) -> _Files:
        return self

    def __exit__(self, *exc: object) -> None:
        for file in self.files.values():
            file.close()

    def read(self, segment: int, offset: int, length: int) -> dict[str, object] | None:
        file = self.files.get(segment)
        if file is None:
            try:
                file = self.files[segment] = open(segment_path(self.directory, segment), "rb")
            except FileNotFoundError:
                return None  # archived since it was indexed
        file.seek(offset)
        try:
            record = json.loads(file.read(length))
        except ValueError:
            return None
        return record if isinstance(record, dict) else None
