"""What the API server's built-in admission does to a Pod that a profile namespace's rules depend on:
LimitRange defaulting, Pod Security Admission (`baseline` and `restricted`, the checks a notebook
terminal could try), and ResourceQuota on cpu, memory and their limits.

The Pod Security checks follow the Pod Security Standards; a subset is modelled (privileged, host
namespaces, hostPath, host ports, added capabilities; for `restricted` also privilege escalation,
runAsNonRoot, dropped capabilities and seccomp), enough that a test can tell a safe namespace from one
where a `pods/create` grant is root on the node.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

from gateway.quantities import parse_quantity

Obj = dict[str, Any]

PSA_ENFORCE = "pod-security.kubernetes.io/enforce"
# The capabilities `baseline` lets a container add (the container runtimes' defaults).
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD"}
BASELINE_CAPABILITIES |= {"NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
QUOTA_RESOURCES = {
    "cpu": ("requests", "cpu"),
    "requests.cpu": ("requests", "cpu"),
    "memory": ("requests", "memory"),
    "requests.memory": ("requests", "memory"),
    "limits.cpu": ("limits", "cpu"),
    "limits.memory": ("limits", "memory"),
}


class PodRefused(Exception):
    """A 403 Forbidden from admission, worded as the API server words it."""


def admit_pod(pod: Obj, namespace: Obj | None, limit_ranges: list[Obj], quotas: list[Obj], pods: list[Obj]) -> Obj:
    """The pod after LimitRange defaulting, or `PodRefused` by Pod Security or a ResourceQuota."""
    pod = copy.deepcopy(pod)
    name = (pod.get("metadata") or {}).get("name", "")
    spec = pod.get("spec") or {}
    for limit_range in limit_ranges:
        _default(spec, limit_range)
    level = (((namespace or {}).get("metadata") or {}).get("labels") or {}).get(PSA_ENFORCE, "privileged")
    problems = violations(level, spec)
    if problems:
        raise PodRefused(f'pods "{name}" is forbidden: violates PodSecurity "{level}:latest": {", ".join(problems)}')
    for quota in quotas:
        _charge(name, spec, quota, pods)
    return pod


def violations(level: str, spec: Obj) -> list[str]:
    """What of `spec` (a pod spec) the Pod Security Standard `level` forbids; empty when it passes."""
    if level not in ("baseline", "restricted"):
        return []
    problems = []
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    pod_context = spec.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            problems.append(f"host namespaces ({key}=true)")
    host_paths = [v.get("name") for v in spec.get("volumes") or [] if "hostPath" in v]
    if host_paths:
        problems.append(f"hostPath volumes ({', '.join(map(str, host_paths))})")
    for box in containers:
        context = box.get("securityContext") or {}
        who = f'container "{box.get("name")}"'
        if context.get("privileged"):
            problems.append(f"privileged ({who} must not set securityContext.privileged=true)")
        if any(port.get("hostPort") for port in box.get("ports") or []):
            problems.append(f"hostPort ({who} uses a hostPort)")
        added = set((context.get("capabilities") or {}).get("add") or [])
        allowed = {"NET_BIND_SERVICE"} if level == "restricted" else BASELINE_CAPABILITIES
        if added - allowed:
            problems.append(f"unrestricted capabilities ({who} must not add {', '.join(sorted(added - allowed))})")
        if level == "restricted":
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"allowPrivilegeEscalation != false ({who})")
            if "ALL" not in ((context.get("capabilities") or {}).get("drop") or []):
                problems.append(f'unrestricted capabilities ({who} must drop "ALL")')
            if not (context.get("runAsNonRoot") or pod_context.get("runAsNonRoot")):
                problems.append(f"runAsNonRoot != true ({who})")
            seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                problems.append(f"seccompProfile ({who} must set it to RuntimeDefault or Localhost)")
    return problems


def _default(spec: Obj, limit_range: Obj) -> None:
    """LimitRanger: a container's missing limits and requests come from the Container item's defaults
    (a missing request defaults to the limit when there is no defaultRequest)."""
    for item in (limit_range.get("spec") or {}).get("limits") or []:
        if item.get("type") != "Container":
            continue
        for box in spec.get("containers") or []:
            resources = box.setdefault("resources", {})
            limits = resources.setdefault("limits", {})
            for key, value in (item.get("default") or {}).items():
                limits.setdefault(key, value)
            requests = resources.setdefault("requests", {})
            for key, value in {**limits, **(item.get("defaultRequest") or {})}.items():
                requests.setdefault(key, value)


def _charge(name: str, spec: Obj, quota: Obj, pods: list[Obj]) -> None:
    quota_name = quota["metadata"]["name"]
    for key, hard in ((quota.get("spec") or {}).get("hard") or {}).items():
        if key not in QUOTA_RESOURCES:
            continue
        kind, resource = QUOTA_RESOURCES[key]
        wanted = _total(spec, kind, resource)
        if wanted is None:
            raise PodRefused(f'pods "{name}" is forbidden: failed quota: {quota_name}: must specify {key}')
        used = sum((_total(pod.get("spec") or {}, kind, resource) or Decimal(0) for pod in pods), Decimal(0))
        if used + wanted > parse_quantity(str(hard)):
            raise PodRefused(
                f'pods "{name}" is forbidden: exceeded quota: {quota_name}, requested: {key}={wanted}, '
                f"used: {key}={used}, limited: {key}={hard}"
            )


def _total(spec: Obj, kind: str, resource: str) -> Decimal | None:
    """The pod's total of `resource` in `kind` (requests or limits); None when a container sets none."""
    total = Decimal(0)
    for box in spec.get("containers") or []:
        value = ((box.get("resources") or {}).get(kind) or {}).get(resource)
        if value is None:
            return None
        total += parse_quantity(str(value))
    return total
