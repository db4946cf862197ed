"""The policy manager: hot reload of edits on disk (a bad edit keeps the last good policy),
self-service profiles at sign-in, bootstrap admins, and cutting connections when access goes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pytest

from gateway.authz.manager import Change, PolicyManager
from gateway.authz.rules import PolicyDoc, PolicyError, make_rule
from gateway.authz.stores import FilePolicyStore, MemoryPolicyStore
from gateway.identity import Identity
from tests.conftest import wait_until

ALICE = Identity("alice@example.com")
ALICE_ADMIN = make_rule("user:alice@example.com", "team-a", "admin")

Reloads = list[tuple[Change, str | None]]


async def watching(path: Path, reloads: Reloads) -> tuple[PolicyManager, asyncio.Task[None]]:
    manager = PolicyManager(FilePolicyStore(path), reload_interval_s=0.05)
    await manager.open()
    return manager, asyncio.create_task(manager.watch(lambda change, error: reloads.append((change, error))))


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_an_edit_on_disk_takes_effect_without_a_restart(tmp_path: Path) -> None:
    reloads: Reloads = []
    manager, task = await watching(tmp_path / "policy.csv", reloads)
    assert not manager.authorizer.allows(ALICE, "team-a", "manage")
    (tmp_path / "policy.csv").write_text(ALICE_ADMIN.to_line() + "\n")
    await wait_until(lambda: manager.authorizer.allows(ALICE, "team-a", "manage"))
    await stop(task)
    change, error = reloads[0]
    assert (change.action, error, change.added, change.changed) == ("policy.reload", None, (ALICE_ADMIN,), True)


async def test_a_malformed_edit_is_rejected_and_the_last_good_policy_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reloads: Reloads = []
    (tmp_path / "policy.csv").write_text(ALICE_ADMIN.to_line() + "\n")
    manager, task = await watching(tmp_path / "policy.csv", reloads)
    (tmp_path / "policy.csv").write_text("p, user:alice@example.com, team-a, *, owner, allow\n")
    await wait_until(lambda: reloads)
    await stop(task)
    assert manager.authorizer.allows(ALICE, "team-a", "manage")
    assert reloads[0][1] is not None and "line 1: role must be one of" in reloads[0][1]
    assert "policy file" in caplog.text and "rejected" in caplog.text and "stays in force" in caplog.text


async def test_a_malformed_file_at_start_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "policy.csv").write_text("nonsense\n")
    with pytest.raises(PolicyError, match="line 1"):
        await PolicyManager(FilePolicyStore(tmp_path / "policy.csv")).open()


async def test_a_bad_bootstrap_admin_is_refused_and_a_good_one_is_cluster_admin() -> None:
    with pytest.raises(PolicyError, match="subject"):
        PolicyManager(MemoryPolicyStore(), bootstrap_admins=["bad, name"])
    manager = PolicyManager(MemoryPolicyStore(), bootstrap_admins=["Root@Example.com"])
    assert manager.authorizer.namespaces(Identity("root@example.com")) == {"*": "cluster-admin"}


async def test_sign_in_gives_a_new_user_a_namespace_named_after_them(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    taken = PolicyDoc.of_rules([make_rule("user:someone@else.org", "alice-smith", "admin")])
    manager = PolicyManager(MemoryPolicyStore(taken), auto_profile=True)
    await manager.open()
    alice = Identity("Alice.Smith@example.com".lower())
    changes = await manager.sign_in(alice)
    assert [(c.action, c.via, c.rule) for c in changes] == [
        ("policy.grant", "auto-profile", make_rule("user:alice.smith@example.com", "alice-smith-2", "admin"))
    ]
    assert manager.authorizer.namespaces(alice) == {"alice-smith-2": "admin"}
    assert await manager.sign_in(alice) == []  # she has one now


async def test_no_profile_for_a_member_of_a_group_with_a_namespace_or_when_off() -> None:
    doc = PolicyDoc.of_rules([make_rule("group:ml-team", "team-a", "edit")])
    manager = PolicyManager(MemoryPolicyStore(doc), auto_profile=True)
    await manager.open()
    assert await manager.sign_in(Identity("carol", groups=("ml-team",))) == []
    off = PolicyManager(MemoryPolicyStore(), auto_profile=False)
    assert await off.sign_in(ALICE) == []


async def test_in_dev_the_first_user_to_sign_in_becomes_cluster_admin() -> None:
    manager = PolicyManager(MemoryPolicyStore(), auto_profile=True, first_user_admin=True)
    await manager.open()
    first = await manager.sign_in(ALICE)
    assert sorted(change.via for change in first) == ["auto-profile", "first-user"]
    assert manager.made_first_user_admin(ALICE)
    bob = Identity("bob@example.com")
    assert [change.via for change in await manager.sign_in(bob)] == ["auto-profile"]
    assert not manager.made_first_user_admin(bob)
    assert manager.authorizer.namespaces(bob) == {"bob": "admin"}


async def test_revoking_access_cuts_held_connections_once() -> None:
    manager = PolicyManager(MemoryPolicyStore(PolicyDoc.of_rules([ALICE_ADMIN])))
    await manager.open()
    cuts: list[str] = []
    manager.hold(ALICE, "team-a", "nb1", lambda: cuts.append("nb1"))
    release = manager.hold(ALICE, "team-a", "nb2", lambda: cuts.append("nb2"))
    release()  # nb2 closed by itself before the change
    await manager.grant(make_rule("user:bob@example.com", "team-a", "view"))
    assert cuts == []
    await manager.revoke(ALICE_ADMIN)
    await manager.grant(make_rule("user:carol@example.com", "team-a", "view"))
    assert cuts == ["nb1"]
