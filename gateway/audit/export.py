"""`export()`: every event matching a filter, newest first, as CSV, JSON lines or ECS JSON lines,
streamed a page at a time: memory stays bounded by one page (`MAX_LIMIT` events) whatever the
number of events, so an export of millions of events is as safe as one of ten."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, get_args

from .ecs import to_ecs
from .query import MAX_LIMIT, AuditStore, Filter, to_csv

ExportFormat = Literal["csv", "jsonl", "ecs"]
EXPORT_FORMATS: tuple[str, ...] = get_args(ExportFormat)
CONTENT_TYPES = {"csv": "text/csv", "jsonl": "application/x-ndjson", "ecs": "application/x-ndjson"}
FILE_NAMES = {"csv": "audit.csv", "jsonl": "audit.jsonl", "ecs": "audit-ecs.jsonl"}


@dataclass(slots=True)
class ExportProgress:
    """How far an export got (for its `audit.read` event, written when it ends however it ends)."""

    returned: int = 0
    complete: bool = False


async def export(
    store: AuditStore, filter: Filter, fmt: ExportFormat, progress: ExportProgress
) -> AsyncIterator[bytes]:
    """The chunks of the export, one page of events each (CSV: the header first). Raises the
    store's `StoreUnavailable` if it fails midway: the caller can then only cut the response."""
    if fmt == "csv":
        yield to_csv((), header=True).encode()
    cursor: str | None = None
    while True:
        page = await store.search(filter, cursor=cursor, limit=MAX_LIMIT)
        if page.events:
            progress.returned += len(page.events)
            yield _encode(page.events, fmt)
        cursor = page.next_cursor
        if cursor is None:
            progress.complete = True
            return


def _encode(events: list[dict[str, object]], fmt: ExportFormat) -> bytes:
    if fmt == "csv":
        return to_csv(events, header=False).encode()
    convert = to_ecs if fmt == "ecs" else dict
    return "".join(json.dumps(convert(event), ensure_ascii=False) + "\n" for event in events).encode()
