"""`kubeflow` mode: what lets the gateway, and only it, reach the notebooks of every Kubeflow Profile's
namespace. Kubeflow's profile controller makes the namespace and admits its own ingress gateway;
the gateway adds the NetworkPolicy that admits only the gateway (and the namespace's own pods) to
notebook pods, and an Istio AuthorizationPolicy that admits the gateway's mTLS identity.

Kept in shape as `profiles.Provisioner` keeps the gateway's own profiles: made when a Profile (and
then its namespace) appears, put back when deleted or edited, and everything relisted every interval.
The loop owns only the two objects' `spec`; their labels and annotations are left to others.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging

from .errors import KubernetesError, KubernetesNotFound
from .kube.client import JsonObject, Kind, KubeClient, WatchEvent
from .kube.reconcile_loop import RECONCILE_INTERVAL_S, NotYet, reconcile_forever
from .kube.reflector import Reflector
from .profiles import (
    GATEWAY,
    KUBEFLOW_PROFILES,
    MANAGED_BY,
    NETWORK_POLICIES,
    NETWORK_POLICY_NAME,
    _created,
    _metadata,
    _owned_patch,
    network_policy,
)

log = logging.getLogger(__name__)

AUTHORIZATION_POLICIES = Kind("security.istio.io", "v1beta1", "authorizationpolicies")
AUTHORIZATION_POLICY_NAME = "notebook-gateway"
# The gateway's ServiceAccount (deploy/base/serviceaccount.yaml), whose mTLS identity Istio sees.
SERVICE_ACCOUNT = GATEWAY


def authorization_policy(gateway_namespace: str) -> JsonObject:
    """Istio ALLOW policies add up: workloads in the namespace also accept the gateway's identity.
    No selector (Istio's selects by exact labels, and notebook pods share no fixed one); the
    NetworkPolicy beside it keeps the gateway to the notebooks' port."""
    principal = f"cluster.local/ns/{gateway_namespace}/sa/{SERVICE_ACCOUNT}"
    return {
        "apiVersion": "security.istio.io/v1beta1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": AUTHORIZATION_POLICY_NAME, "labels": {MANAGED_BY: GATEWAY}},
        "spec": {"action": "ALLOW", "rules": [{"from": [{"source": {"principals": [principal]}}]}]},
    }


class ProfileAccess:
    """Reconciles the NetworkPolicy and AuthorizationPolicy of every Kubeflow Profile's namespace."""

    def __init__(self, client: KubeClient, *, gateway_namespace: str) -> None:
        self.client = client
        self.wanted = {
            NETWORK_POLICIES.plural: network_policy(gateway_namespace),
            AUTHORIZATION_POLICIES.plural: authorization_policy(gateway_namespace),
        }
        self.kinds = {
            NETWORK_POLICIES.plural: (NETWORK_POLICIES, NETWORK_POLICY_NAME),
            AUTHORIZATION_POLICIES.plural: (AUTHORIZATION_POLICIES, AUTHORIZATION_POLICY_NAME),
        }
        self.istio: bool | None = None  # whether the API serves AuthorizationPolicies: known after a pass
        self._wake = asyncio.Event()
        self._owned: dict[tuple[str, str], str] = {}  # (plural, namespace) -> its spec as last seen
        self.watches = [
            Reflector(client, KUBEFLOW_PROFILES, None, on_change=self._profile_changed),
            Reflector(client, NETWORK_POLICIES, None, field_selector=f"metadata.name={NETWORK_POLICY_NAME}"),
            Reflector(
                client, AUTHORIZATION_POLICIES, None, field_selector=f"metadata.name={AUTHORIZATION_POLICY_NAME}"
            ),
        ]
        for watch in self.watches[1:]:
            watch.on_change = functools.partial(self._changed, watch)

    async def reconcile_once(self) -> dict[str, list[str]]:
        """One pass over every Profile: create what is missing, restore an edited spec. Returns the
        `kind/name`s made or repaired per namespace; a namespace not made yet is left to the next pass
        (raises `NamespacePending` after the pass when there was one)."""
        profiles = await self.client.list(KUBEFLOW_PROFILES)
        names = sorted(str(_metadata(p).get("name", "")) for p in profiles.items if not _deleting(p))
        found = {NETWORK_POLICIES.plural: await self._by_namespace(NETWORK_POLICIES.plural)}
        if self.istio is not False:
            try:
                found[AUTHORIZATION_POLICIES.plural] = await self._by_namespace(AUTHORIZATION_POLICIES.plural)
                self.istio = True
            except KubernetesNotFound:  # no Istio CRDs: nothing to admit the gateway's identity to
                log.warning("the API serves no Istio AuthorizationPolicies; keeping only NetworkPolicies")
                self.istio = False
        repaired: dict[str, list[str]] = {}
        pending = []
        for namespace in (name for name in names if name):
            try:
                fixed = [kind for kind, objects in found.items() if await self._repair(kind, namespace, objects)]
            except KubernetesNotFound:  # the profile controller has not made the namespace yet
                pending.append(namespace)
                continue
            except KubernetesError as exc:  # e.g. a namespace being deleted: the others still get theirs
                log.warning("profile namespace %s: %s", namespace, exc.description)
                pending.append(namespace)
                continue
            if fixed:
                log.info("profile namespace %s: made or repaired %s", namespace, ", ".join(fixed))
                repaired[namespace] = fixed
        if pending:
            raise NamespacePending(pending)
        return repaired

    async def _by_namespace(self, plural: str) -> dict[str, JsonObject]:
        kind, name = self.kinds[plural]
        listed = await self.client.list(kind, None, field_selector=f"metadata.name={name}")
        return {str(_metadata(obj).get("namespace", "")): obj for obj in listed.items}

    async def _repair(self, plural: str, namespace: str, objects: dict[str, JsonObject]) -> bool:
        """Create the object, or restore its spec; True when it changed anything. (Each call names its
        kind: tests/test_deploy.py derives the RBAC rules from the calls the code makes.)"""
        wanted = self.wanted[plural]
        current = objects.get(namespace)
        patch = None if current is None else _owned_patch(current.get("spec"), wanted["spec"])
        if current is not None and patch is None:
            return False
        if plural == NETWORK_POLICIES.plural:
            if current is None:
                return await _created(self.client.create(NETWORK_POLICIES, namespace, wanted))
            await self.client.patch(NETWORK_POLICIES, namespace, NETWORK_POLICY_NAME, {"spec": patch})
        else:
            if current is None:
                return await _created(self.client.create(AUTHORIZATION_POLICIES, namespace, wanted))
            await self.client.patch(AUTHORIZATION_POLICIES, namespace, AUTHORIZATION_POLICY_NAME, {"spec": patch})
        return True

    async def reconcile(self, interval_s: float = RECONCILE_INTERVAL_S) -> None:
        """Pass at once when a Profile appears or changes, or one of the objects is deleted or its
        spec edited; relist every `interval_s` anyway, and sooner (a jittered backoff) after a failed
        pass or while a Profile's namespace is still being made. Until cancelled."""
        await reconcile_forever(
            "reconciling profile namespaces", self.reconcile_once, self._wake, self._watched, interval_s
        )

    def _watched(self) -> list[Reflector] | None:
        """Watch only what the API serves: known after the first pass."""
        if self.istio is None:
            return None
        return self.watches if self.istio else self.watches[:2]

    def _profile_changed(self, event: WatchEvent | None) -> None:
        if event is None or event.type != "DELETED":  # a (re)list, a new Profile, or its controller's progress
            self._wake.set()

    def _changed(self, watch: Reflector, event: WatchEvent | None) -> None:
        """Wake the loop for a deletion, or for an edit of a spec (not of labels or status)."""
        plural = watch.kind.plural
        if event is None:  # a (re)list: it may have missed a deletion since the last pass, so pass again
            for namespace, objects in watch.objects.items():
                for obj in objects.values():
                    self._owned[plural, namespace] = json.dumps(obj.get("spec"), sort_keys=True)
            self._wake.set()
            return
        key = (plural, str(_metadata(event.object).get("namespace", "")))
        spec = json.dumps(event.object.get("spec"), sort_keys=True)
        if event.type == "DELETED" or (key in self._owned and self._owned[key] != spec):
            self._wake.set()
        if event.type == "DELETED":
            self._owned.pop(key, None)
        else:
            self._owned[key] = spec


class NamespacePending(NotYet):
    """Profiles whose namespace does not exist yet (Kubeflow's profile controller makes it), or
    refused a write this pass."""

    def __init__(self, namespaces: list[str]) -> None:
        super().__init__(f"the namespace of profile(s) {', '.join(namespaces)}")


def _deleting(profile: JsonObject) -> bool:
    return bool(_metadata(profile).get("deletionTimestamp"))
