"""The policy manager: hot reload of edits on disk (a bad edit keeps the last good policy),
self-service profiles at sign-in, bootstrap admins, and cutting connections when access goes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pytest

from gateway.authz.manager import Change, PolicyManager
from gateway.authz.rules import EMPTY_MARKER, PolicyDoc, PolicyError, make_rule
from gateway.authz.stores import FilePolicyStore, MemoryPolicyStore
from gateway.errors import Forbidden
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


NAME_2 = "kubeflow-alice-smith-example-com-2"


async def test_sign_in_gives_a_new_user_a_namespace_named_after_them(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    taken = PolicyDoc.of_rules([make_rule("user:someone@else.org", "kubeflow-alice-smith-example-com", "admin")])
    manager = PolicyManager(MemoryPolicyStore(taken), auto_profile=True)
    await manager.open()
    alice = Identity("Alice.Smith@example.com".lower())
    changes = await manager.sign_in(alice)
    assert [(c.action, c.via, c.rule) for c in changes] == [
        ("policy.grant", "auto-profile", make_rule("user:alice.smith@example.com", NAME_2, "admin"))
    ]
    assert manager.authorizer.namespaces(alice) == {NAME_2: "admin"}
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
    assert manager.authorizer.namespaces(bob) == {"kubeflow-bob-example-com": "admin"}


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


# A username shaped to close its own line and write a cluster-admin rule of its own after it.
INJECTED = "eve, team-z, *, view, allow{brk}p, user:mallory, *, *, cluster-admin, allow{brk}p, user:eve"


@pytest.mark.parametrize("brk", ["\n", "\r", "\x0b", "\x1e", "\x85", "\u2028", "\u2029"])
async def test_a_username_with_line_breaks_never_becomes_policy_at_sign_in(
    tmp_path: Path, brk: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "policy.csv"
    manager = PolicyManager(FilePolicyStore(path), auto_profile=True, first_user_admin=True)
    await manager.open()
    assert await manager.sign_in(Identity(INJECTED.format(brk=brk))) == []
    assert "cannot be a policy subject" in caplog.text
    again = PolicyManager(FilePolicyStore(path))  # the next start (or another replica) reads the file
    await again.open()
    assert again.doc.rules == ()
    assert not again.authorizer.allows(Identity("mallory"), "team-a", "manage")


async def test_a_namespace_admin_cannot_lift_a_deny_set_by_a_cluster_admin() -> None:
    deny = make_rule("user:alice@example.com", "team-a", "edit", effect="deny", guard="cluster")
    manager = PolicyManager(MemoryPolicyStore(PolicyDoc.of_rules([ALICE_ADMIN, deny])))
    await manager.open()
    unguarded = make_rule("user:alice@example.com", "team-a", "edit", effect="deny")  # as a revoke names it
    with pytest.raises(Forbidden, match="only a cluster-admin may remove"):
        await manager.revoke(unguarded, cluster_level=False)
    await manager.grant(unguarded)  # granting it again without the guard does not lower the guard
    assert [rule.guard for rule in manager.doc.rules] == ["namespace", "cluster"]
    assert not manager.authorizer.allows(ALICE, "team-a", "connect")
    assert (await manager.revoke(unguarded, cluster_level=True)).changed


@pytest.mark.parametrize("emptied", ["", "# comments only\n", "\n\n"])
async def test_a_policy_file_that_suddenly_holds_no_rules_is_refused_until_marked(tmp_path: Path, emptied: str) -> None:
    reloads: Reloads = []
    (tmp_path / "policy.csv").write_text(ALICE_ADMIN.to_line() + "\n")
    manager, task = await watching(tmp_path / "policy.csv", reloads)
    (tmp_path / "policy.csv").write_text(emptied)
    await wait_until(lambda: reloads)
    assert manager.authorizer.allows(ALICE, "team-a", "manage")  # the last good policy stays
    assert reloads[0][1] is not None and "holds no rules" in reloads[0][1]
    assert manager.problem is not None and EMPTY_MARKER in manager.problem
    with pytest.raises(PolicyError, match="holds no rules"):  # nor does a write make the accident stick
        await manager.grant(make_rule("user:bob@example.com", "team-a", "view"))
    (tmp_path / "policy.csv").write_text(f"{emptied}{EMPTY_MARKER}\n")
    await wait_until(lambda: not manager.authorizer.allows(ALICE, "team-a", "manage"))
    await stop(task)
    assert manager.problem is None and reloads[-1][1] is None


async def test_revoking_the_last_rule_says_the_empty_policy_is_meant(tmp_path: Path) -> None:
    path = tmp_path / "policy.csv"
    path.write_text(ALICE_ADMIN.to_line() + "\n")
    writer, reader = PolicyManager(FilePolicyStore(path)), PolicyManager(FilePolicyStore(path))
    await writer.open()
    await reader.open()
    await writer.revoke(ALICE_ADMIN)
    reloads: Reloads = []
    await reader.reload_once(lambda change, error: reloads.append((change, error)))
    assert reloads[0][1] is None and not reader.authorizer.allows(ALICE, "team-a", "manage")


async def test_bootstrap_admins_keep_working_while_an_emptied_policy_is_refused(tmp_path: Path) -> None:
    (tmp_path / "policy.csv").write_text(ALICE_ADMIN.to_line() + "\n")
    manager = PolicyManager(FilePolicyStore(tmp_path / "policy.csv"), bootstrap_admins=["root@example.com"])
    await manager.open()
    (tmp_path / "policy.csv").write_text("")
    await manager.reload_once(lambda change, error: None)
    assert manager.authorizer.allows(Identity("root@example.com"), "team-a", "manage")


async def test_self_service_never_takes_a_namespace_that_something_else_claims() -> None:
    kubeflow = make_rule("user:ann@corp.example", "kubeflow-ann-other-example", "admin")
    claimed = {"kubeflow-ann-other-example-2": "namespace exists", "kubeflow-ann-other-example-3": "a route"}
    asked: list[tuple[str, str]] = []

    async def claims(namespace: str, owner: str) -> str | None:
        asked.append((namespace, owner))
        return claimed.get(namespace)

    manager = PolicyManager(MemoryPolicyStore(PolicyDoc.of_rules([kubeflow])), auto_profile=True)
    manager.claims = claims
    await manager.open()
    ann = Identity("ann@other.example")
    [change] = await manager.sign_in(ann)
    assert change.rule is not None and change.rule.namespace == "kubeflow-ann-other-example-4"
    assert asked[0] == ("kubeflow-ann-other-example-2", "ann@other.example")  # the first one a rule names


async def test_two_users_whose_names_differ_only_in_their_domain_get_different_namespaces() -> None:
    manager = PolicyManager(MemoryPolicyStore(), auto_profile=True)
    await manager.open()
    names = set()
    for user in ("ann@corp.example", "ann@other.example", "ann.corp@example", "ann-corp@example"):
        [change] = await manager.sign_in(Identity(user))
        assert change.rule is not None
        names.add(change.rule.namespace)
    assert len(names) == 4


async def test_when_a_claim_cannot_be_checked_no_namespace_is_taken(caplog: pytest.LogCaptureFixture) -> None:
    async def claims(namespace: str, owner: str) -> str | None:
        raise OSError("the Kubernetes API does not answer")

    manager = PolicyManager(MemoryPolicyStore(), auto_profile=True)
    manager.claims = claims
    await manager.open()
    assert await manager.sign_in(ALICE) == []
    assert "could not check whether namespace" in caplog.text
