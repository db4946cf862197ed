"""`AuditEvent`: the versioned record's fields, an identity as the actor, and details that store
as plain JSON without anything secret."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import pytest

from gateway.audit import ACTIONS, AuditEvent, session_hash
from gateway.identity import Identity


def test_a_record_has_every_schema_field_with_a_utc_millisecond_time() -> None:
    identity = Identity("alice@example.com", groups=("ml", "staff"), method="bearer")
    record = AuditEvent.by(identity, "notebook.create", "allowed", namespace="alice", notebook="nb1").to_record()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(record["time"]))
    assert (record["actor"], record["groups"], record["auth_method"]) == (
        "alice@example.com",
        ["ml", "staff"],
        "bearer",
    )
    assert (record["version"], record["outcome"], record["namespace"], record["notebook"]) == (
        1,
        "allowed",
        "alice",
        "nb1",
    )
    assert set(record) == {
        "version", "event_id", "time", "action", "outcome", "reason", "actor", "groups", "auth_method",
        "session", "client_ip", "user_agent", "request_id", "namespace", "notebook", "details",
    }  # fmt: skip


def test_every_event_has_its_own_id() -> None:
    ids = {AuditEvent(action="auth.logout", outcome="allowed", actor="a").event_id for _ in range(100)}
    assert len(ids) == 100


def test_a_session_is_named_by_a_one_way_hash() -> None:
    session_id = "s3cret-session-id-from-the-cookie"
    digest = session_hash(session_id)
    assert digest == session_hash(session_id) and len(digest) == 32
    assert session_id not in digest and digest != session_hash(session_id + "x")


def test_details_are_stored_as_plain_json_and_long_text_is_cut() -> None:
    details: dict[Any, object] = {
        "cpu": Decimal("0.5"),
        "volumes": ("a", "b"),
        "tags": {"z", "y"},
        "path": "x" * 5000,
        7: None,
    }
    record = AuditEvent(action="notebook.create", outcome="allowed", actor="a", details=details).to_record()
    stored = record["details"]
    assert isinstance(stored, dict)
    assert (stored["cpu"], stored["volumes"], stored["tags"], stored["7"]) == ("0.5", ["a", "b"], ["y", "z"], None)
    assert len(stored["path"]) < 2100
    assert json.loads(json.dumps(record)) == record


def test_an_unknown_outcome_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="outcome"):
        AuditEvent(action="auth.login", outcome="maybe", actor="a")  # type: ignore[arg-type]


def test_the_catalogue_marks_which_acts_are_refused_when_they_cannot_be_recorded() -> None:
    must = {name for name, info in ACTIONS.items() if info.must_audit}
    assert {"notebook.create", "notebook.delete", "auth.login", "policy.grant", "audit.read"} <= must
    assert not {"access.denied", "auth.logout", "policy.reload"} & must
    denied = AuditEvent(action="notebook.create", outcome="denied", actor="a")
    assert not denied.must_audit  # a refusal is recorded when possible, never refused itself
