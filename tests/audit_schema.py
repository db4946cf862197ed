"""Every audit event the test suite makes is checked against gateway/audit/schema/audit-event.v1.json.

A pytest plugin (tests/conftest.py loads it): it records one event of each shape (action, outcome,
detail keys, value types) as `AuditEvent.to_record()` makes them, chain fields added as the files
store them, and at the end of the run fails the run if any does not match the schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from gateway.audit.chain import Sealer, seal
from gateway.audit.events import SCHEMA_PATH, AuditEvent

VALIDATOR = Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
SEEN: dict[tuple[object, ...], dict[str, object]] = {}


def shape(record: dict[str, Any]) -> tuple[object, ...]:
    details = record.get("details")
    detail_types = sorted((k, type(v).__name__) for k, v in details.items()) if isinstance(details, dict) else ()
    return (
        record.get("action"),
        record.get("outcome"),
        tuple(sorted((k, type(v).__name__) for k, v in record.items())),
        tuple(detail_types),
    )


def schema_errors(record: dict[str, object]) -> Iterator[str]:
    for error in VALIDATOR.iter_errors(record):
        yield f"{record.get('action')}: {'/'.join(map(str, error.absolute_path)) or '(event)'}: {error.message}"


@pytest.fixture(autouse=True, scope="session")
def _record_audit_event_shapes() -> Iterator[None]:
    original = AuditEvent.to_record

    def to_record(self: AuditEvent) -> dict[str, object]:
        record = original(self)
        SEEN.setdefault(shape(record), record)
        return record

    AuditEvent.to_record = to_record  # type: ignore[method-assign]
    yield
    AuditEvent.to_record = original  # type: ignore[method-assign]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    problems: list[str] = []
    for record in SEEN.values():
        stored = json.loads(seal(record, 1, "0" * 64, Sealer()).line)  # as the files hold it
        problems.extend(schema_errors(stored))
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        text = "audit events that do not match gateway/audit/schema/audit-event.v1.json:\n  " + "\n  ".join(
            sorted(set(problems))
        )
        if reporter is not None:
            reporter.write_line(text, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
