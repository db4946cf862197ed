"""How much of the shared policy store one namespace's admins may fill.

Every namespace's rules live in one document (a ConfigMap holds at most 1 MiB), so without a limit one
namespace admin adding rules could fill it, after which every grant everywhere fails, the
cluster-admin's included. Grants by namespace admins are therefore limited per namespace, and stop
short of the store's end: what is left is kept for cluster-admins and profile owners, whose grants
take no limit.
"""

from __future__ import annotations

from ..errors import RuleLimitReached
from .rules import PolicyDoc, Rule

# Namespace admins' grants stop once the policy text would pass this many bytes: the ConfigMap store
# refuses beyond 1 MiB less a margin, and the last 128 KiB or so stay for cluster-admins.
TENANT_SHARE_BYTES = 896 * 1024


def with_limited_rule(doc: PolicyDoc, rule: Rule, *, limit: int) -> PolicyDoc:
    """`doc` with `rule` added, as a namespace admin may: `RuleLimitReached` when the rule's namespace
    already holds `limit` rules or the document would outgrow the namespace admins' share. A rule
    already there is no new rule, so granting it again always succeeds."""
    if rule in doc:
        return doc
    held = sum(1 for existing in doc.rules if existing.namespace == rule.namespace)
    if held >= limit:
        raise RuleLimitReached(
            f"Namespace {rule.namespace} has {held} rules, the most its admins may add "
            "(GATEWAY_NAMESPACE_RULE_LIMIT). Revoke some, grant to a group instead, or ask a cluster-admin.",
            field="namespace",
        )
    after = doc.with_rule(rule)
    if len(after.text.encode()) > TENANT_SHARE_BYTES:
        raise RuleLimitReached(
            "The shared policies are nearly full; the rest is kept for cluster-admins. "
            "Grant to groups rather than to many single users, or ask a cluster-admin.",
            field="namespace",
        )
    return after
