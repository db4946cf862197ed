"""What makes a profile namespace safe by default: its Pod Security Admission labels, the LimitRange that
gives every container limits, and the securityContext of the notebooks the gateway makes.

Pure data (no I/O), shared by the provisioner (`profiles.py`) and the Notebook builder
(`backends/notebook_resource.py`), so the namespace's rules and the notebooks in it agree.
"""

from __future__ import annotations

from typing import Literal

PodSecurityLevel = Literal["baseline", "restricted"]

PSA_PREFIX = "pod-security.kubernetes.io/"
LIMIT_RANGE_NAME = "notebook-limits"
# What a container without requests or limits of its own gets. Quotas bound limits.cpu and
# limits.memory, so a pod without limits would otherwise be refused outright by the quota.
DEFAULT_LIMITS = {"cpu": "1", "memory": "2Gi"}
DEFAULT_REQUESTS = {"cpu": "100m", "memory": "256Mi"}


def namespace_labels(level: PodSecurityLevel) -> dict[str, str]:
    """Pod Security Admission: `level` enforced (privileged pods, host namespaces, hostPath volumes and
    added capabilities are refused at `baseline`), `restricted` warned and audited, so users see what a
    stricter setting would refuse."""
    return {
        f"{PSA_PREFIX}enforce": level,
        f"{PSA_PREFIX}enforce-version": "latest",
        f"{PSA_PREFIX}warn": "restricted",
        f"{PSA_PREFIX}warn-version": "latest",
        f"{PSA_PREFIX}audit": "restricted",
        f"{PSA_PREFIX}audit-version": "latest",
    }


def limit_range_spec() -> dict[str, object]:
    """The LimitRange of a profile namespace: defaults for containers that set no requests or limits."""
    return {
        "limits": [
            {"type": "Container", "default": dict(DEFAULT_LIMITS), "defaultRequest": dict(DEFAULT_REQUESTS)},
        ]
    }


def notebook_pod_security(*, allow_root: bool) -> dict[str, object]:
    """The pod-level securityContext of a notebook: the runtime's default seccomp profile, and (unless
    an admin allows root in this namespace) no container may run as uid 0."""
    context: dict[str, object] = {"seccompProfile": {"type": "RuntimeDefault"}}
    if not allow_root:
        context["runAsNonRoot"] = True
    return context


def notebook_container_security() -> dict[str, object]:
    """The notebook container's securityContext: what `restricted` asks of every container (no
    privilege escalation, every capability dropped), so a notebook passes in any profile namespace."""
    return {"allowPrivilegeEscalation": False, "privileged": False, "capabilities": {"drop": ["ALL"]}}
