"""Whether a Kubeflow Profile really owns the namespace it names, decided as Kubeflow's profile
controller decides it: the namespace carries the annotation `owner` with the Profile's owner.

A Profile is cluster-scoped and anyone allowed to create one picks its name, so without this check a
Profile named `kube-system` would make its owner admin of kube-system. Kubeflow's controller refuses
such a Profile ("namespace already exist, but not owned by profile creator"); the gateway gives it no
roles either, and neither do KFAM RoleBindings in a namespace no Profile owns.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ..kube.client import JsonObject, Kind
from ..kube.kubeflow_names import NAMESPACE_OWNER_ANNOTATION, PROFILE_OWNER_FIELD

log = logging.getLogger(__name__)

PROFILE_NAMESPACES = Kind("", "v1", "namespaces", "namespace", namespaced=False)


def owned_namespaces(
    profiles: Mapping[str, Mapping[str, JsonObject]], namespaces: Mapping[str, Mapping[str, JsonObject]]
) -> set[str]:
    """The Profiles (`{"": {name: obj}}`) whose namespace (`{"": {name: obj}}`) exists and is annotated
    with the Profile's owner. A Profile whose namespace is missing (not made yet) or belongs to someone
    else gives nothing."""
    owned = set()
    for name, profile in sorted(profiles.get("", {}).items()):
        owner = _owner(profile)
        namespace = namespaces.get("", {}).get(name)
        if owner is None or namespace is None:
            continue
        metadata = namespace.get("metadata")
        annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
        if isinstance(annotations, dict) and annotations.get(NAMESPACE_OWNER_ANNOTATION) == owner:
            owned.add(name)
        else:
            log.warning(
                "Profile %s: namespace already exists, but not owned by profile creator %s; no roles from it",
                name,
                owner,
            )
    return owned


def _owner(profile: JsonObject) -> str | None:
    spec = profile.get("spec")
    owner = spec.get(PROFILE_OWNER_FIELD) if isinstance(spec, dict) else None
    name = owner.get("name") if isinstance(owner, dict) else None
    return name if isinstance(name, str) else None
