"""Authorization: one Casbin decision per request on (identity, namespace, notebook, action).

`PolicyAuthorizer` holds an immutable `Snapshot` (compiled policy, indexes, decision cache).
A reload builds the next snapshot off the event loop and `replace()` swaps it in with one
assignment, which also drops the cache: no request ever sees half a policy or a stale decision.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from ..errors import Forbidden
from ..identity import Identity
from .enforcer import CasbinPolicy, Verdict
from .rules import (
    EVERY_NAMESPACE,
    ROLE_ACTIONS,
    ROLE_RANK,
    Action,
    PolicyDoc,
    Role,
    Rule,
)

log = logging.getLogger(__name__)

# Decisions kept per snapshot before the cache starts over (a bound on memory, not a tuning knob:
# a miss costs tens of microseconds).
CACHE_MAX = 200_000


class Authorizer(Protocol):
    """Decides whether `identity` may do `action` in `namespace` (on `notebook`, if one is named).

    `require()` returns when allowed and raises `errors.Forbidden` with a short reason otherwise.
    It is synchronous: decisions come from memory, never from I/O on the request path.
    """

    def require(self, identity: Identity, namespace: str, action: Action, notebook: str | None = None) -> None: ...

    def namespaces(self, identity: Identity) -> dict[str, str]:
        """The namespaces where the user or one of their groups has a role, with the strongest role."""
        ...


@dataclass(frozen=True, slots=True)
class Source:
    """Where a rule came from: the policy store (`file`, `configmap` or `memory`, with its line),
    `bootstrap` (GATEWAY_BOOTSTRAP_ADMINS), or Kubeflow (read-only: `kubeflow-profile`,
    `kubeflow-rolebinding`, located by the object's namespace/name)."""

    kind: Literal["file", "configmap", "memory", "bootstrap", "kubeflow-profile", "kubeflow-rolebinding"]
    location: str
    line: int | None = None

    @property
    def editable(self) -> bool:
        """Whether the gateway's API can revoke it: not Kubeflow's (changed where they live), nor a
        bootstrap admin (changed in the settings)."""
        return self.kind in ("file", "configmap", "memory")

    def to_json(self) -> dict[str, object]:
        return {"source": self.kind, "location": self.location, "line": self.line, "editable": self.editable}


@dataclass(frozen=True, slots=True)
class Explanation:
    """A decision and the rules that made it: the deny rules when one matched, else the allow rules."""

    allowed: bool
    verdict: Verdict
    reason: str
    rules: tuple[tuple[Rule, Source], ...]

    def to_json(self) -> dict[str, object]:
        """The shape `POST /api/policies/check` and `policy check --json` answer with."""
        return {
            "allowed": self.allowed,
            "decision": self.verdict,
            "reason": self.reason,
            "rules": [{**rule.to_json(), **source.to_json()} for rule, source in self.rules],
        }


_CacheKey = tuple[str, tuple[str, ...], str, str | None, str]


@dataclass(slots=True)
class Snapshot:
    """One version of the policy, compiled. Everything but `cache` is read-only once built."""

    version: str
    policy: CasbinPolicy
    origin: Source  # the store (kind and location); each rule's line is in `lines`
    lines: dict[Rule, int]  # a bootstrap admin's rule is 0, a Kubeflow one -1 (a number, not an object per rule)
    by_subject: dict[str, list[Rule]]
    by_namespace: dict[str, list[Rule]]
    cache: dict[_CacheKey, str | None] = field(default_factory=dict)  # None: allowed; else the refusal
    external: Mapping[Rule, Source] = field(default_factory=dict)  # rules read from Kubeflow, with their objects

    @property
    def rules(self) -> Iterable[Rule]:
        return self.lines.keys()

    def source(self, rule: Rule) -> Source:
        line = self.lines[rule]
        if line == 0:
            return BOOTSTRAP
        if line == EXTERNAL_LINE:
            return self.external[rule]
        return Source(self.origin.kind, self.origin.location, line)


BOOTSTRAP = Source("bootstrap", "GATEWAY_BOOTSTRAP_ADMINS")
EXTERNAL_LINE = -1


def build_snapshot(
    doc: PolicyDoc,
    bootstrap_admins: Iterable[str] = (),
    *,
    kind: Literal["file", "configmap", "memory"] = "memory",
    location: str = "",
    external: Mapping[Rule, Source] | None = None,
) -> Snapshot:
    """Compile a policy document plus the bootstrap admins and the `external` (Kubeflow) rules.
    CPU-bound: call it off the event loop."""
    lines = {Rule(admin, EVERY_NAMESPACE, "cluster-admin"): 0 for admin in bootstrap_admins}
    for entry in doc.entries:
        lines.setdefault(entry.rule, entry.line)  # a duplicate rule is reported at its first line
    for rule in external or {}:
        lines.setdefault(rule, EXTERNAL_LINE)  # also in the store: shown (and revocable) there
    by_subject: dict[str, list[Rule]] = {}
    by_namespace: dict[str, list[Rule]] = {}
    for rule in lines:
        by_subject.setdefault(rule.subject, []).append(rule)
        by_namespace.setdefault(rule.namespace, []).append(rule)
    origin = Source(kind, location)
    snapshot = Snapshot(doc.version, CasbinPolicy(lines), origin, lines, by_subject, by_namespace)
    snapshot.external = dict(external or {})
    return snapshot


def subjects_of(identity: Identity) -> tuple[str, ...]:
    """The Casbin subjects a request acts as: the user, and each group the identity carries."""
    return (f"user:{identity.subject}", *(f"group:{group}" for group in identity.groups))


class PolicyAuthorizer:
    """The gateway's `Authorizer`: Casbin decisions, cached per snapshot, on the event loop thread."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        # Told of each refusal by `require` (the app counts them on /metrics); `allows` asks, it is not refused.
        self.on_denied: Callable[[Action], None] | None = None

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def version(self) -> str:
        return self._snapshot.version

    def replace(self, snapshot: Snapshot) -> None:
        """Put a new policy in force: one assignment, so its decisions and its (empty) cache arrive together."""
        self._snapshot = snapshot

    def require(self, identity: Identity, namespace: str, action: Action, notebook: str | None = None) -> None:
        refusal = self.refusal(identity, namespace, action, notebook)
        if refusal is not None:
            log.debug(
                "denied: %s may not %s in %s/%s (%s)", identity.subject, action, namespace, notebook or "*", refusal
            )
            if self.on_denied is not None:
                self.on_denied(action)
            raise Forbidden(refusal)

    def allows(self, identity: Identity, namespace: str, action: Action, notebook: str | None = None) -> bool:
        return self.refusal(identity, namespace, action, notebook) is None

    def refusal(self, identity: Identity, namespace: str, action: Action, notebook: str | None = None) -> str | None:
        """None when allowed, else the short reason the caller sees. Cached per snapshot."""
        snapshot = self._snapshot  # read once: a swap during this call must not mix two policies
        key = (identity.subject, identity.groups, namespace, notebook, action)
        try:
            return snapshot.cache[key]
        except KeyError:
            pass
        verdict = snapshot.policy.decide(subjects_of(identity), namespace, notebook, action)
        refusal = None if verdict == "allow" else _reason(verdict, namespace, action, notebook)
        cache = snapshot.cache
        if len(cache) >= CACHE_MAX:
            cache.clear()
        cache[key] = refusal
        return refusal

    def namespaces(self, identity: Identity) -> dict[str, str]:
        """Each namespace where the user or one of their groups holds a namespace-wide role, with the
        strongest such role ("*" for cluster-wide roles); a namespace whose access a deny rule takes
        away entirely is left out."""
        snapshot = self._snapshot
        found: dict[str, Role] = {}
        for subject in subjects_of(identity):
            for rule in snapshot.by_subject.get(subject, ()):
                if rule.effect == "allow" and rule.notebook is None:
                    held = found.get(rule.namespace)
                    if held is None or ROLE_RANK[rule.role] > ROLE_RANK[held]:
                        found[rule.namespace] = rule.role
        return {
            namespace: role
            for namespace, role in sorted(found.items())
            if any(self.allows(identity, namespace, action) for action in ROLE_ACTIONS[role])
        }

    def explain(
        self, user: str, groups: tuple[str, ...], namespace: str, action: Action, notebook: str | None = None
    ) -> Explanation:
        """The decision for a (possibly hypothetical) caller, with the rules that decided it."""
        identity = Identity(user, groups=groups)
        snapshot = self._snapshot
        subjects = subjects_of(identity)
        verdict = snapshot.policy.decide(subjects, namespace, notebook, action)
        matched = snapshot.policy.matching(subjects, namespace, notebook, action)
        deciding = [
            _stored(snapshot, rule) for rule in matched if rule.effect == ("deny" if verdict == "deny" else "allow")
        ]
        return Explanation(
            allowed=verdict == "allow",
            verdict=verdict,
            reason=_reason(verdict, namespace, action, notebook, who=user),
            rules=tuple((rule, snapshot.source(rule)) for rule in deciding),
        )

    def access(self, namespace: str) -> list[tuple[Rule, Source]]:
        """Every rule that applies in `namespace`: its own, then the cluster-wide ones ("*")."""
        snapshot = self._snapshot
        rules = [*snapshot.by_namespace.get(namespace, ())]
        if namespace != EVERY_NAMESPACE:
            rules += snapshot.by_namespace.get(EVERY_NAMESPACE, ())
        return [(rule, snapshot.source(rule)) for rule in rules]


def _stored(snapshot: Snapshot, rule: Rule) -> Rule:
    """The rule as the policy holds it: Casbin's rows leave out the guard (not part of a rule's identity)."""
    return next((held for held in snapshot.by_subject.get(rule.subject, ()) if held == rule), rule)


def _reason(verdict: Verdict, namespace: str, action: Action, notebook: str | None, who: str = "you") -> str:
    where = "every namespace (*)" if namespace == EVERY_NAMESPACE else f"namespace {namespace}"
    what = f"{action} notebook server {notebook} in {where}" if notebook else f"{action} in {where}"
    if verdict == "allow":
        return f"{who} may {what}."
    if verdict == "deny":
        return f"A deny rule forbids {who} to {what}."
    if who == "you":
        return f"You have no role that allows you to {what}."
    return f"{who} has no role that allows them to {what}."


def personal_namespace(subject: str) -> str:
    """The name a user's own namespace starts from, as Kubeflow names its profiles: `kubeflow-` and the
    whole username with every run of other characters made `-`, so `user@example.com` is
    `kubeflow-user-example-com` (and `ann@corp.example`, `ann@other.example` differ). Names that still
    meet (`a.b@x`, `a-b@x`) are told apart when granted: the second gets `-2` (see `PolicyManager`)."""
    label = re.sub(r"[^a-z0-9]+", "-", subject.lower()).strip("-")
    return f"{PERSONAL_PREFIX}{label or 'user'}"[:63].rstrip("-")


PERSONAL_PREFIX = "kubeflow-"
