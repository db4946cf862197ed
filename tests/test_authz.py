"""Decisions: every role x every action x in and out of its namespace, groups, deny over allow,
per-notebook grants, the cache across a policy swap, the namespace list, and "explain"."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from gateway.authz.authorizer import PolicyAuthorizer, build_snapshot
from gateway.authz.enforcer import MODEL_TEXT
from gateway.authz.rules import ACTIONS, Action, PolicyDoc, Role, make_rule
from gateway.errors import Forbidden
from gateway.identity import Identity

ALICE = Identity("alice@example.com")
# What each role may do where it applies, written out (not derived from the code under test).
ALLOWED: dict[Role, set[str]] = {
    "view": {"view"},
    "edit": {"view", "connect", "create", "stop", "start", "delete"},
    "admin": {"view", "connect", "create", "stop", "start", "delete", "manage"},
    "cluster-admin": {"view", "connect", "create", "stop", "start", "delete", "manage", "audit"},
    "auditor": {"audit"},
}
CLUSTER_ROLES = ("cluster-admin", "auditor")


def authorizer(*lines: tuple[str | None, ...], admins: tuple[str, ...] = ()) -> PolicyAuthorizer:
    doc = PolicyDoc.of_rules(make_rule(*line) for line in lines)
    return PolicyAuthorizer(build_snapshot(doc, admins))


@functools.cache
def alice_with(role: Role) -> PolicyAuthorizer:
    """Alice holding `role`: in namespace team-a, or cluster-wide for a cluster role."""
    return authorizer(("user:alice@example.com", "*" if role in CLUSTER_ROLES else "team-a", role))


@pytest.mark.parametrize("place", ["team-a", "team-b", "*"])
@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("role", list(ALLOWED))
def test_every_role_and_action_in_and_out_of_its_namespace(role: Role, action: Action, place: str) -> None:
    applies = role in CLUSTER_ROLES or place == "team-a"
    expected = applies and action in ALLOWED[role]
    assert alice_with(role).allows(ALICE, place, action) is expected
    assert alice_with(role).allows(ALICE, place, action, "nb1" if place != "*" else None) is expected


async def test_a_role_held_through_a_group_counts_and_other_groups_do_not() -> None:
    authz = authorizer(("group:ml-team", "team-a", "edit"))
    assert authz.allows(Identity("carol", groups=("ml-team",)), "team-a", "connect")
    assert authz.allows(Identity("dave", groups=("other", "ml-team")), "team-a", "create")
    assert not authz.allows(Identity("erin", groups=("ml",)), "team-a", "view")
    assert not authz.allows(Identity("ml-team"), "team-a", "view")  # a user is not a group of that name


async def test_a_deny_rule_wins_over_an_allow_and_says_so() -> None:
    authz = authorizer(
        ("user:alice@example.com", "team-a", "admin"),
        ("group:contractors", "team-a", "edit", None, "deny"),
    )
    contractor = Identity("alice@example.com", groups=("contractors",))
    with pytest.raises(Forbidden, match="A deny rule forbids you to connect in namespace team-a"):
        authz.require(contractor, "team-a", "connect")
    assert authz.allows(contractor, "team-a", "manage")  # a deny of edit leaves admin's own action
    assert authz.allows(ALICE, "team-a", "connect")


async def test_a_refusal_without_a_rule_names_the_action_and_place() -> None:
    with pytest.raises(Forbidden, match="no role that allows you to connect notebook server nb1 in namespace bob"):
        authorizer().require(ALICE, "bob", "connect", "nb1")


async def test_a_grant_on_one_notebook_covers_that_server_only() -> None:
    authz = authorizer(("user:bob@example.com", "team-a", "edit", "nb1"))
    bob = Identity("bob@example.com")
    assert authz.allows(bob, "team-a", "connect", "nb1")
    assert not authz.allows(bob, "team-a", "connect", "nb2")
    assert not authz.allows(bob, "team-a", "view")  # listing the namespace needs a namespace role
    assert authz.namespaces(bob) == {}


async def test_bootstrap_admins_are_cluster_admins_with_an_empty_policy() -> None:
    authz = authorizer(admins=("user:root@example.com",))
    root = Identity("root@example.com")
    assert all(authz.allows(root, "anywhere", action) for action in ACTIONS)
    assert authz.namespaces(root) == {"*": "cluster-admin"}


async def test_replacing_the_policy_drops_cached_decisions() -> None:
    authz = authorizer(("user:alice@example.com", "team-a", "edit"))
    assert authz.allows(ALICE, "team-a", "connect")  # now cached
    authz.replace(build_snapshot(PolicyDoc.of_rules([])))
    assert not authz.allows(ALICE, "team-a", "connect")


async def test_namespaces_lists_each_place_with_the_strongest_role() -> None:
    authz = authorizer(
        ("user:alice@example.com", "team-a", "view"),
        ("group:ml-team", "team-a", "admin"),
        ("group:ml-team", "team-b", "edit"),
        ("user:alice@example.com", "team-c", "edit", "nb1"),  # one notebook: not a namespace role
        ("group:gone", "team-d", "view"),
        ("group:gone", "team-d", "view", None, "deny"),  # all access taken away
        ("user:alice@example.com", "*", "auditor"),
    )
    alice = Identity("alice@example.com", groups=("gone", "ml-team"))
    assert authz.namespaces(alice) == {"*": "auditor", "team-a": "admin", "team-b": "edit"}


async def test_explain_names_the_deciding_rules_and_their_lines() -> None:
    authz = authorizer(("group:ml-team", "team-a", "edit"), ("group:contractors", "team-a", "view", None, "deny"))
    allowed = authz.explain("carol", ("ml-team",), "team-a", "view")
    assert (allowed.allowed, allowed.reason) == (True, "carol may view in namespace team-a.")
    assert [(rule.subject, rule.role, source.line) for rule, source in allowed.rules] == [("group:ml-team", "edit", 4)]
    denied = authz.explain("carol", ("contractors", "ml-team"), "team-a", "view")
    assert (denied.allowed, denied.verdict) == (False, "deny")
    assert [(rule.subject, rule.effect) for rule, _ in denied.rules] == [("group:contractors", "deny")]
    nothing = authz.explain("dave", (), "team-a", "view")
    assert (nothing.verdict, nothing.rules) == ("none", ())


async def test_the_shipped_model_file_is_the_model_enforced() -> None:
    assert (Path(__file__).parent.parent / "policies" / "model.conf").read_text() == MODEL_TEXT


async def test_explain_shows_a_deny_rules_guard_as_stored() -> None:
    deny = make_rule("user:bob@example.com", "team-a", "edit", effect="deny", guard="cluster")
    authz = PolicyAuthorizer(build_snapshot(PolicyDoc.of_rules([deny])))
    [(rule, _)] = authz.explain("bob@example.com", (), "team-a", "connect").rules
    assert rule.to_json()["guard"] == "cluster"
