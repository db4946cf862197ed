"""`activity()`: how many events matched a filter in each hour, by action and outcome, for the Audit
page's chart. Counting walks the matching events a page at a time (bounded memory) over at most
`MAX_HOURS` hours and `MAX_EVENTS` events; the answer says when it stopped short."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import UTC, datetime, timedelta

from .events import OUTCOMES
from .query import MAX_LIMIT, AuditStore, Filter

DEFAULT_HOURS = 24  # without `since`: the last day
MAX_HOURS = 7 * 24  # one bar an hour stays readable up to a week
MAX_EVENTS = 500_000  # beyond this the chart says it counted only the newest


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def activity(store: AuditStore, filter: Filter, now: datetime | None = None) -> dict[str, object]:
    """`{"since", "until", "hours": [{"hour", "allowed", "denied", "failed", "actions": {action:
    {outcome: n}}}], "events", "complete", "clamped"}`, oldest hour first, every hour present."""
    end = _parse(filter.until) if filter.until else (now or datetime.now(UTC))
    start = _parse(filter.since) if filter.since else end - timedelta(hours=DEFAULT_HOURS)
    clamped = end - start > timedelta(hours=MAX_HOURS)
    if clamped:
        start = end - timedelta(hours=MAX_HOURS)
    first = start.replace(minute=0, second=0, microsecond=0)
    window = dataclasses.replace(filter, since=_iso(start), until=_iso(end))
    counts: Counter[tuple[str, str, str]] = Counter()  # (hour, action, outcome): at most hours x actions x 3
    seen, cursor, complete = 0, None, False
    while seen < MAX_EVENTS:
        page = await store.search(window, cursor=cursor, limit=MAX_LIMIT)
        for event in page.events:
            hour = str(event.get("time", ""))[:13]  # 2024-05-01T12
            counts[(hour, str(event.get("action")), str(event.get("outcome")))] += 1
        seen += len(page.events)
        cursor = page.next_cursor
        if cursor is None:
            complete = True
            break
    by_hour: dict[str, dict[str, dict[str, int]]] = {}
    for (hour, action, outcome), n in counts.items():
        by_hour.setdefault(hour, {}).setdefault(action, {})[outcome] = n
    hours = []
    moment = first
    while moment < end:
        label = moment.strftime("%Y-%m-%dT%H")
        row: dict[str, object] = {"hour": label + ":00:00Z"}
        actions = by_hour.get(label, {})
        for outcome in OUTCOMES:
            row[outcome] = sum(by.get(outcome, 0) for by in actions.values())
        row["actions"] = dict(sorted(actions.items()))
        hours.append(row)
        moment += timedelta(hours=1)
    return {
        "since": _iso(start),
        "until": _iso(end),
        "hours": hours,
        "events": seen,
        "complete": complete,
        "clamped": clamped,
    }
