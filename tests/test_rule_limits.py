"""gateway/authz/rule_limits.py: a namespace admin's grants stop at their namespace's limit and short
of the shared store's end, so the rest stays for cluster-admins (the ConfigMap store's 1 MiB)."""

from __future__ import annotations

import pytest

from gateway.authz.configmap import MAX_POLICY_BYTES
from gateway.authz.rule_limits import TENANT_SHARE_BYTES, with_limited_rule
from gateway.authz.rules import EMPTY, PolicyDoc, Rule
from gateway.errors import RuleLimitReached


def users(namespace: str, count: int) -> PolicyDoc:
    return PolicyDoc.of_rules(Rule(f"user:u{i}@example.com", namespace, "view") for i in range(count))


def test_a_namespace_at_its_limit_takes_no_new_rule_but_others_do() -> None:
    full = users("team-a", 5)
    with pytest.raises(RuleLimitReached, match="team-a has 5 rules"):
        with_limited_rule(full, Rule("user:new@example.com", "team-a", "edit"), limit=5)
    assert with_limited_rule(full, Rule("user:u0@example.com", "team-a", "view"), limit=5) is full  # held already
    other = with_limited_rule(full, Rule("user:new@example.com", "team-b", "edit"), limit=5)
    assert len(other.rules) == 6


def test_namespace_admins_leave_room_for_cluster_admins_in_the_configmap() -> None:
    assert TENANT_SHARE_BYTES < MAX_POLICY_BYTES - 64 * 1024
    crowded = PolicyDoc.of_rules(
        Rule(f"user:someone-with-a-long-name-{i}@example.com", f"ns-{i % 500}", "view") for i in range(15_000)
    )
    assert len(crowded.text.encode()) > TENANT_SHARE_BYTES
    with pytest.raises(RuleLimitReached, match="nearly full"):
        with_limited_rule(crowded, Rule("user:x@example.com", "ns-1", "view"), limit=1000)
    assert with_limited_rule(EMPTY, Rule("user:x@example.com", "ns-1", "view"), limit=1).rules
