"""ValidatingAdmissionPolicies as the API server applies them (admissionregistration.k8s.io/v1): each
policy with a binding that matches a write is evaluated, and a failed validation refuses the write.

What is covered: `matchConstraints.resourceRules` (groups, resources, operations), `matchConditions`,
`variables`, `validations` (message and reason), `failurePolicy`, and bindings with `validationActions:
[Deny]`. Namespace and object selectors and parameters are not; a policy needing them is outside
what the fake can check, so a test of one would fail rather than pass unseen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .cel import CelError, evaluate

Obj = dict[str, Any]


@dataclass(frozen=True)
class AdmissionRequest:
    """One write, as a policy sees it: `object` is None for a DELETE, `old_object` for a CREATE."""

    operation: str  # CREATE, UPDATE or DELETE
    user: str
    groups: tuple[str, ...]
    group: str
    version: str
    resource: str
    kind: str
    namespace: str
    name: str
    object: Obj | None
    old_object: Obj | None
    namespace_object: Obj | None  # None for a cluster-scoped object (a Namespace itself included)


@dataclass(frozen=True)
class Denial:
    code: int
    reason: str
    message: str


def review(policies: list[Obj], bindings: list[Obj], request: AdmissionRequest) -> Denial | None:
    """The first refusal of `request` by a bound policy, or None when every one admits it."""
    by_name = {policy["metadata"]["name"]: policy for policy in policies}
    for binding in sorted(bindings, key=lambda b: b["metadata"]["name"]):
        spec = binding.get("spec") or {}
        policy = by_name.get(spec.get("policyName", ""))
        if policy is None or "Deny" not in (spec.get("validationActions") or []):
            continue
        denial = _apply(policy, binding["metadata"]["name"], request)
        if denial is not None:
            return denial
    return None


def _apply(policy: Obj, binding: str, request: AdmissionRequest) -> Denial | None:
    spec = policy.get("spec") or {}
    if not _matches(spec.get("matchConstraints") or {}, request):
        return None
    name = policy["metadata"]["name"]
    fail_open = spec.get("failurePolicy") == "Ignore"
    env = _variables(request)
    prefix = f"ValidatingAdmissionPolicy '{name}' with binding '{binding}' denied request"
    try:
        for condition in spec.get("matchConditions") or []:
            if evaluate(condition["expression"], env) is not True:
                return None
        values: dict[str, Any] = {}
        env["variables"] = values
        for variable in spec.get("variables") or []:
            values[variable["name"]] = evaluate(variable["expression"], env)
        for validation in spec.get("validations") or []:
            if evaluate(validation["expression"], env) is not True:
                reason = validation.get("reason") or "Invalid"
                code = {"Forbidden": 403, "Unauthorized": 401, "RequestEntityTooLarge": 413}.get(reason, 422)
                message = validation.get("message") or f"failed expression: {validation['expression']}"
                return Denial(code, reason, f"{_what(request)} is forbidden: {prefix}: {message}")
    except CelError as exc:
        if fail_open:
            return None
        return Denial(403, "Forbidden", f"{_what(request)} is forbidden: {prefix}: expression failed: {exc}")
    return None


def _matches(constraints: Obj, request: AdmissionRequest) -> bool:
    for rule in constraints.get("resourceRules") or []:
        if (
            _has(rule.get("apiGroups"), request.group)
            and _has(rule.get("resources"), request.resource)
            and _has(rule.get("operations"), request.operation)
        ):
            return True
    return False


def _has(values: list[str] | None, value: str) -> bool:
    return any(item in ("*", value) for item in values or [])


def _variables(request: AdmissionRequest) -> dict[str, Any]:
    return {
        "object": request.object,
        "oldObject": request.old_object,
        "namespaceObject": request.namespace_object,
        "request": {
            "operation": request.operation,
            "userInfo": {"username": request.user, "groups": list(request.groups)},
            "namespace": request.namespace,
            "name": request.name,
            "resource": {"group": request.group, "version": request.version, "resource": request.resource},
            "kind": {"group": request.group, "version": request.version, "kind": request.kind},
        },
    }


def _what(request: AdmissionRequest) -> str:
    plural = f"{request.resource}.{request.group}" if request.group else request.resource
    return f'{plural} "{request.name}"'
