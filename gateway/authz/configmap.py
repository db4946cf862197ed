"""`ConfigMapPolicyStore`: the editable policy in a ConfigMap (the CSV in its `policy.csv` key), so
that every replica shares it without a shared volume. Its version is the ConfigMap's resourceVersion:
writes send it, and the API server's 409 on a stale one becomes our 412. A watch keeps a copy here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Literal

from ..config import Settings
from ..errors import KubernetesConflict, KubernetesError, KubernetesNotFound, PolicyTooLarge, PreconditionFailed
from ..kube.client import JsonObject, Kind, KubeClient
from ..kube.reflector import Reflector, stop, watch_health
from ..kube.watch_health import WatchHealth
from .rules import EMPTY, PolicyDoc, parse_policy
from .stores import Edit

log = logging.getLogger(__name__)

CONFIGMAPS = Kind("", "v1", "configmaps", "config_map")
DATA_KEY = "policy.csv"
DEFAULT_NAMESPACE = "kubeflow"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# The API server refuses a ConfigMap over 1 MiB (data, keys and metadata together); keep a margin.
MAX_POLICY_BYTES = 1024 * 1024 - 16 * 1024
# Writes without If-Match (a grant, a sign-in's profile) are retried on a fresh read after a 409.
CONFLICT_RETRIES = 5


class PolicyStoreUnavailable(OSError):
    """The API server did not answer or refused (an OSError, as for a file store that cannot be written:
    the API answers 503, a sign-in goes on without its profile, a reload tries again)."""


def own_namespace(path: Path = SERVICE_ACCOUNT_NAMESPACE) -> str:
    """The namespace this pod runs in (its service account says), else `kubeflow`."""
    with contextlib.suppress(OSError):
        namespace = path.read_text().strip()
        if namespace:
            return namespace
    return DEFAULT_NAMESPACE


class ConfigMapPolicyStore:
    """The policy in ConfigMap `namespace/name`, through the gateway's one `client` (opened before
    `open()`, closed after `close()`). `open()` reads it (creating it, with the header only, when there
    is none) and starts the watch; `close()` stops the watch."""

    kind: Literal["file", "configmap", "memory"] = "configmap"

    def __init__(self, client: KubeClient, name: str, namespace: str) -> None:
        self.client = client
        self.name, self.namespace = name, namespace
        self.location = f"{namespace}/{name}"
        self._reflector: Reflector | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # this process's writes, one at a time (other replicas: the 409)
        self._seen = ""  # the resourceVersion last loaded, written or reported by changed()
        self._doc = EMPTY

    @classmethod
    def from_settings(cls, settings: Settings, client: KubeClient) -> ConfigMapPolicyStore:
        """The ConfigMap GATEWAY_POLICY_CONFIGMAP in GATEWAY_POLICY_NAMESPACE (default: the pod's own)."""
        return cls(client, settings.policy_configmap, settings.policy_namespace or own_namespace())

    # -- lifecycle --------------------------------------------------------------------------------

    async def open(self) -> None:
        self._reflector = Reflector(
            self.client, CONFIGMAPS, self.namespace, field_selector=f"metadata.name={self.name}"
        )
        try:
            await self._reflector.sync()
        except KubernetesError as exc:
            await self.close()
            raise PolicyStoreUnavailable(f"listing ConfigMap {self.location} failed: {exc.description}") from None
        self._task = asyncio.create_task(self._reflector.run(), name="policy-configmap-watcher")

    async def close(self) -> None:
        await stop(self._task)
        self._task = None

    def watch_health(self) -> WatchHealth:
        return watch_health(f"the policy ConfigMap {self.location}", [self._reflector] if self._reflector else [])

    async def read(self) -> PolicyDoc | None:
        """The policy as the ConfigMap holds it now, or None when there is none: one read, for
        `policy check` (nothing is created or watched; `open()` is not needed)."""
        obj = await self._get()
        return None if obj is None else await self._parse(obj)

    # -- the PolicyStore protocol -----------------------------------------------------------------

    async def load(self) -> PolicyDoc:
        """The ConfigMap's policy, creating the ConfigMap when there is none yet."""
        obj = await self._get()
        if obj is None:
            obj = await self._create(EMPTY)
        if obj is None:  # another replica created it first
            obj = await self._get()
        if obj is None:
            raise PolicyStoreUnavailable(f"ConfigMap {self.location} was deleted while being created")
        return self._remember(obj, await self._parse(obj))

    async def update(self, edit: Edit, if_match: str | None = None) -> tuple[PolicyDoc, PolicyDoc]:
        async with self._lock:
            for _ in range(CONFLICT_RETRIES):
                obj = await self._get()
                before = EMPTY if obj is None else await self._parse(obj)
                if if_match is not None and if_match != before.version:
                    raise PreconditionFailed(
                        f"The policies are at version {before.version}, not {if_match}; reload them and try again."
                    )
                after = edit(before)
                if after.text == before.text:
                    return before, before
                if len(after.text.encode()) > MAX_POLICY_BYTES:
                    raise PolicyTooLarge(
                        f"The policies would take {len(after.text.encode())} bytes; a ConfigMap holds at most "
                        f"{MAX_POLICY_BYTES} here. Grant roles to groups rather than to many single users."
                    )
                written = await (self._create(after) if obj is None else self._write(obj, after))
                if written is not None:
                    return before, self._remember(written, after)
                if if_match is not None:  # someone wrote after we read: the caller's version is stale
                    raise PreconditionFailed(
                        "The policies changed while this change was being written; reload them and try again."
                    )
                log.info("policy ConfigMap %s changed under a write; retrying on the new version", self.location)
            raise PreconditionFailed("The policies keep changing under this write; try again.")

    async def changed(self) -> PolicyDoc | None:
        """From the watch's copy (no API call): the new policy when the ConfigMap moved on."""
        reflector = self._reflector
        if reflector is None:
            return None
        obj = reflector.objects.get(self.namespace, {}).get(self.name)
        version = _version(obj) if obj is not None else ""
        if not version or not _newer(version, self._seen):
            return None  # unchanged, deleted (the last policy stays), or an event older than our own write
        self._seen = version  # a malformed policy is reported once, not on every poll
        assert obj is not None
        return self._remember(obj, await self._parse(obj))

    # -- API calls --------------------------------------------------------------------------------

    async def _get(self) -> JsonObject | None:
        try:
            return await self.client.get(CONFIGMAPS, self.namespace, self.name)
        except KubernetesNotFound:
            return None
        except KubernetesError as exc:
            raise PolicyStoreUnavailable(f"reading ConfigMap {self.location} failed: {exc.description}") from None

    async def _create(self, doc: PolicyDoc) -> JsonObject | None:
        """The new ConfigMap, or None when one by that name appeared meanwhile (409 AlreadyExists)."""
        body: JsonObject = {
            "metadata": {"name": self.name, "labels": {"app.kubernetes.io/part-of": "notebook-gateway"}},
            "data": {DATA_KEY: doc.text},
        }
        try:
            created = await self.client.create(CONFIGMAPS, self.namespace, body)
        except KubernetesConflict:
            return None
        except KubernetesError as exc:
            raise PolicyStoreUnavailable(f"creating ConfigMap {self.location} failed: {exc.description}") from None
        log.info("created the policy ConfigMap %s", self.location)
        return created

    async def _write(self, current: JsonObject, doc: PolicyDoc) -> JsonObject | None:
        """`doc` into the ConfigMap as read, or None when it moved on since (409 Conflict)."""
        # A merge patch that names the resourceVersion is applied only to that version (as a PUT would be).
        patch: JsonObject = {"metadata": {"resourceVersion": _version(current)}, "data": {DATA_KEY: doc.text}}
        try:
            return await self.client.patch(CONFIGMAPS, self.namespace, self.name, patch)
        except (KubernetesNotFound, KubernetesConflict):  # deleted or changed meanwhile: both are "read again"
            return None
        except KubernetesError as exc:
            raise PolicyStoreUnavailable(f"writing ConfigMap {self.location} failed: {exc.description}") from None

    # -- helpers ----------------------------------------------------------------------------------

    async def _parse(self, obj: JsonObject) -> PolicyDoc:
        """The policy in `obj`, versioned by its resourceVersion (`PolicyError` when malformed)."""
        data = obj.get("data")
        text = data.get(DATA_KEY, "") if isinstance(data, dict) else ""
        content = text.encode() if isinstance(text, str) else b""
        if content == self._doc.text.encode():
            doc = self._doc  # 100k rules take a while to parse; the same text need not be parsed twice
        else:
            doc = await asyncio.to_thread(parse_policy, content)
        return dataclasses.replace(doc, version=_version(obj))

    def _remember(self, obj: JsonObject, doc: PolicyDoc) -> PolicyDoc:
        doc = dataclasses.replace(doc, version=_version(obj))
        if _newer(doc.version, self._seen):
            self._seen = doc.version
        self._doc = doc
        return doc


def _version(obj: JsonObject) -> str:
    metadata = obj.get("metadata")
    version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
    return version if isinstance(version, str) else ""


def _newer(version: str, seen: str) -> bool:
    """Whether `version` is not the one last seen, nor older. resourceVersions are opaque, but every
    API server issues them from etcd's increasing revision; comparing them keeps a watch event that
    arrives after our own write from installing the policy that write replaced."""
    if version == seen:
        return False
    if version.isdigit() and seen.isdigit():
        return int(version) > int(seen)
    return True
