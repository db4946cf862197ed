"""Reading the audit log: the `Filter` the API and the CLI share, the `AuditStore` protocol both
stores implement (Redis: cluster-wide; the local files' index), pages with opaque cursors, CSV.

Results are newest first. A page holds at most `limit` events and examines at most `SCAN_BUDGET`
stored events, so a rare text match never makes one request scan a million events: the page may
come back short, with a cursor to go on from.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from .events import OUTCOMES

SCAN_BUDGET = 50_000
MAX_LIMIT = 1000

# CSV and export column order; `details` as JSON, `groups` space-separated.
CSV_COLUMNS = (
    "time",
    "action",
    "outcome",
    "reason",
    "actor",
    "groups",
    "auth_method",
    "session",
    "client_ip",
    "user_agent",
    "namespace",
    "notebook",
    "request_id",
    "event_id",
    "seq",
    "details",
)
_RELATIVE = re.compile(r"(\d+)\s*([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class StoreUnavailable(Exception):
    """The store cannot be read right now (Redis down); the API answers 503."""


class BadQuery(ValueError):
    """A filter or cursor that cannot be used; `field` names it."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Filter:
    """Every given field must match. `action` is exact or a family (`auth.*`); `text` is a
    case-insensitive substring of any value; `since`/`until` are ISO times (`until` exclusive)."""

    user: str | None = None
    namespace: str | None = None
    notebook: str | None = None
    action: str | None = None
    outcome: str | None = None
    since: str | None = None
    until: str | None = None
    text: str | None = None

    def matches(self, record: Mapping[str, object]) -> bool:
        if self.user is not None and record.get("actor") != self.user:
            return False
        if self.namespace is not None and record.get("namespace") != self.namespace:
            return False
        if self.notebook is not None and record.get("notebook") != self.notebook:
            return False
        if self.outcome is not None and record.get("outcome") != self.outcome:
            return False
        if self.action is not None and not action_matches(self.action, str(record.get("action"))):
            return False
        when = str(record.get("time", ""))
        if (self.since is not None and when < self.since) or (self.until is not None and when >= self.until):
            return False
        if self.text:
            return self.text.lower() in json.dumps(record, ensure_ascii=False).lower()
        return True

    def describe(self) -> dict[str, str]:
        """The filters that were given, for the `audit.read` event and the API's answer."""
        return {name: value for name in self.__slots__ if (value := getattr(self, name)) is not None}


def action_matches(wanted: str, action: str) -> bool:
    if wanted.endswith(".*"):
        return action.startswith(wanted[:-1])
    return action == wanted


@dataclass(frozen=True, slots=True)
class Page:
    events: list[dict[str, object]]
    next_cursor: str | None  # None: nothing older matches
    scanned: int  # stored events examined for this page


@dataclass(slots=True)
class PageFiller:
    """One page being filled, newest first, by a store that reads its events in chunks: what matched
    so far, and how many stored events it took to find them (for `SCAN_BUDGET`)."""

    filter: Filter
    limit: int
    found: list[dict[str, object]] = field(default_factory=list)
    scanned: int = 0

    def take(self, record: dict[str, object] | None) -> bool:
        """Count one stored event (None: unreadable or trimmed) and keep it if it matches; True when
        that filled the page."""
        self.scanned += 1
        if record is None or not self.filter.matches(record):
            return False
        self.found.append(record)
        return len(self.found) == self.limit

    @property
    def over_budget(self) -> bool:
        return self.scanned >= SCAN_BUDGET

    def page(self, next_cursor: str | None) -> Page:
        return Page(self.found, next_cursor, self.scanned)


class AuditStore(Protocol):
    """Where the API and CLI read events. `search` returns the newest events matching `filter` that
    are older than `cursor` (a previous page's `next_cursor`; None for the newest). It raises
    `BadQuery` for a cursor it did not make and `StoreUnavailable` when it cannot be read."""

    source: str

    async def search(self, filter: Filter, *, cursor: str | None = None, limit: int = 100) -> Page: ...


def make_filter(values: Mapping[str, str], now: datetime | None = None) -> Filter:
    """A `Filter` from query parameters or command-line options (empty values are ignored)."""
    given = {name: value.strip() for name, value in values.items() if value and value.strip()}
    outcome = given.get("outcome")
    if outcome is not None and outcome not in OUTCOMES:
        raise BadQuery(f"outcome must be one of {', '.join(OUTCOMES)}", "outcome")
    action = given.get("action")
    if action is not None and not re.fullmatch(r"[a-z_]+(\.[a-z_]+)*(\.\*)?", action):
        raise BadQuery("action must be an action name (notebook.create) or a family (notebook.*)", "action")
    if "notebook" in given and "namespace" not in given:
        raise BadQuery("a notebook is named within a namespace: give namespace too", "notebook")
    now = now or datetime.now(UTC)
    since = parse_time(given["since"], now, "since") if "since" in given else None
    until = parse_time(given["until"], now, "until") if "until" in given else None
    return Filter(
        user=given.get("user"),
        namespace=given.get("namespace"),
        notebook=given.get("notebook"),
        action=action,
        outcome=outcome,
        since=since,
        until=until,
        text=given.get("text") or given.get("q"),
    )


def parse_time(text: str, now: datetime, field: str) -> str:
    """An ISO 8601 time or date (UTC unless it says otherwise), or an age like `15m`, `24h`, `7d`."""
    if match := _RELATIVE.fullmatch(text):
        moment = now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    else:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            message = f"{field}: use an ISO time (2024-05-01T12:00:00Z), a date, or an age (15m, 24h, 7d)"
            raise BadQuery(message, field) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_limit(text: str | None, default: int = 100) -> int:
    if not text:
        return default
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise BadQuery(f"limit must be a number from 1 to {MAX_LIMIT}", "limit")
    return int(text)


def to_csv(records: Iterable[Mapping[str, object]], header: bool = True) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if header:
        writer.writerow(CSV_COLUMNS)
    for record in records:
        writer.writerow([_csv_cell(name, record.get(name)) for name in CSV_COLUMNS])
    return out.getvalue()


def _csv_cell(name: str, value: object) -> str:
    if value is None:
        return ""
    if name == "groups" and isinstance(value, list):
        text = " ".join(str(v) for v in value)
    elif isinstance(value, dict | list):
        text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    else:
        text = str(value)
    # A cell starting like a formula would run in a spreadsheet: an attacker controls usernames and paths.
    if text == "-":  # "nobody signed in": not a formula
        return text
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
