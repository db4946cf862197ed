"""`KubeflowPolicies`: roles read (never written) from Kubeflow's own objects, kept current by watch.

A Profile's `spec.owner` (kind User) is `admin` of the namespace the Profile names, if that namespace
is the Profile's (`profile_ownership`); a KFAM RoleBinding in such a namespace (annotations `user` and
`role`, roleRef ClusterRole kubeflow-admin, -edit or -view) gives that user that role there. Each rule
carries the object it came from.
"""

from __future__ import annotations

import asyncio
import logging

from ..errors import KubernetesError
from ..kube.client import JsonObject, Kind, KubeClient, WatchEvent
from ..kube.kubeflow_names import (
    KFAM_ROLE_ANNOTATION,
    KFAM_USER_ANNOTATION,
    KUBEFLOW_ADMIN,
    KUBEFLOW_EDIT,
    KUBEFLOW_VIEW,
    PROFILE_OWNER_FIELD,
)
from ..kube.reflector import Reflector, stop, watch_health
from ..kube.watch_health import WatchHealth
from .authorizer import Source
from .profile_ownership import PROFILE_NAMESPACES, owned_namespaces
from .rules import PolicyError, Role, Rule, make_rule

log = logging.getLogger(__name__)

PROFILES = Kind("kubeflow.org", "v1", "profiles")
ROLEBINDINGS = Kind("rbac.authorization.k8s.io", "v1", "rolebindings")
# The ClusterRoles that KFAM binds contributors to, and the gateway role each one means.
KFAM_ROLES: dict[str, Role] = {KUBEFLOW_ADMIN: "admin", KUBEFLOW_EDIT: "edit", KUBEFLOW_VIEW: "view"}


class KubeflowPolicies:
    """Profiles (cluster-wide) and RoleBindings (every namespace), listed then watched. `generation`
    goes up with every change, so the policy manager knows when to compile again."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client  # the gateway's one client: opened before open(), closed after close()
        self.generation = 0
        self._reflectors: list[Reflector] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def synced(self) -> bool:
        return bool(self._reflectors) and all(reflector.synced for reflector in self._reflectors)

    def watch_health(self) -> WatchHealth:
        return watch_health("Kubeflow's Profiles and RoleBindings", self._reflectors)

    async def open(self) -> None:
        """List both kinds before serving; if the API does not answer, start without Kubeflow's roles
        (refusing is the safe side) and keep trying in the background."""
        self._reflectors = [
            Reflector(self.client, kind, None, on_change=self._changed)
            for kind in (PROFILES, ROLEBINDINGS, PROFILE_NAMESPACES)
        ]
        results = await asyncio.gather(*(r.sync() for r in self._reflectors), return_exceptions=True)
        for result in results:
            if isinstance(result, KubernetesError):
                log.warning(
                    "Kubeflow roles: the first list failed (%s); retrying in the background", result.description
                )
            elif isinstance(result, BaseException):
                await self.close()
                raise result
        self._task = asyncio.create_task(self._run(), name="kubeflow-policy-watcher")

    async def close(self) -> None:
        await stop(self._task)
        self._task = None

    async def _run(self) -> None:
        await asyncio.gather(*(reflector.run() for reflector in self._reflectors))

    def _changed(self, event: WatchEvent | None) -> None:
        self.generation += 1

    def rules(self) -> dict[Rule, Source]:
        """Every rule Kubeflow's objects give now (the first object to give a rule names its source)."""
        if not self._reflectors:
            return {}
        profiles, bindings, namespaces = (reflector.objects for reflector in self._reflectors)
        return rules_from(profiles, bindings, namespaces)


async def list_rules(client: KubeClient) -> dict[Rule, Source]:
    """The rules Kubeflow's objects give now, from one list of each (no watch): for `policy check`.
    Raises `KubernetesError` when the API does not answer (a check without them could say "denied" wrongly)."""
    reflectors = [Reflector(client, kind, None) for kind in (PROFILES, ROLEBINDINGS, PROFILE_NAMESPACES)]
    for reflector in reflectors:
        await reflector.sync()  # the same view the watch would hold after its first list
    profiles, bindings, namespaces = (reflector.objects for reflector in reflectors)
    return rules_from(profiles, bindings, namespaces)


def rules_from(
    profiles: dict[str, dict[str, JsonObject]],
    bindings: dict[str, dict[str, JsonObject]],
    namespaces: dict[str, dict[str, JsonObject]],
) -> dict[Rule, Source]:
    """Rules from Profiles (`{"": {name: obj}}`) that own their namespace (`namespaces`, likewise), and
    RoleBindings (`{namespace: {name: obj}}`) in those namespaces."""
    found: dict[Rule, Source] = {}
    owned = owned_namespaces(profiles, namespaces)
    for names in profiles.values():
        for name, profile in sorted(names.items()):
            if name not in owned:
                continue
            rule = profile_rule(name, profile)
            if rule is not None:
                found.setdefault(rule, Source("kubeflow-profile", name))
    for namespace, by_name in sorted(bindings.items()):
        if namespace not in owned:
            continue  # KFAM only manages profile namespaces; other RoleBindings are none of ours
        for name, binding in sorted(by_name.items()):
            rule = rolebinding_rule(namespace, binding)
            if rule is not None:
                found.setdefault(rule, Source("kubeflow-rolebinding", f"{namespace}/{name}"))
    return found


def profile_rule(name: str, profile: JsonObject) -> Rule | None:
    """`admin` of namespace `name` for the Profile's owner, if it names a User."""
    spec = profile.get("spec")
    owner = spec.get(PROFILE_OWNER_FIELD) if isinstance(spec, dict) else None
    if not isinstance(owner, dict) or owner.get("kind") != "User" or not isinstance(owner.get("name"), str):
        return None
    return _rule(owner["name"], name, "admin", f"Profile {name}")


def rolebinding_rule(namespace: str, binding: JsonObject) -> Rule | None:
    """The role a KFAM RoleBinding gives, or None for any other RoleBinding."""
    metadata, ref = binding.get("metadata"), binding.get("roleRef")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    if not isinstance(annotations, dict) or not isinstance(ref, dict) or ref.get("kind") != "ClusterRole":
        return None
    user, role = annotations.get(KFAM_USER_ANNOTATION), KFAM_ROLES.get(str(ref.get("name")))
    if not isinstance(user, str) or role is None or KFAM_ROLE_ANNOTATION not in annotations:
        return None
    name = metadata.get("name") if isinstance(metadata, dict) else "?"
    if annotations[KFAM_ROLE_ANNOTATION] != role:
        # Kubernetes grants what roleRef names, so that is the role the gateway gives too.
        meant = annotations[KFAM_ROLE_ANNOTATION]
        log.warning("RoleBinding %s/%s: annotation role=%s but roleRef %s", namespace, name, meant, role)
    return _rule(user, namespace, role, f"RoleBinding {namespace}/{name}")


def _rule(user: str, namespace: str, role: Role, what: str) -> Rule | None:
    try:
        return make_rule(f"user:{user}", namespace, role)
    except PolicyError as exc:
        log.warning("%s ignored: %s", what, exc.message)
        return None
