"""`FileIndex`: searches over the local audit files, current to the last event, newest first, with
every filter; the index is derived and rebuilds itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.audit import AuditEvent
from gateway.audit.chain import Sealer
from gateway.audit.export import ExportProgress, export
from gateway.audit.filesink import ChainedFile
from gateway.audit.index import INDEX_NAME, FileIndex, page_query
from gateway.audit.query import BadQuery, Filter, make_filter


def write(directory: Path, events: list[AuditEvent]) -> None:
    file = ChainedFile(directory, Sealer(), 4096)  # small files: searches cross rotations
    file.open()
    for event in events:
        file.append(event.to_record())
    file.close()


def sample(n: int) -> AuditEvent:
    users = ("alice", "bob", "carol")
    return AuditEvent(
        action=("notebook.create", "notebook.access", "auth.login")[n % 3],
        outcome="denied" if n % 5 == 0 else "allowed",
        actor=users[n % 3],
        namespace=users[n % 3],
        notebook=f"nb{n % 2}",
        time=f"2024-05-01T12:{n:02d}:00.000Z",
        reason="Disk FULL on node-7" if n == 7 else "",
        details={"n": n},
    )


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[FileIndex]:
    write(tmp_path, [sample(n) for n in range(60)])
    found = FileIndex(tmp_path)
    yield found
    await found.stop()


def numbers(events: list[dict[str, object]]) -> list[int]:
    return [int(e["details"]["n"]) for e in events]  # type: ignore[index]


async def test_one_users_events_page_newest_first(index: FileIndex) -> None:
    first = await index.search(Filter(user="bob"), limit=5)
    second = await index.search(Filter(user="bob"), cursor=first.next_cursor, limit=100)
    assert numbers(first.events) == [58, 55, 52, 49, 46]
    assert numbers(second.events) == list(range(43, 0, -3)) and second.next_cursor is None


async def test_filters_combine(index: FileIndex) -> None:
    page = await index.search(Filter(namespace="alice", notebook="nb0", outcome="denied"))
    assert numbers(page.events) == [30, 0]
    page = await index.search(
        Filter(action="auth.*", since="2024-05-01T12:50:00.000Z", until="2024-05-01T12:56:00.000Z")
    )
    assert numbers(page.events) == [53, 50]
    page = await index.search(Filter(text="disk full"))
    assert numbers(page.events) == [7]


async def test_events_written_after_the_index_was_built_are_found(index: FileIndex, tmp_path: Path) -> None:
    assert len((await index.search(Filter(user="dave"))).events) == 0
    write(tmp_path, [AuditEvent(action="auth.login", outcome="allowed", actor="dave")])
    assert [e["actor"] for e in (await index.search(Filter(user="dave"))).events] == ["dave"]


async def test_a_damaged_index_is_rebuilt(tmp_path: Path) -> None:
    write(tmp_path, [sample(n) for n in range(10)])
    (tmp_path / INDEX_NAME).write_bytes(b"this is not a SQLite database" * 100)
    index = FileIndex(tmp_path)
    assert numbers((await index.search(Filter(user="alice"))).events) == [9, 6, 3, 0]
    await index.stop()


async def test_a_cursor_from_elsewhere_is_refused(index: FileIndex) -> None:
    with pytest.raises(BadQuery):
        await index.search(Filter(), cursor="r1700000000000-0")


async def test_a_rare_match_pages_short_with_a_cursor_once_the_scan_budget_is_spent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.audit.query.SCAN_BUDGET", 1500)
    write(tmp_path, [sample(7), *(sample(8) for _ in range(2400))])  # the one match is the oldest event
    index = FileIndex(tmp_path)
    try:
        first = await index.search(Filter(text="disk full"))
        assert (first.events, first.scanned) == ([], 2000)  # two chunks of 1000: stopped past the budget
        assert first.next_cursor is not None
        second = await index.search(Filter(text="disk full"), cursor=first.next_cursor)
        assert numbers(second.events) == [7] and second.next_cursor is None
    finally:
        await index.stop()


def query_plan(index_path: Path, filter: Filter) -> list[str]:
    """SQLite's plan for the statement a search with `filter` runs, each step as SQLite words it."""
    sql, params = page_query(filter)
    with contextlib.closing(sqlite3.connect(index_path)) as db:
        return [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", (2**62, *params, 100))]


async def test_a_namespace_export_walks_its_index_newest_first_without_sorting(
    index: FileIndex, tmp_path: Path
) -> None:
    filter = make_filter({"namespace": "alice"})  # as GET /api/audit/export?namespace=alice reads it
    chunks = [chunk async for chunk in export(index, filter, "jsonl", ExportProgress())]
    exported = [json.loads(line) for line in b"".join(chunks).splitlines()]
    assert numbers(exported) == list(range(57, -1, -3))
    plan = query_plan(tmp_path / INDEX_NAME, filter)
    # The whole page comes from a walk down (namespace, seq): no scan of every event, no sort of the namespace's.
    assert plan == ["SEARCH events USING INDEX by_namespace_seq (namespace=? AND seq<?)"]
    assert not [step for step in plan if "TEMP B-TREE" in step]


@pytest.mark.parametrize(
    ("filters", "index_used"),
    [
        ({"user": "bob"}, "by_actor (actor=? AND seq<?)"),
        ({"namespace": "alice", "notebook": "nb0"}, "by_namespace (namespace=? AND notebook=? AND seq<?)"),
        ({"action": "auth.login"}, "by_action (action=? AND seq<?)"),
        ({"outcome": "denied"}, "by_outcome (outcome=? AND seq<?)"),
    ],
)
async def test_every_filter_on_a_column_has_an_index_in_seq_order(
    index: FileIndex, tmp_path: Path, filters: dict[str, str], index_used: str
) -> None:
    await index.search(Filter())  # builds the index file
    assert query_plan(tmp_path / INDEX_NAME, make_filter(filters)) == [f"SEARCH events USING INDEX {index_used}"]


async def test_an_index_file_from_before_the_new_indexes_gets_them_when_opened(tmp_path: Path) -> None:
    write(tmp_path, [sample(n) for n in range(60)])
    first = FileIndex(tmp_path)
    await first.search(Filter())
    await first.stop()
    with contextlib.closing(sqlite3.connect(tmp_path / INDEX_NAME)) as db:  # as an older gateway left it
        db.execute("DROP INDEX by_namespace_seq")
        db.execute("DROP INDEX by_outcome")
        db.commit()
    assert "TEMP B-TREE" in " ".join(query_plan(tmp_path / INDEX_NAME, Filter(namespace="alice")))
    reopened = FileIndex(tmp_path)
    try:
        page = await reopened.search(Filter(namespace="alice"), limit=3)
        assert numbers(page.events) == [57, 54, 51]
        assert await asyncio.to_thread(reopened.catch_up) == 0  # kept its rows: nothing was indexed again
    finally:
        await reopened.stop()
    assert query_plan(tmp_path / INDEX_NAME, Filter(namespace="alice")) == [
        "SEARCH events USING INDEX by_namespace_seq (namespace=? AND seq<?)"
    ]
