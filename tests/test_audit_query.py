"""Filters from query parameters (with the reason a bad one is refused), and CSV that a spreadsheet
cannot be tricked by."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest

from gateway.audit.query import BadQuery, make_filter, parse_limit, to_csv

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_times_may_be_iso_dates_or_ages() -> None:
    found = make_filter({"since": "24h", "until": "2024-05-01T13:00:00+02:00"}, now=NOW)
    assert (found.since, found.until) == ("2024-04-30T12:00:00.000Z", "2024-05-01T11:00:00.000Z")
    assert make_filter({"since": "2024-04-01"}, now=NOW).since == "2024-04-01T00:00:00.000Z"


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"outcome": "maybe"}, "outcome"),
        ({"action": "notebook.create; DROP"}, "action"),
        ({"notebook": "nb1"}, "notebook"),
        ({"since": "yesterday"}, "since"),
    ],
)
def test_bad_filters_are_refused_naming_the_field(values: dict[str, str], field: str) -> None:
    with pytest.raises(BadQuery) as refused:
        make_filter(values, now=NOW)
    assert refused.value.field == field


def test_empty_values_are_no_filter_and_limits_are_bounded() -> None:
    assert make_filter({"user": "", "text": "  "}).describe() == {}
    assert parse_limit(None) == 100 and parse_limit("1000") == 1000
    for bad in ("0", "1001", "ten"):
        with pytest.raises(BadQuery):
            parse_limit(bad)


def test_csv_has_one_row_per_event_and_defuses_formulas() -> None:
    record = {"time": "t", "action": "auth.login", "actor": '=HYPERLINK("http://evil")', "groups": ["a", "b"]}
    rows = list(csv.reader(io.StringIO(to_csv([record, {**record, "actor": "bob"}]))))
    header, first, second = rows
    assert first[header.index("actor")] == '\'=HYPERLINK("http://evil")'
    assert (second[header.index("actor")], second[header.index("groups")]) == ("bob", "a b")
