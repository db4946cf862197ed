"""`AuditLog`: fail closed (or not) when the file cannot be written, catch up when it can, the
stdout sink, and the first-access sampling of `notebook.access`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from unittest import mock

import pytest

from gateway.audit import AuditEvent, AuditLog, AuditUnavailable
from gateway.audit.chain import Sealer
from gateway.audit.filesink import ChainedFile
from gateway.audit.verify import verify

from .conftest import wait_until


async def open_log(directory: Path, **options: object) -> AuditLog:
    audit = AuditLog(ChainedFile(directory, Sealer(), 1 << 20), fsync_interval_s=0.05, **options)  # type: ignore[arg-type]
    await audit.open()
    return audit


def create(user: str = "alice") -> AuditEvent:
    return AuditEvent(action="notebook.create", outcome="allowed", actor=user, namespace="alice", notebook="nb1")


def stored_actions(directory: Path) -> list[str]:
    lines = b"".join(path.read_bytes() for path in sorted(directory.glob("audit-*.jsonl"))).splitlines()
    return [json.loads(line)["action"] for line in lines]


def unblock(path: Path) -> None:
    path.unlink()


@pytest.fixture
def blocked(tmp_path: Path) -> Path:
    """An audit directory path that cannot be created: a file is in the way."""
    path = tmp_path / "audit"
    path.write_text("in the way")
    return path


async def test_fail_closed_refuses_must_audit_acts_while_the_file_cannot_be_written(blocked: Path) -> None:
    audit = await open_log(blocked)
    with pytest.raises(AuditUnavailable):
        audit.require_writable()
    with pytest.raises(AuditUnavailable):
        audit.emit(create())
    audit.emit(AuditEvent(action="access.denied", outcome="denied", actor="bob"))  # a refusal is never refused
    assert audit.problem() is not None and "cannot be written" in audit.problem()  # type: ignore[operator]
    await audit.close()


async def test_best_effort_lets_acts_through_and_writes_their_events_once_it_can(blocked: Path) -> None:
    audit = await open_log(blocked, mode="best_effort")
    audit.emit(create("alice"))
    audit.require_writable()
    unblock(blocked)
    # Nothing else is emitted: the background retry writes what waited.
    await wait_until(lambda: blocked.is_dir() and stored_actions(blocked) == ["notebook.create"])
    audit.emit(create("bob"))
    await audit.close()
    assert stored_actions(blocked) == ["notebook.create", "notebook.create"]
    assert verify(blocked).ok


async def test_each_event_goes_to_stdout_as_one_json_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.audit.events")
    audit = await open_log(tmp_path)
    audit.emit(AuditEvent(action="auth.login", outcome="failed", actor="-", reason='evil\r\n{"forged": 1}'))
    await audit.close()
    [line] = [r.getMessage() for r in caplog.records if r.name == "gateway.audit.events"]
    assert "\n" not in line and "\r" not in line
    assert json.loads(line)["reason"] == 'evil\r\n{"forged": 1}'


async def test_first_access_is_recorded_once_per_key_until_it_expires(tmp_path: Path) -> None:
    audit = await open_log(tmp_path, access_ttl_s=60.0)
    access = lambda: AuditEvent(action="notebook.access", outcome="allowed", actor="alice")  # noqa: E731
    with mock.patch("gateway.audit.log.time.monotonic", return_value=1000.0):
        for _ in range(3):
            audit.emit_first(("session-1", "alice", "nb1"), access)
        audit.emit_first(("session-1", "alice", "nb2"), access)
    with mock.patch("gateway.audit.log.time.monotonic", return_value=1061.0):
        audit.emit_first(("session-1", "alice", "nb1"), access)
    await audit.close()
    assert stored_actions(tmp_path) == ["notebook.access"] * 3


async def test_access_sampling_all_records_every_request(tmp_path: Path) -> None:
    audit = await open_log(tmp_path, access_sampling="all")
    for _ in range(3):
        audit.emit_first(
            ("s", "alice", "nb1"), lambda: AuditEvent(action="notebook.access", outcome="allowed", actor="a")
        )
    await audit.close()
    assert len(stored_actions(tmp_path)) == 3


async def test_a_refused_first_access_is_tried_again_on_the_next_request(blocked: Path) -> None:
    audit = await open_log(blocked)
    access = lambda: AuditEvent(action="notebook.access", outcome="allowed", actor="alice")  # noqa: E731
    with pytest.raises(AuditUnavailable):
        audit.emit_first(("s", "alice", "nb1"), access)
    unblock(blocked)
    audit.emit_first(("s", "alice", "nb1"), access)
    await audit.close()
    assert stored_actions(blocked) == ["notebook.access"]  # the refused request left no "allowed" behind
