"""The one module that touches pycasbin (untyped): the model, the built-in role links, and decisions.

pycasbin's plain `Enforcer` scans every rule on every call. Here rules are indexed by (namespace,
subject), and Casbin evaluates only the few that could match: the caller's subjects in the
namespace and in "*" (the same idea as pycasbin's `FastEnforcer`, which cannot combine two domains).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Literal

import casbin  # type: ignore[import-untyped]  # no stubs: its Any stops at this module

from .rules import EVERY_NAMESPACE, ROLE_ACTIONS, Action, Rule

# Kept equal to policies/model.conf by a test; the package carries it as text so that an installed
# gateway needs no file beside it.
MODEL_TEXT = """# The Casbin model the gateway enforces (gateway/authz/enforcer.py holds the same text; a test
# keeps the two equal). RBAC with domains: a domain is a namespace, "*" every namespace.
#
# r.sub  the caller's subjects: ("user:<name>", "group:<g1>", "group:<g2>", ...) from the identity,
#        so groups come from the sign-in, never from a per-user list
# r.dom  the namespace; r.obj the notebook server's name, or "*" for the namespace itself
# r.act  "act:<action>" (view, connect, create, stop, start, delete, manage, audit)
# p      a grant: subject, namespace or "*", notebook or "*", role, allow|deny
# g      built in, not read from the policy file: "act:<action>" belongs to a role
#        (view: view; edit: view, connect, create, stop, start, delete; admin: edit + manage;
#        cluster-admin: everything; auditor: audit)

[request_definition]
r = sub, dom, obj, act

[policy_definition]
p = sub, dom, obj, role, eft

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))

[matchers]
m = p.sub in r.sub && (p.dom == r.dom || p.dom == "*") && (p.obj == "*" || p.obj == r.obj) && g(r.act, p.role)
"""

# pycasbin logs its model when an enforcer is built, and every decision (refusals at WARNING): our own
# refusal line says more, once.
logging.getLogger("casbin").setLevel(logging.ERROR)

Verdict = Literal["allow", "deny", "none"]  # allowed; refused by a deny rule; no rule allows it
NO_NOTEBOOK = "*"  # r.obj for a request about the namespace itself (listing, managing roles)
# A `p` rule as Casbin reads it. A tuple of strings, not pycasbin's usual list: the garbage
# collector stops tracking such tuples, so 100k rules do not make every full collection slower.
_Row = tuple[str, str, str, str, str]


class _Enforcer(casbin.Enforcer):  # type: ignore[misc]
    """pycasbin parses the matcher again on every call (about 25 of a 35 µs decision); parse it once.
    Decisions run on the event loop thread only, so the one parsed evaluator is never shared."""

    def __init__(self, model: Any) -> None:
        self._expressions: dict[str, Any] = {}
        super().__init__(model)

    def _get_expression(self, expr: str, functions: Any = None) -> Any:
        evaluator = self._expressions.get(expr)
        if evaluator is None:
            evaluator = self._expressions[expr] = casbin.Enforcer._get_expression(expr, functions)
        evaluator.functions = functions  # pycasbin makes fresh g() closures per call
        return evaluator


class CasbinPolicy:
    """An immutable compiled policy. Built anywhere (the reload builds it off the event loop);
    decided on one thread at a time (the loop), because a decision points Casbin at its candidates."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self._enforcer = _Enforcer(casbin.Enforcer.new_model(text=MODEL_TEXT))
        links = self._enforcer.get_role_manager()
        for role, actions in ROLE_ACTIONS.items():
            for action in actions:
                links.add_link(f"act:{action}", role)
        self._assertion = self._enforcer.model["p"]["p"]
        self._assertion.policy = []
        self._index: dict[tuple[str, str], list[_Row]] = {}
        self.size = 0
        for rule in rules:
            self.size += 1
            self._index.setdefault((rule.namespace, rule.subject), []).append(_row(rule))

    def decide(self, subjects: tuple[str, ...], namespace: str, notebook: str | None, action: Action) -> Verdict:
        """One Casbin decision on the rules that could match."""
        candidates = self._candidates(subjects, namespace)
        if not candidates:
            return "none"  # what Casbin answers with no matching rule (default deny), without asking it
        allowed, deciding = self._enforce(candidates, subjects, namespace, notebook, action)
        if allowed:
            return "allow"
        return "deny" if deciding else "none"  # pycasbin names a rule only when a deny decided

    def matching(self, subjects: tuple[str, ...], namespace: str, notebook: str | None, action: Action) -> list[Rule]:
        """Every rule that matches the request (for "explain"): each candidate asked about alone."""
        found = []
        for row in self._candidates(subjects, namespace):
            allowed, deciding = self._enforce([row], subjects, namespace, notebook, action)
            if allowed or deciding:
                found.append(_rule(row))
        return found

    def _candidates(self, subjects: tuple[str, ...], namespace: str) -> list[_Row]:
        index = self._index
        candidates: list[_Row] = []
        for subject in subjects:
            if (rows := index.get((namespace, subject))) is not None:
                candidates += rows
            if namespace != EVERY_NAMESPACE and (rows := index.get((EVERY_NAMESPACE, subject))) is not None:
                candidates += rows
        return candidates

    def _enforce(
        self, rows: list[_Row], subjects: tuple[str, ...], namespace: str, notebook: str | None, action: Action
    ) -> tuple[bool, bool]:
        self._assertion.policy = rows
        try:
            allowed, explain = self._enforcer.enforce_ex(subjects, namespace, notebook or NO_NOTEBOOK, f"act:{action}")
        finally:
            self._assertion.policy = []
        return bool(allowed), bool(explain)


def _row(rule: Rule) -> _Row:
    return (rule.subject, rule.namespace, rule.notebook or NO_NOTEBOOK, rule.role, rule.effect)


def _rule(row: _Row) -> Rule:
    subject, namespace, notebook, role, effect = row
    return Rule(subject, namespace, role, None if notebook == NO_NOTEBOOK else notebook, effect)  # type: ignore[arg-type]
