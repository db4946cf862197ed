"""`KubeClient`: the one module that touches `kubernetes_asyncio` (untyped), so its `Any` stops here.

Objects travel as plain JSON dicts, exactly as the API server sent them. Failures become the gateway's
own `KubernetesError`s here, in `api_error()`, so nothing beyond this module sees the library's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from ..errors import (
    KubernetesConflict,
    KubernetesError,
    KubernetesForbidden,
    KubernetesGone,
    KubernetesInvalid,
    KubernetesNotFound,
    KubernetesUnavailable,
)

log = logging.getLogger(__name__)


def _library() -> tuple[Any, Any]:
    """`kubernetes_asyncio` and its `config`, imported on first use: the library's generated models cost about
    30 MiB and a second of start-up, which a gateway with the static or local backend and file policies never needs
    (those import this module only for its types)."""
    import kubernetes_asyncio.client
    import kubernetes_asyncio.config
    import kubernetes_asyncio.watch

    return kubernetes_asyncio, kubernetes_asyncio.config


JsonObject = dict[str, object]

CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 30.0
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True, slots=True)
class Kind:
    """A resource type: its API group ("" for core), version and plural; `core_name` names the
    generated client's methods for a core type (`list_namespaced_<core_name>`)."""

    group: str
    version: str
    plural: str
    core_name: str = ""
    namespaced: bool = True  # False for Namespaces, Profiles, ClusterRoles: called with namespace ""


NOTEBOOKS = Kind("kubeflow.org", "v1", "notebooks")
PODDEFAULTS = Kind("kubeflow.org", "v1alpha1", "poddefaults")
PVCS = Kind("", "v1", "persistentvolumeclaims", "persistent_volume_claim")
EVENTS = Kind("", "v1", "events", "event")
# A pod's log (`pods/log`, GET): read only with `read_log`, which bounds it. The gateway never reads pods themselves.
POD_LOGS = Kind("", "v1", "pods/log", "pod_log")


@dataclass(frozen=True, slots=True)
class ObjectList:
    items: list[JsonObject]
    resource_version: str  # where a watch continues from


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED or BOOKMARK (ERROR arrives as a KubernetesError)
    object: JsonObject

    @property
    def resource_version(self) -> str | None:
        metadata = self.object.get("metadata")
        version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
        return version if isinstance(version, str) and version else None


def api_error(status: int, reason: str, message: str) -> KubernetesError:
    """The gateway's error for an API server's answer (`status` 0: none came). The client-facing
    message says only what a user can act on; the server's own words stay in `detail` for the log,
    but for a refused object (400/422), whose message names the field at fault."""
    error: type[KubernetesError] = KubernetesError
    shown: str | None = None  # the class's default message
    if status == 0 or status == 429 or status >= 500:  # none, or overloaded or failing: try again later
        error = KubernetesUnavailable
    elif status in (401, 403):
        log.error("the Kubernetes API refused the gateway (%s %s: %s): check its RBAC", status, reason, message)
        error = KubernetesForbidden
    elif status == 404:
        error, shown = KubernetesNotFound, f"Not found: {message}" if message else None
    elif status == 409:
        error = KubernetesConflict
    elif status == 410:
        error = KubernetesGone
    elif status in (400, 422):
        error, shown = KubernetesInvalid, message or None
    else:
        log.error("unexpected answer from the Kubernetes API: %s %s: %s", status, reason, message)
        shown = f"The Kubernetes API answered {status} {reason}."
    return error(shown, api_status=status, reason=reason, detail=message)


def error_from_body(status: int, body: bytes | str) -> KubernetesError:
    """From a response's `Status` body, or whatever else came (a proxy's HTML page)."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("kind") == "Status":
        return api_error(status, str(data.get("reason") or ""), str(data.get("message") or ""))
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    return api_error(status, "", text[:200])


class KubeConfigError(Exception):
    """No usable cluster configuration: a bad kubeconfig, an unknown context, not in a cluster."""


class KubeClient:
    """The calls the gateway makes, on raw JSON objects. Built without I/O (`create_app` makes the one
    the gateway has); `open()` loads the configuration, `close()` ends it. A call before `open()`, or
    after `close()`, fails as the API being unavailable."""

    def __init__(self, *, kubeconfig: Path | None = None, context: str | None = None) -> None:
        self.kubeconfig, self.context = kubeconfig, context
        self._api: Any = None
        self._timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S)

    async def open(self) -> None:
        """The pod's service account when in a cluster and no kubeconfig is named; otherwise the
        kubeconfig (`kubeconfig`, else the default location) and its `context` or current context.
        Raises `KubeConfigError` when neither gives a usable configuration."""
        if self._api is not None:
            raise RuntimeError("the Kubernetes client is open already")
        kube, kube_config = _library()
        configuration = kube.client.Configuration()
        try:
            if self.kubeconfig is None and self.context is None:
                try:
                    kube_config.load_incluster_config(client_configuration=configuration)
                    self._api = kube.client.ApiClient(configuration)
                    return
                except kube_config.ConfigException:
                    pass  # not in a cluster: the default kubeconfig, as kubectl would
            await kube_config.load_kube_config(
                config_file=None if self.kubeconfig is None else str(self.kubeconfig),
                context=self.context,
                client_configuration=configuration,
                persist_config=False,  # never write refreshed credentials back into the operator's file
            )
        except (kube_config.ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
            where = f"kubeconfig {self.kubeconfig}" if self.kubeconfig is not None else "the default kubeconfig"
            raise KubeConfigError(f"cannot configure the Kubernetes client from {where}: {exc}") from None
        self._api = kube.client.ApiClient(configuration)

    @property
    def closed(self) -> bool:
        return self._api is None

    @property
    def host(self) -> str:
        return "(not open)" if self._api is None else str(self._api.configuration.host)

    async def close(self) -> None:
        api, self._api = self._api, None
        if api is not None:
            await api.close()

    @property
    def _custom(self) -> Any:
        return _library()[0].client.CustomObjectsApi(self._opened())

    @property
    def _core(self) -> Any:
        return _library()[0].client.CoreV1Api(self._opened())

    def _opened(self) -> Any:
        if self._api is None:
            raise KubernetesUnavailable(api_status=0, reason="NotOpen", detail="the Kubernetes client is not open")
        return self._api

    # -- calls ----------------------------------------------------------------------------------

    async def list(
        self,
        kind: Kind,
        namespace: str | None = None,
        *,
        field_selector: str | None = None,
        label_selector: str | None = None,
    ) -> ObjectList:
        """Every object of `kind` in `namespace` (or in every namespace), and the list's resourceVersion."""
        fn, args = self._lister(kind, namespace)
        labels = {} if label_selector is None else {"label_selector": label_selector}
        data = await self._call(fn, *args, **_selector(field_selector), **labels)
        items = data.get("items")
        metadata = data.get("metadata")
        version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
        objects = [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []
        return ObjectList(objects, version if isinstance(version, str) else "")

    async def watch(
        self,
        kind: Kind,
        namespace: str | None,
        resource_version: str,
        *,
        timeout_s: float,
        field_selector: str | None = None,
        on_open: Callable[[], None] | None = None,
    ) -> AsyncGenerator[WatchEvent, None]:
        """Changes after `resource_version` until the server ends the watch (after about `timeout_s`).
        Raises `KubernetesError` (`KubernetesGone` when that version is too old to resume from). `on_open`
        is called when the server accepts the watch (200), before any event: a quiet watch is healthy too."""
        fn, args = self._lister(kind, namespace)
        read_timeout = aiohttp.ClientTimeout(sock_connect=CONNECT_TIMEOUT_S, sock_read=timeout_s + 15)
        if on_open is not None:
            fn = _reporting_open(fn, on_open)
        kube = _library()[0]
        try:
            async with kube.watch.Watch(return_type="object") as watch:
                stream = watch.stream(
                    fn,
                    *args,
                    resource_version=resource_version,
                    timeout_seconds=int(timeout_s),
                    allow_watch_bookmarks=True,
                    _request_timeout=read_timeout,
                    **_selector(field_selector),
                )
                async for raw in stream:
                    yield _watch_event(raw)
        except kube.client.exceptions.ApiException as exc:
            # The watch helper puts "<reason>: <message>" in `reason` for an ERROR event.
            reason, _, message = str(exc.reason or "").partition(": ")
            raise api_error(int(exc.status or 0), reason, message or reason) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise api_error(0, "Unavailable", _describe(exc)) from None

    async def get(self, kind: Kind, namespace: str, name: str) -> JsonObject:
        if not kind.namespaced:
            if kind.group:
                return await self._call(self._custom.get_cluster_custom_object, *_gvp(kind), name)
            return await self._call(getattr(self._core, f"read_{kind.core_name}"), name)
        if kind.group:
            fn = self._custom.get_namespaced_custom_object
            return await self._call(fn, kind.group, kind.version, namespace, kind.plural, name)
        return await self._call(getattr(self._core, f"read_namespaced_{kind.core_name}"), name, namespace)

    async def create(self, kind: Kind, namespace: str, body: JsonObject, *, dry_run: bool = False) -> JsonObject:
        extra = {"dry_run": "All"} if dry_run else {}
        if not kind.namespaced:
            if kind.group:
                return await self._call(self._custom.create_cluster_custom_object, *_gvp(kind), body, **extra)
            return await self._call(getattr(self._core, f"create_{kind.core_name}"), body, **extra)
        if kind.group:
            fn = self._custom.create_namespaced_custom_object
            return await self._call(fn, kind.group, kind.version, namespace, kind.plural, body, **extra)
        return await self._call(getattr(self._core, f"create_namespaced_{kind.core_name}"), namespace, body, **extra)

    async def patch(self, kind: Kind, namespace: str, name: str, patch: JsonObject) -> JsonObject:
        """A JSON merge patch (RFC 7386): a null value removes a key, as for an annotation."""
        # The generated client would send a dict as a JSON *Patch* (a list of operations) unless told.
        extra: dict[str, object] = {"_content_type": MERGE_PATCH}
        if kind.group:
            fn = self._custom.patch_namespaced_custom_object
            return await self._call(fn, kind.group, kind.version, namespace, kind.plural, name, patch, **extra)
        return await self._call(
            getattr(self._core, f"patch_namespaced_{kind.core_name}"), name, namespace, patch, **extra
        )

    async def delete(
        self, kind: Kind, namespace: str, name: str, *, dry_run: bool = False, uid: str | None = None
    ) -> None:
        """Delete `name`; with `uid`, only if the object by that name is still that one (409 otherwise)."""
        extra: dict[str, object] = {"dry_run": "All"} if dry_run else {}
        if uid is not None:
            extra["body"] = {"preconditions": {"uid": uid}}
        if not kind.namespaced:
            if kind.group:
                await self._call(self._custom.delete_cluster_custom_object, *_gvp(kind), name, **extra)
            else:
                await self._call(getattr(self._core, f"delete_{kind.core_name}"), name, **extra)
            return
        if kind.group:
            fn = self._custom.delete_namespaced_custom_object
            await self._call(fn, kind.group, kind.version, namespace, kind.plural, name, **extra)
        else:
            await self._call(getattr(self._core, f"delete_namespaced_{kind.core_name}"), name, namespace, **extra)

    async def read_log(
        self, kind: Kind, namespace: str, name: str, *, container: str, tail_lines: int, limit_bytes: int
    ) -> str:
        """The last `tail_lines` lines of a pod's container log, at most `limit_bytes` (both bounded by
        the API server, so a huge log never crosses the wire), as text with undecodable bytes replaced."""
        assert kind.plural == "pods/log", kind
        fn = self._core.read_namespaced_pod_log
        try:
            response = await fn(
                name,
                namespace,
                container=container,
                tail_lines=tail_lines,
                limit_bytes=limit_bytes,
                _preload_content=False,
                _request_timeout=self._timeout,
            )
            async with response:
                status, body = response.status, await response.content.read(limit_bytes + 1)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise api_error(0, "Unavailable", _describe(exc)) from None
        if not 200 <= status < 300:
            raise error_from_body(status, body)
        return bytes(body[:limit_bytes]).decode("utf-8", "replace")

    # -- plumbing -------------------------------------------------------------------------------

    def _lister(self, kind: Kind, namespace: str | None) -> tuple[Callable[..., Any], tuple[str, ...]]:
        """The generated client's list function for `kind` in one namespace or all, and its arguments."""
        if kind.group:
            if namespace is None:
                return self._custom.list_cluster_custom_object, (kind.group, kind.version, kind.plural)
            return self._custom.list_namespaced_custom_object, (kind.group, kind.version, namespace, kind.plural)
        if not kind.namespaced:
            return getattr(self._core, f"list_{kind.core_name}"), ()
        if namespace is None:
            return getattr(self._core, f"list_{kind.core_name}_for_all_namespaces"), ()
        return getattr(self._core, f"list_namespaced_{kind.core_name}"), (namespace,)

    async def _call(self, fn: Callable[..., Any], *args: object, **kwargs: object) -> JsonObject:
        """One request; the raw JSON answer, or a `KubernetesError`. `_preload_content=False` keeps the body
        ours to parse, so objects stay plain dicts and every status is handled here."""
        try:
            response = await fn(*args, _preload_content=False, _request_timeout=self._timeout, **kwargs)
            async with response:
                status, body = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise api_error(0, "Unavailable", _describe(exc)) from None
        if not 200 <= status < 300:
            raise error_from_body(status, body)
        try:
            data = json.loads(body)
        except ValueError:
            raise api_error(502, "BadResponse", "the API server's answer is not JSON") from None
        if not isinstance(data, dict):
            raise api_error(502, "BadResponse", "the API server's answer is not a JSON object")
        return data


def _reporting_open(fn: Callable[..., Any], on_open: Callable[[], None]) -> Callable[..., Any]:
    """`fn` (a generated list function, called by the watch helper with watch=True), calling `on_open`
    once the server has accepted the watch. The helper reads a refusal's Status from the body itself."""

    async def call(*args: object, **kwargs: object) -> Any:
        response = await fn(*args, **kwargs)
        if 200 <= int(getattr(response, "status", 0)) < 300:
            on_open()
        return response

    return call


def _gvp(kind: Kind) -> tuple[str, str, str]:
    return kind.group, kind.version, kind.plural


def _selector(field_selector: str | None) -> dict[str, str]:
    return {} if field_selector is None else {"field_selector": field_selector}


def _watch_event(raw: object) -> WatchEvent:
    """The watch helper's dict (`type`, `raw_object`); anything else means the stream is garbled."""
    if isinstance(raw, dict):
        kind, obj = raw.get("type"), raw.get("raw_object")
        if isinstance(kind, str) and isinstance(obj, dict):
            return WatchEvent(kind, obj)
    raise api_error(502, "BadResponse", "the API server sent a watch line that is not an event")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
