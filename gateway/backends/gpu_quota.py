"""A namespace's GPU quota, checked before a notebook server asks for GPUs.

Kubernetes enforces a ResourceQuota on pods, not on Notebooks: a Notebook over the quota is accepted,
and its StatefulSet then fails to make the pod, which the user sees only as a warning on a server
that never starts. So the gateway refuses such a create (or a start) itself, with the reason, using
the quota's `requests.<vendor>` (the only form a quota on an extended resource such as nvidia.com/gpu
takes; the Profiles page sets it). Pure: the caller lists the quotas and passes its view of the notebooks.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from ..kube.client import JsonObject, Kind
from ..quantities import parse_quantity
from .notebook_resource import is_stopped, read_spec

RESOURCE_QUOTAS = Kind("", "v1", "resourcequotas", "resource_quota")


def gpu_quota_problem(
    quotas: Iterable[JsonObject],
    notebooks: Iterable[JsonObject],
    gpus: tuple[tuple[str, int], ...],
    *,
    starting: str | None = None,
) -> str | None:
    """Why asking for `gpus` breaks a quota, or None. In use: the most of what the quota reports
    (every pod's requests, counted by Kubernetes) and what the namespace's running notebook servers
    ask for (also those whose pods are not there yet); `starting` names a notebook not to count."""
    notebooks = list(notebooks)
    for quota in quotas:
        hard, used = _quantities(quota, "spec", "hard"), _quantities(quota, "status", "used")
        for vendor, count in gpus:
            key = f"requests.{vendor}"
            if key not in hard:
                continue
            running = sum(
                number
                for obj in notebooks
                if not is_stopped(obj) and _name(obj) != starting
                for device, number in read_spec(obj).gpus
                if device == vendor
            )
            in_use = max(Decimal(running), used.get(key, Decimal(0)))
            if in_use + count > hard[key]:
                name = _name(quota) or "the quota"
                return (
                    f"The namespace's quota {name} allows {hard[key]} {vendor} and {in_use} are in use, "
                    f"so {count} more do not fit: stop a server that has GPUs, or ask for fewer."
                )
    return None


def _quantities(obj: JsonObject, part: str, field: str) -> dict[str, Decimal]:
    """A quota's `spec.hard` or `status.used`, parsed; an unreadable value is left out."""
    section = obj.get(part)
    values = section.get(field) if isinstance(section, dict) else None
    parsed = {}
    for key, value in (values or {}).items() if isinstance(values, dict) else ():
        try:
            parsed[str(key)] = parse_quantity(str(value))
        except ValueError:
            continue
    return parsed


def _name(obj: JsonObject) -> str:
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else ""
