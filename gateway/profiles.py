"""Profiles without Kubeflow: a namespace per team with its service accounts, RoleBindings, quota and
NetworkPolicy (`gateway` mode, kept in shape by a reconcile loop), or a Kubeflow Profile that
Kubeflow's profile controller fills in (`kubeflow` mode).

The loop owns only what it sets: a RoleBinding's roleRef and subjects, the NetworkPolicy's spec, the
quota's hard limits (as recorded on the namespace) and that the service accounts exist. Labels and
annotations that others add, and every other field, are left as they are.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from .authz.rules import PolicyError, make_rule, normalise_subject
from .body_models import Model, parse_body
from .errors import BadRequest, Conflict, KubernetesConflict, KubernetesNotFound, NotFound
from .kube.client import JsonObject, Kind, KubeClient, WatchEvent
from .kube.kubeflow_names import EDITOR_ACCOUNT, NOTEBOOK_NAME_LABEL, PROFILE_OWNER_FIELD, VIEWER_ACCOUNT
from .kube.reconcile_loop import RECONCILE_INTERVAL_S, reconcile_forever
from .kube.reflector import Reflector
from .names import is_dns_label
from .pod_security import LIMIT_RANGE_NAME, PodSecurityLevel, limit_range_spec, namespace_labels
from .quantities import parse_quantity

log = logging.getLogger(__name__)

NAMESPACES = Kind("", "v1", "namespaces", "namespace", namespaced=False)
KUBEFLOW_PROFILES = Kind("kubeflow.org", "v1", "profiles", namespaced=False)
SERVICE_ACCOUNTS = Kind("", "v1", "serviceaccounts", "service_account")
RESOURCE_QUOTAS = Kind("", "v1", "resourcequotas", "resource_quota")
PROFILE_ROLEBINDINGS = Kind("rbac.authorization.k8s.io", "v1", "rolebindings")
NETWORK_POLICIES = Kind("networking.k8s.io", "v1", "networkpolicies")
LIMIT_RANGES = Kind("", "v1", "limitranges", "limit_range")

Mode = Literal["gateway", "kubeflow"]
MANAGED_BY = "app.kubernetes.io/managed-by"
GATEWAY = "notebook-gateway"
OWNER_ANNOTATION = "notebook-gateway.kubeflow.org/owner"
# On the namespace: the profile's quota (the ResourceQuota's spec.hard) as JSON, which the loop restores.
QUOTA_ANNOTATION = "notebook-gateway.kubeflow.org/quota"
# On the namespace: whether its service accounts' tokens are mounted into pods ("true"/"false").
TOKEN_ANNOTATION = "notebook-gateway.kubeflow.org/mount-service-account-token"
QUOTA_NAME = "notebook-quota"
NETWORK_POLICY_NAME = "notebook-ingress"
NOTEBOOK_PORT = 8888  # what Kubeflow's notebook images listen on
# ServiceAccount -> the ClusterRole (deploy/base/notebook-roles.yaml) its RoleBinding grants.
ACCOUNTS = {EDITOR_ACCOUNT: "notebook-editor", VIEWER_ACCOUNT: "notebook-viewer"}
# The quota keys a profile takes -> the ResourceQuota's `spec.hard` key. GPUs are added per configured
# vendor by `quota_keys`: an extended resource such as a GPU can only be limited as a request (its limit
# always equals its request), so `amd.com/gpu` becomes `requests.amd.com/gpu`.
QUOTA_KEYS = {
    "cpu": "cpu",
    "memory": "memory",
    "limits.cpu": "limits.cpu",
    "limits.memory": "limits.memory",
    "persistentvolumeclaims": "persistentvolumeclaims",
    "requests.storage": "requests.storage",
}
DEFAULT_GPU_VENDORS = ("nvidia.com/gpu",)
# A quota on requests alone lets one notebook ask for a 512-CPU limit: each bounded request also bounds
# the limits, at the same amount unless the profile says otherwise.
LIMIT_OF_REQUEST = {"cpu": "limits.cpu", "memory": "limits.memory"}


@dataclass(frozen=True, slots=True)
class Profile:
    """A validated request: `owner` is a policy subject (`user:<name>`), `quota` ResourceQuota keys."""

    name: str
    owner: str
    quota: Mapping[str, str] = field(default_factory=dict)
    # Whether pods of the profile's service accounts get their API token by default. Off unless asked
    # for: a notebook that never calls the Kubernetes API should not hold default-editor's token.
    # Kubeflow's profile controller always mounts it (None: not said; Kubeflow mode reads as True).
    mount_token: bool | None = None

    @property
    def owner_name(self) -> str:
        return self.owner.removeprefix("user:")


def quota_keys(gpu_vendors: Iterable[str] = DEFAULT_GPU_VENDORS) -> dict[str, str]:
    """The quota keys a profile takes -> their `spec.hard` keys: the fixed ones, and one per GPU vendor
    of the spawner config (its `limitsKey`), so a quota exists for every GPU the form offers."""
    return {**QUOTA_KEYS, **{vendor: f"requests.{vendor}" for vendor in gpu_vendors}}


def _profile_name(value: str) -> str:
    if not is_dns_label(value):
        raise ValueError("must be a DNS-1123 label (lower-case letters, digits and '-', at most 63)")
    return value


def _owner(value: str) -> str:
    if not (value.startswith("user:") and len(value) > 5 or "@" in value):
        raise ValueError("must be a user: user:<name> or an email address")
    return value


def _number_as_text(value: object) -> object:
    """A quota may be a number (`4`) as well as a quantity's text (`"4"`, `"500m"`)."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _non_negative_quantity(value: str) -> str:
    try:
        number = parse_quantity(value)
    except ValueError:
        number = Decimal(-1)
    if number < 0:
        raise ValueError("must be a quantity such as 4, 500m or 10Gi")
    return value


QuotaAmount = Annotated[str, BeforeValidator(_number_as_text), AfterValidator(_non_negative_quantity)]


class NewProfile(Model):
    """A profile to create: a namespace, its owner (made its admin) and its quota."""

    name: Annotated[str, AfterValidator(_profile_name)] = Field(description="The namespace: a DNS-1123 label.")
    owner: Annotated[str, AfterValidator(_owner)] = Field(description="`user:<name>` or an email address.")
    quota: dict[str, QuotaAmount] | None = Field(
        None,
        description="ResourceQuota hard limits by key: cpu, memory, limits.cpu, limits.memory, "
        "persistentvolumeclaims, requests.storage and each configured GPU vendor's `limitsKey`.",
    )
    mountServiceAccountToken: bool | None = Field(
        None, description="Mount the profile's service account tokens into pods (default: no)."
    )


def parse_profile(body: object, *, gpu_vendors: Iterable[str] = DEFAULT_GPU_VENDORS) -> Profile:
    """A `NewProfile` body -> a `Profile`, or `BadRequest` naming the field. `gpu_vendors`: the GPU
    resources (limitsKey) a quota may name, those the spawner config offers."""
    keys = quota_keys(gpu_vendors)
    asked = parse_body(NewProfile, body)
    owner = asked.owner
    subject = normalise_subject(owner if owner.startswith("user:") else f"user:{owner}")
    try:
        make_rule(subject, asked.name, "admin")  # the owner's rule must be one the policy store takes
    except PolicyError as exc:
        raise BadRequest(f"owner: {exc.message}.", field="owner") from None
    hard: dict[str, str] = {}
    for key, value in (asked.quota or {}).items():
        if key not in keys:
            raise BadRequest(f"quota.{key} is not a quota key: use {', '.join(keys)}.", field=f"quota.{key}")
        hard[keys[key]] = value
    for request, limit in LIMIT_OF_REQUEST.items():
        if request in hard:
            hard.setdefault(limit, hard[request])
    return Profile(asked.name, subject, hard, asked.mountServiceAccountToken)


class Provisioner:
    """Creates, repairs and deletes profiles through `client`. Every create is idempotent: an object
    already there is left as it is; the reconcile loop puts back what is missing or changed."""

    def __init__(
        self, client: KubeClient, *, mode: Mode, gateway_namespace: str, pod_security: PodSecurityLevel = "baseline"
    ) -> None:
        self.client, self.mode, self.gateway_namespace = client, mode, gateway_namespace
        self.pod_security = pod_security  # the Pod Security Admission level enforced in new namespaces
        self._wake = asyncio.Event()  # set when a watched object is deleted or edited: reconcile now
        # Watches (by name, in every namespace) of the objects that drift: a deletion, or a change to
        # a field the loop owns, wakes it.
        self.watches = [
            Reflector(client, kind, None, field_selector=f"metadata.name={name}")
            for kind, name in (
                (SERVICE_ACCOUNTS, EDITOR_ACCOUNT),
                (SERVICE_ACCOUNTS, VIEWER_ACCOUNT),
                (PROFILE_ROLEBINDINGS, EDITOR_ACCOUNT),
                (PROFILE_ROLEBINDINGS, VIEWER_ACCOUNT),
                (NETWORK_POLICIES, NETWORK_POLICY_NAME),
                (RESOURCE_QUOTAS, QUOTA_NAME),
                (LIMIT_RANGES, LIMIT_RANGE_NAME),
            )
        ]
        self._owned: dict[tuple[str, str, str], object] = {}  # (plural, namespace, name) -> owned fields seen
        for watch in self.watches:
            watch.on_change = functools.partial(self._changed, watch)

    async def create(self, profile: Profile) -> None:
        """Raises `Conflict` when the namespace (or Profile) exists and is not this profile."""
        if self.mode == "kubeflow":
            await self._create_kubeflow(profile)
        else:
            await self._claim_namespace(profile)
            await self.ensure(profile.name, profile.quota, mount_token=bool(profile.mount_token))

    async def claimed(self, name: str, owner_name: str) -> str | None:
        """Why `owner_name` may not take namespace `name` as a new profile (it exists, or a Kubeflow
        Profile names it, and neither is already theirs), or None when they may. Self-service asks
        this before it grants anything."""
        # The client raises the gateway's own errors (503 when the API cannot be reached): nothing is granted then.
        profile = await _found(self.client.get(KUBEFLOW_PROFILES, "", name)) if self.mode == "kubeflow" else None
        if profile is not None:
            return None if _from_kubeflow(profile).owner_name == owner_name else f"Kubeflow Profile {name} exists"
        namespace = await _found(self.client.get(NAMESPACES, "", name))
        if namespace is None:
            return None
        annotations = _metadata(namespace).get("annotations")
        owner = annotations.get(OWNER_ANNOTATION) if isinstance(annotations, dict) else None
        if _labels(namespace).get(MANAGED_BY) == GATEWAY and owner == owner_name:
            return None  # their own profile, made before (its rule since removed): theirs again
        return f"namespace {name} exists"

    async def delete(self, name: str) -> None:
        """Deleting the namespace deletes everything in it (notebooks, volumes, jobs)."""
        if self.mode == "kubeflow":
            await self.client.delete(KUBEFLOW_PROFILES, "", name)
            return
        namespace = await _found(self.client.get(NAMESPACES, "", name))
        if namespace is None:
            raise NotFound(f"There is no profile {name}.")
        if _labels(namespace).get(MANAGED_BY) != GATEWAY:
            raise Conflict(f"Namespace {name} is not a profile made by the gateway; it was left alone.")
        if _metadata(namespace).get("deletionTimestamp"):
            return  # Terminating already (the API server would answer a second delete with 409)
        await self.client.delete(NAMESPACES, "", name)

    async def list_profiles(self) -> list[Profile]:
        """The profiles the gateway manages: its labelled namespaces with their owner and quota, or in
        `kubeflow` mode every Profile object; sorted by name."""
        if self.mode == "kubeflow":
            found = await self.client.list(KUBEFLOW_PROFILES)
            profiles = [_from_kubeflow(obj) for obj in found.items]
        else:
            namespaces = await self.client.list(NAMESPACES, label_selector=f"{MANAGED_BY}={GATEWAY}")
            # One list of every profile's quota rather than a get per namespace.
            quotas = await self.client.list(RESOURCE_QUOTAS, None, field_selector=f"metadata.name={QUOTA_NAME}")
            hard = {str(_metadata(q).get("namespace", "")): _hard(q.get("spec")) for q in quotas.items}
            profiles = [_from_namespace(obj, hard) for obj in namespaces.items]
        return sorted((p for p in profiles if p.name), key=lambda p: p.name)

    async def ensure(
        self, namespace: str, quota: Mapping[str, str] | None = None, *, mount_token: bool = False
    ) -> list[str]:
        """Create whatever of the profile's objects is missing; returns their `kind/name`s."""
        made = []
        for account in ACCOUNTS:
            if await _created(self.client.create(SERVICE_ACCOUNTS, namespace, self._account(account, mount_token))):
                made.append(f"serviceaccount/{account}")
        made += await self._ensure_drifting(namespace)
        if quota:
            body = {"metadata": self._meta(QUOTA_NAME), "spec": {"hard": dict(quota)}}
            if await _created(self.client.create(RESOURCE_QUOTAS, namespace, body)):
                made.append(f"resourcequota/{QUOTA_NAME}")
        return made

    async def reconcile_once(self) -> dict[str, list[str]]:
        """Put every gateway-managed namespace's objects back as the gateway made them: re-create what
        is missing, and restore the owned fields of what was edited. Returns the `kind/name`s repaired."""
        selector = f"{MANAGED_BY}={GATEWAY}"
        namespaces = await self.client.list(NAMESPACES, label_selector=selector)
        # One list per kind and name for all namespaces, rather than a get per object.
        found = {
            (kind.plural, name): await self._by_namespace(kind, name)
            for kind, name in (
                (SERVICE_ACCOUNTS, EDITOR_ACCOUNT),
                (SERVICE_ACCOUNTS, VIEWER_ACCOUNT),
                (PROFILE_ROLEBINDINGS, EDITOR_ACCOUNT),
                (PROFILE_ROLEBINDINGS, VIEWER_ACCOUNT),
                (NETWORK_POLICIES, NETWORK_POLICY_NAME),
                (RESOURCE_QUOTAS, QUOTA_NAME),
                (LIMIT_RANGES, LIMIT_RANGE_NAME),
            )
        }
        repaired = {}
        for namespace in namespaces.items:
            name = str(_metadata(namespace).get("name", ""))
            if name and not _metadata(namespace).get("deletionTimestamp"):
                current = {key: objects.get(name) for key, objects in found.items()}
                fixed = await self._repair(name, _recorded_quota(namespace), current, _mounts_token(namespace))
                if fixed:
                    log.warning("profile %s had drifted; repaired %s", name, ", ".join(fixed))
                    repaired[name] = fixed
        return repaired

    async def _by_namespace(self, kind: Kind, name: str) -> dict[str, JsonObject]:
        found = await self.client.list(kind, None, field_selector=f"metadata.name={name}")
        return {str(_metadata(obj).get("namespace", "")): obj for obj in found.items}

    async def _repair(
        self,
        namespace: str,
        quota: dict[str, str] | None,
        current: Mapping[tuple[str, str], JsonObject | None],
        mount_token: bool = False,
    ) -> list[str]:
        """One namespace: each object as `current` shows it (None: missing) brought back to what it should be."""
        fixed = []
        for account in ACCOUNTS:
            if current[SERVICE_ACCOUNTS.plural, account] is None:
                account_body = self._account(account, mount_token)
                if await _created(self.client.create(SERVICE_ACCOUNTS, namespace, account_body)):
                    fixed.append(f"serviceaccount/{account}")
        for account in ACCOUNTS:
            binding = current[PROFILE_ROLEBINDINGS.plural, account]
            if await self._repair_binding(namespace, account, binding):
                fixed.append(f"rolebinding/{account}")
        policy = current[NETWORK_POLICIES.plural, NETWORK_POLICY_NAME]
        wanted = self._network_policy()
        if policy is None:
            if await _created(self.client.create(NETWORK_POLICIES, namespace, wanted)):
                fixed.append(f"networkpolicy/{NETWORK_POLICY_NAME}")
        elif (patch := _owned_patch(policy.get("spec"), wanted["spec"])) is not None:
            await self.client.patch(NETWORK_POLICIES, namespace, NETWORK_POLICY_NAME, {"spec": patch})
            fixed.append(f"networkpolicy/{NETWORK_POLICY_NAME}")
        limits = current[LIMIT_RANGES.plural, LIMIT_RANGE_NAME]
        wanted_limits = self._limit_range()
        if limits is None:
            if await _created(self.client.create(LIMIT_RANGES, namespace, wanted_limits)):
                fixed.append(f"limitrange/{LIMIT_RANGE_NAME}")
        elif (patch := _owned_patch(limits.get("spec"), wanted_limits["spec"])) is not None:
            await self.client.patch(LIMIT_RANGES, namespace, LIMIT_RANGE_NAME, {"spec": patch})
            fixed.append(f"limitrange/{LIMIT_RANGE_NAME}")
        quota_object = current[RESOURCE_QUOTAS.plural, QUOTA_NAME]
        if quota is not None:  # only a profile that recorded its quota has one to restore
            if quota_object is None:
                quota_body: JsonObject = {"metadata": self._meta(QUOTA_NAME), "spec": {"hard": dict(quota)}}
                if await _created(self.client.create(RESOURCE_QUOTAS, namespace, quota_body)):
                    fixed.append(f"resourcequota/{QUOTA_NAME}")
            elif (hard := _hard_patch(quota_object, quota)) is not None:
                await self.client.patch(RESOURCE_QUOTAS, namespace, QUOTA_NAME, {"spec": {"hard": hard}})
                fixed.append(f"resourcequota/{QUOTA_NAME}")
        return fixed

    async def _repair_binding(self, namespace: str, account: str, binding: JsonObject | None) -> bool:
        """Create a missing RoleBinding, or restore its subjects (a patch) or roleRef (immutable: delete
        and create again, keeping the labels and annotations it carried). True when it changed anything."""
        wanted = self._binding(namespace, account)
        if binding is None:
            return await _created(self.client.create(PROFILE_ROLEBINDINGS, namespace, wanted))
        if binding.get("roleRef") != wanted["roleRef"]:
            metadata = _metadata(binding)
            labels = {**_labels(binding), MANAGED_BY: GATEWAY}
            annotations = metadata.get("annotations")
            meta: JsonObject = {"name": account, "labels": labels}
            if isinstance(annotations, dict) and annotations:
                meta["annotations"] = annotations
            # Only the binding as listed: one made since (say by another replica) is left to the next pass.
            uid = metadata.get("uid")
            listed = uid if isinstance(uid, str) and uid else None
            if not await _deleted(self.client.delete(PROFILE_ROLEBINDINGS, namespace, account, uid=listed)):
                return False
            await _created(self.client.create(PROFILE_ROLEBINDINGS, namespace, {**wanted, "metadata": meta}))
            return True
        if binding.get("subjects") != wanted["subjects"]:
            patch: JsonObject = {"subjects": wanted["subjects"]}  # a merge patch replaces the list whole
            await self.client.patch(PROFILE_ROLEBINDINGS, namespace, account, patch)
            return True
        return False

    async def reconcile(self, interval_s: float = RECONCILE_INTERVAL_S) -> None:
        """Repair at once when a watch sees a profile object deleted or one of its owned fields edited,
        and relist every `interval_s` anyway (a watch can miss a change while it reconnects); after a
        failed pass, sooner (a jittered backoff up to `interval_s`). Until cancelled."""
        await reconcile_forever(
            "reconciling profiles", self.reconcile_once, self._wake, lambda: self.watches, interval_s
        )

    def _changed(self, watch: Reflector, event: WatchEvent | None) -> None:
        """Wake the loop for a deletion, or for an edit of what it owns (not for a quota's status)."""
        plural = watch.kind.plural
        if event is None:  # a (re)list: remember what each object's owned fields are now
            for namespace, objects in watch.objects.items():
                for name, obj in objects.items():
                    self._owned[plural, namespace, name] = _owned_fields(plural, obj)
            return
        metadata = _metadata(event.object)
        key = (plural, str(metadata.get("namespace", "")), str(metadata.get("name", "")))
        if event.type == "DELETED":
            self._owned.pop(key, None)
            self._wake.set()
            return
        owned = _owned_fields(plural, event.object)
        if event.type == "MODIFIED" and key in self._owned and self._owned[key] != owned:
            self._wake.set()
        self._owned[key] = owned

    # -- parts ------------------------------------------------------------------------------------

    async def _create_kubeflow(self, profile: Profile) -> None:
        if profile.mount_token is False:
            raise BadRequest(
                "Kubeflow's profile controller always mounts the service account token; "
                "mountServiceAccountToken cannot be false with GATEWAY_PROFILES=kubeflow.",
                field="mountServiceAccountToken",
            )
        existing = await _found(self.client.get(KUBEFLOW_PROFILES, "", profile.name))
        if existing is not None:
            spec = existing.get("spec")
            owner = spec.get(PROFILE_OWNER_FIELD) if isinstance(spec, dict) else None
            if isinstance(owner, dict) and owner.get("name") == profile.owner_name:
                return  # the same profile again
            raise Conflict(f"Kubeflow Profile {profile.name} exists with another owner.")
        wanted: JsonObject = {PROFILE_OWNER_FIELD: {"kind": "User", "name": profile.owner_name}}
        if profile.quota:
            wanted["resourceQuotaSpec"] = {"hard": dict(profile.quota)}
        body: JsonObject = {"apiVersion": "kubeflow.org/v1", "kind": "Profile", "metadata": {"name": profile.name}}
        await self.client.create(KUBEFLOW_PROFILES, "", {**body, "spec": wanted})

    async def _claim_namespace(self, profile: Profile) -> None:
        existing = await _found(self.client.get(NAMESPACES, "", profile.name))
        if existing is None:
            recorded = {OWNER_ANNOTATION: profile.owner_name}
            if profile.quota:  # what the reconcile loop restores the quota to
                recorded[QUOTA_ANNOTATION] = json.dumps(dict(profile.quota), sort_keys=True)
            recorded[TOKEN_ANNOTATION] = "true" if profile.mount_token else "false"
            meta = self._meta(profile.name)
            meta["labels"] = {**namespace_labels(self.pod_security), MANAGED_BY: GATEWAY}
            meta["annotations"] = recorded
            await self.client.create(NAMESPACES, "", {"metadata": meta})
            return
        annotations = _metadata(existing).get("annotations")
        owner = annotations.get(OWNER_ANNOTATION) if isinstance(annotations, dict) else None
        if _labels(existing).get(MANAGED_BY) != GATEWAY:
            raise Conflict(f"Namespace {profile.name} already exists and was not made by the gateway.")
        if _metadata(existing).get("deletionTimestamp"):  # nothing can be created in it until it is gone
            raise Conflict(f"Profile {profile.name} is still being deleted; create it again once it is gone.")
        if owner != profile.owner_name:
            raise Conflict(f"Profile {profile.name} already exists, owned by {owner}.")

    async def _ensure_drifting(self, namespace: str) -> list[str]:
        """The objects a namespace's users could delete by accident: the RoleBindings, the NetworkPolicy
        and the LimitRange."""
        made = []
        for account in ACCOUNTS:
            if await _created(self.client.create(PROFILE_ROLEBINDINGS, namespace, self._binding(namespace, account))):
                made.append(f"rolebinding/{account}")
        if await _created(self.client.create(NETWORK_POLICIES, namespace, self._network_policy())):
            made.append(f"networkpolicy/{NETWORK_POLICY_NAME}")
        if await _created(self.client.create(LIMIT_RANGES, namespace, self._limit_range())):
            made.append(f"limitrange/{LIMIT_RANGE_NAME}")
        return made

    def _account(self, name: str, mount_token: bool) -> JsonObject:
        """A profile's service account; pods that do not say otherwise get its token only if `mount_token`."""
        return {"metadata": self._meta(name), "automountServiceAccountToken": mount_token}

    def _limit_range(self) -> JsonObject:
        return {"metadata": self._meta(LIMIT_RANGE_NAME), "spec": limit_range_spec()}

    def _binding(self, namespace: str, account: str) -> JsonObject:
        """The RoleBinding giving `account` its ClusterRole (deploy/base/notebook-roles.yaml) in `namespace`."""
        return {
            "metadata": self._meta(account),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ACCOUNTS[account]},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        }

    def _network_policy(self) -> JsonObject:
        return network_policy(self.gateway_namespace)

    @staticmethod
    def _meta(name: str) -> dict[str, object]:
        return {"name": name, "labels": {MANAGED_BY: GATEWAY}}


def network_policy(gateway_namespace: str) -> JsonObject:
    """Notebook pods accept traffic only from the gateway's pods (on Jupyter's port) and from pods in
    their own namespace; other pods (a job's) are not restricted here. Also what `profile_access`
    keeps in every Kubeflow Profile namespace."""
    gateway = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": gateway_namespace}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": GATEWAY}},
    }
    return {
        "metadata": {"name": NETWORK_POLICY_NAME, "labels": {MANAGED_BY: GATEWAY}},
        "spec": {
            "podSelector": {"matchExpressions": [{"key": NOTEBOOK_NAME_LABEL, "operator": "Exists"}]},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [gateway], "ports": [{"protocol": "TCP", "port": NOTEBOOK_PORT}]},
                {"from": [{"podSelector": {}}]},
            ],
        },
    }


async def _created(call: Awaitable[JsonObject]) -> bool:
    """Await a create; True when it made the object, False when it was already there (409)."""
    try:
        await call
    except KubernetesConflict:
        return False
    return True


async def _deleted(call: Awaitable[None]) -> bool:
    """Await a delete; True when it is gone (404 too), False when it was replaced meanwhile (409)."""
    try:
        await call
    except KubernetesConflict:
        return False
    except KubernetesNotFound:
        pass
    return True


def _mounts_token(namespace: JsonObject) -> bool:
    """Whether the profile asked for its service accounts' tokens to be mounted (its namespace's annotation)."""
    annotations = _metadata(namespace).get("annotations")
    return isinstance(annotations, dict) and annotations.get(TOKEN_ANNOTATION) == "true"


def _recorded_quota(namespace: JsonObject) -> dict[str, str] | None:
    """The quota a profile was made with (its namespace's annotation); None for one made without."""
    annotations = _metadata(namespace).get("annotations")
    text = annotations.get(QUOTA_ANNOTATION) if isinstance(annotations, dict) else None
    if not isinstance(text, str):
        return None
    try:
        quota = json.loads(text)
    except ValueError:
        quota = None
    if not isinstance(quota, dict) or not all(isinstance(v, str) for v in quota.values()):
        log.warning(
            "namespace %s: annotation %s is not a JSON object of quantities; its quota is left alone",
            _metadata(namespace).get("name"),
            QUOTA_ANNOTATION,
        )
        return None
    return {str(key): value for key, value in quota.items()}


def _owned_fields(plural: str, obj: JsonObject) -> object:
    """What the loop owns in a watched object (a change to anything else does not wake it)."""
    if plural == PROFILE_ROLEBINDINGS.plural:
        return json.dumps([obj.get("roleRef"), obj.get("subjects")], sort_keys=True)
    if plural in (NETWORK_POLICIES.plural, LIMIT_RANGES.plural):
        return json.dumps(obj.get("spec"), sort_keys=True)
    if plural == RESOURCE_QUOTAS.plural:
        return json.dumps(_hard(obj.get("spec")), sort_keys=True)
    return None  # a service account: only its deletion matters


def _owned_patch(current: object, wanted: object) -> JsonObject | None:
    """The merge patch (RFC 7386) turning the object `current` into `wanted` exactly: keys it has
    beyond them set to null at every depth, lists replaced whole; None when they are equal already."""
    have = current if isinstance(current, dict) else {}
    if not isinstance(wanted, dict) or have == wanted:
        return None
    patch: JsonObject = dict.fromkeys(set(have) - set(wanted))
    for key, value in wanted.items():
        if key not in have or have[key] != value:
            nested = _owned_patch(have[key], value) if isinstance(have.get(key), dict) else None
            patch[key] = nested if nested is not None and isinstance(value, dict) else value
    return patch


def _hard_patch(quota: JsonObject, wanted: Mapping[str, str]) -> dict[str, str | None] | None:
    """The patch of `spec.hard` restoring `wanted` (keys someone added removed), or None when the
    limits are the same; `1` and `1000m` are the same (the API server rewrites quantities)."""
    spec = quota.get("spec")
    have = spec.get("hard") if isinstance(spec, dict) else None
    have = have if isinstance(have, dict) else {}
    if set(have) == set(wanted) and all(_same_quantity(str(have[key]), value) for key, value in wanted.items()):
        return None
    return {**dict.fromkeys(set(have) - set(wanted)), **wanted}


def _same_quantity(a: str, b: str) -> bool:
    try:
        return parse_quantity(a) == parse_quantity(b)
    except ValueError:
        return a == b


async def _found(call: Awaitable[JsonObject]) -> JsonObject | None:
    """Await a get; None for a 404."""
    try:
        return await call
    except KubernetesNotFound:
        return None


def _metadata(obj: JsonObject) -> dict[str, object]:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _labels(obj: JsonObject) -> dict[str, object]:
    labels = _metadata(obj).get("labels")
    return labels if isinstance(labels, dict) else {}


def _hard(spec: object) -> dict[str, str]:
    """A ResourceQuota spec's `hard`, with its keys as a profile's quota names them (the POST body's keys)."""
    hard = spec.get("hard") if isinstance(spec, dict) else None
    if not isinstance(hard, dict):
        return {}
    return {_quota_name(str(key)): str(value) for key, value in hard.items()}


def _quota_name(hard_key: str) -> str:
    """A `spec.hard` key as a profile's quota names it: `requests.amd.com/gpu` -> `amd.com/gpu` (any
    extended resource, so a GPU quota set by hand for a vendor no longer configured still shows)."""
    names = {hard: key for key, hard in QUOTA_KEYS.items()}
    if hard_key in names:
        return names[hard_key]
    resource = hard_key.removeprefix("requests.")
    return resource if resource != hard_key and "/" in resource else hard_key


def _from_namespace(namespace: JsonObject, quotas: Mapping[str, dict[str, str]]) -> Profile:
    name = str(_metadata(namespace).get("name", ""))
    annotations = _metadata(namespace).get("annotations")
    owner = annotations.get(OWNER_ANNOTATION) if isinstance(annotations, dict) else None
    return Profile(name, f"user:{owner}" if owner else "", quotas.get(name, {}), _mounts_token(namespace))


def _from_kubeflow(profile: JsonObject) -> Profile:
    spec = profile.get("spec")
    owner = spec.get(PROFILE_OWNER_FIELD) if isinstance(spec, dict) else None
    owner_name = owner.get("name") if isinstance(owner, dict) else None
    quota = spec.get("resourceQuotaSpec") if isinstance(spec, dict) else None
    name = str(_metadata(profile).get("name", ""))
    return Profile(name, f"user:{owner_name}" if owner_name else "", _hard(quota), True)  # Kubeflow mounts it


def describe(profile: Profile) -> dict[str, object]:
    return {
        "name": profile.name,
        "owner": profile.owner,
        "quota": {_quota_name(key): value for key, value in profile.quota.items()},  # as the POST names them
        "mountServiceAccountToken": bool(profile.mount_token),
    }
