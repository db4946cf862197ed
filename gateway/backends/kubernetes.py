"""`KubernetesBackend`: notebook servers as Kubeflow Notebook resources, routed to their Services.

Writes go to the API server (Notebooks and their PVCs, as the Jupyter web app makes them); reads
and routes come from the `NotebookWatcher`'s view, so a page load costs no API call. The client
raises the gateway's `KubernetesError`s; `kube_errors()` words them for notebooks and volumes.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import copy
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Literal, Protocol

from yarl import URL

from ..errors import (
    BadRequest,
    Conflict,
    Forbidden,
    GatewayError,
    InvalidNotebookSpec,
    KubernetesConflict,
    KubernetesError,
    KubernetesInvalid,
    KubernetesNotFound,
    KubernetesUnavailable,
    NotebookExists,
    NotebookNotFound,
    NotFound,
    ServiceUnavailable,
)
from ..kube.client import EVENTS, NOTEBOOKS, POD_LOGS, PODDEFAULTS, PVCS, JsonObject, KubeClient, WatchEvent
from ..kube.kubeflow_names import CREATOR_ANNOTATION
from ..kube.reflector import WATCH_TIMEOUT_S, Reflector, object_key, stop
from ..kube.watch_health import WatchHealth
from . import LOG_TAIL_BYTES, LOG_TAIL_LINES, Deletion, Notebook, NotebookSpec, Phase, ServerLog
from .gpu_quota import RESOURCE_QUOTAS, gpu_quota_problem
from .notebook_resource import (
    START_PATCH,
    claim_names,
    event_time,
    injected_configurations,
    is_stopped,
    made_volumes,
    new_claims,
    notebook_object,
    notebook_status,
    pvc_object,
    read_notebook,
    read_spec,
    reconfiguring_start_patch,
    stop_patch,
    with_injected,
    with_made_volumes,
)
from .notebook_watcher import NotebookWatcher, RouteResolver, service_resolver
from .poddefaults import apply_poddefaults, chosen_poddefaults, configuration_labels, remove_injected, selector_label
from .proxy_annotations import DEFAULT, ProxyBehaviour

log = logging.getLogger(__name__)

UNAVAILABLE = "Kubernetes API unavailable"
EVENTS_SHOWN = 200  # the newest events of a notebook on its detail page
START_ATTEMPTS = 3  # a start that re-applies configurations retries when the Notebook changed under it
Subject = Literal["notebook", "new notebook", "volume"]


class NotebookObserver(Protocol):
    """Hears which Notebooks exist and which the gateway itself is creating (the audit log's
    discovery of Notebooks made elsewhere). Called on the event loop; returns at once."""

    def seen(self, namespace: str, name: str, uid: str, *, creator: str | None, created: str | None) -> None: ...

    def gone(self, uid: str) -> None: ...

    def creating(self, namespace: str, name: str) -> None: ...

    def created(self, namespace: str, name: str, uid: str | None) -> None: ...


class KubernetesBackend:
    """Creates, stops, starts and deletes Kubeflow Notebooks, and routes to the ones that run."""

    name = "kubernetes"
    has_configurations = True
    runs_pods = True

    def __init__(
        self,
        client: KubeClient,  # the gateway's one client: opened before open(), closed after close()
        *,
        cluster_domain: str = "cluster.local",
        namespaces: tuple[str, ...] = (),
        route_resolver: RouteResolver | None = None,  # tests point routes at local servers
        watch_timeout_s: float = WATCH_TIMEOUT_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),  # status depends on a notebook's age
        apply_poddefaults: bool = False,  # no PodDefault webhook in the cluster: the gateway applies them
        root_namespaces: frozenset[str] = frozenset(),  # where an admin lets notebooks run as root
    ) -> None:
        self.client, self.namespaces = client, namespaces
        self.root_namespaces = root_namespaces
        self.apply_poddefaults = apply_poddefaults
        self.clock = clock
        self.route_resolver = route_resolver or service_resolver(cluster_domain)
        self.watch_timeout_s = watch_timeout_s
        self._watcher: NotebookWatcher | None = None
        self._task: asyncio.Task[None] | None = None
        self.observer: NotebookObserver | None = None  # set before open() to hear of every Notebook
        self.on_first_ready: Callable[[float], None] | None = None  # set before open(): creation-to-ready seconds

    # -- lifecycle --------------------------------------------------------------------------------

    async def open(self) -> None:
        """List every notebook before serving; if the API does not answer, start anyway (unready,
        /readyz says why) and keep trying in the background."""
        self._watcher = NotebookWatcher(
            self.client, self.namespaces, self.route_resolver, watch_timeout_s=self.watch_timeout_s
        )
        self._watcher.on_first_ready = self.on_first_ready
        if self.observer is not None:
            for reflector in self._watcher.notebooks:
                reflector.on_change = _reporting(reflector, self.observer)
        try:
            await self._watcher.sync()
        except KubernetesError as exc:
            log.warning(
                "the Kubernetes API at %s did not answer the first list (%s); retrying",
                self.client.host,
                exc.description,
            )
        except BaseException:
            await self.close()  # close() is not called for a resource whose start failed
            raise
        scope = ", ".join(self.namespaces) or "every namespace"
        log.info("kubernetes backend: watching notebooks in %s at %s", scope, self.client.host)
        self._task = asyncio.create_task(self._watcher.run(), name="notebook-watcher")

    async def close(self) -> None:
        await stop(self._task)
        self._task = None

    @property
    def watcher(self) -> NotebookWatcher:
        if self._watcher is None:
            raise ServiceUnavailable("The Kubernetes backend has not started.")
        return self._watcher

    @property
    def synced(self) -> bool:
        return self._watcher is not None and self._watcher.synced

    def watch_health(self) -> WatchHealth:
        return self._watcher.health() if self._watcher is not None else WatchHealth("notebooks", synced=False)

    def set_route_resolver(self, resolver: RouteResolver) -> None:
        """Point routes elsewhere (tests: at local Jupyter servers); the table is rebuilt at once."""
        self.route_resolver = resolver
        if self._watcher is not None:
            self._watcher.resolver = resolver

    # -- reads: from the watcher's view ---------------------------------------------------------------

    def route(self, namespace: str, name: str) -> URL | None:
        return self._watcher.route(namespace, name) if self._watcher is not None else None

    def proxy_behaviour(self, namespace: str, name: str) -> ProxyBehaviour:
        return self._watcher.proxy_behaviour(namespace, name) if self._watcher is not None else DEFAULT

    async def list(self, namespace: str) -> list[Notebook]:
        watcher = self._ready_watcher()
        warnings, now = watcher.warnings_in(namespace), self.clock()
        return [read_notebook(obj, warnings, now) for obj in watcher.notebooks_in(namespace)]

    async def list_all(self) -> builtins.list[Notebook]:
        watcher, now = self._ready_watcher(), self.clock()
        return [
            read_notebook(obj, watcher.warnings_in(namespace), now) for namespace, _, obj in watcher.all_notebooks()
        ]

    async def get(self, namespace: str, name: str) -> Notebook:
        watcher = self._ready_watcher()
        if not watcher.watches(namespace):
            raise NotebookNotFound(f"There is no notebook server {namespace}/{name}.")
        obj = watcher.notebook(namespace, name)
        if obj is None:  # perhaps created a moment ago, before its watch event: ask the API
            with kube_errors("notebook", namespace, name):
                obj = await self.client.get(NOTEBOOKS, namespace, name)
        return read_notebook(obj, watcher.warnings_in(namespace), self.clock())

    def phase_counts(self) -> dict[Phase, int]:
        watcher = self._watcher
        if watcher is None or not watcher.synced:
            return {}
        now, counts = self.clock(), Counter[Phase]()
        for namespace, _, obj in watcher.all_notebooks():
            counts[notebook_status(obj, watcher.warnings_in(namespace), now).phase] += 1
        return dict(counts)

    # -- the detail page --------------------------------------------------------------------------------

    async def resource(self, namespace: str, name: str) -> JsonObject:
        obj = await self._object(namespace, name)
        shown = copy.deepcopy(obj)
        metadata = shown.get("metadata")
        if isinstance(metadata, dict):
            metadata.pop("managedFields", None)  # the server's bookkeeping: noise on a page
        return shown

    async def events(self, namespace: str, name: str) -> builtins.list[JsonObject]:
        """Every event about this Notebook (not one of the same name before it), newest first, as the web
        app's detail page lists them."""
        obj = await self._object(namespace, name)
        uid = _dict_of(obj, "metadata").get("uid")
        with kube_errors("notebook", namespace, name):
            found = await self.client.list(
                EVENTS, namespace, field_selector=f"involvedObject.kind=Notebook,involvedObject.name={name}"
            )
        events = [event for event in found.items if _dict_of(event, "involvedObject").get("uid") in (None, "", uid)]
        oldest = datetime.min.replace(tzinfo=UTC)
        return sorted(events, key=lambda event: event_time(event) or oldest, reverse=True)[:EVENTS_SHOWN]

    def pod_name(self, namespace: str, name: str) -> str:
        return f"{name}-0"  # the notebook controller's StatefulSet of one replica

    async def logs(self, namespace: str, name: str, *, tail_lines: int = LOG_TAIL_LINES) -> ServerLog:
        """The end of the notebook container's log, bounded in lines and bytes by the API server itself."""
        obj = await self._object(namespace, name)
        pod = self.pod_name(namespace, name)
        if is_stopped(obj):
            return ServerLog(pod, (), "The server is stopped: it has no pod, so no log.")
        try:
            text = await self.client.read_log(
                POD_LOGS,
                namespace,
                pod,
                container=name,  # the web app names the notebook's container after it (istio adds a sidecar)
                tail_lines=max(1, min(tail_lines, LOG_TAIL_LINES)),
                limit_bytes=LOG_TAIL_BYTES,
            )
        except KubernetesNotFound:
            return ServerLog(pod, (), "The server's pod does not exist (yet): no log.")
        except KubernetesError as exc:
            if exc.api_status == 400:  # e.g. the container has not started yet
                return ServerLog(pod, (), f"No log yet: {exc.description[:300]}")
            raise notebook_error(exc, "notebook", namespace, name) from None
        return ServerLog(pod, tuple(text.splitlines()))

    async def _object(self, namespace: str, name: str) -> JsonObject:
        watcher = self._ready_watcher()
        if not watcher.watches(namespace):
            raise NotebookNotFound(f"There is no notebook server {namespace}/{name}.")
        obj = watcher.notebook(namespace, name)
        if obj is None:
            with kube_errors("notebook", namespace, name):
                obj = await self.client.get(NOTEBOOKS, namespace, name)
        return obj

    def _ready_watcher(self) -> NotebookWatcher:
        watcher = self.watcher
        if not watcher.synced:
            raise ServiceUnavailable(f"{UNAVAILABLE}: the notebook list has not loaded yet.")
        return watcher

    # -- writes: to the API ---------------------------------------------------------------------------

    async def create(self, namespace: str, spec: NotebookSpec, *, creator: str | None) -> Notebook:
        """The Notebook and its new PVCs. Every object is first sent as a dry run, so most refusals
        come before anything exists; if the Notebook still fails, the PVCs made for it are removed."""
        self._check_served(namespace)
        for volume in new_claims(spec):
            if volume.size is None:
                raise InvalidNotebookSpec(f"The new volume {volume.name} needs a size.", field="datavols")
        claims = [pvc_object(namespace, volume, notebook=spec.name) for volume in new_claims(spec)]
        body = notebook_object(namespace, spec, creator=creator, allow_root=namespace in self.root_namespaces)
        client = self.client
        await self._check_gpu_quota(namespace, spec.gpus)
        chosen = await self._chosen_poddefaults(namespace, spec.configurations) if spec.configurations else []
        if self.apply_poddefaults:  # recorded even when empty: a start then knows the template is all the user's
            body = with_injected(body, apply_poddefaults(body, chosen))
        with kube_errors("new notebook", namespace, spec.name):
            await client.create(NOTEBOOKS, namespace, body, dry_run=True)
        for claim in claims:
            with kube_errors("volume", namespace, _name(claim)):
                await client.create(PVCS, namespace, claim, dry_run=True)
        made: dict[str, str] = {}  # name -> uid, recorded on the Notebook for a delete with its volumes
        observer = self.observer
        created: JsonObject | None = None
        if observer is not None:
            observer.creating(namespace, spec.name)  # its watch event may arrive before the API's answer
        try:
            for claim in claims:
                with kube_errors("volume", namespace, _name(claim)):
                    pvc = await client.create(PVCS, namespace, claim)
                made[_name(claim)] = _uid(pvc)
            with kube_errors("new notebook", namespace, spec.name):
                created = await client.create(NOTEBOOKS, namespace, with_made_volumes(body, made))
        except BaseException:
            if made:  # shielded: a cancelled request must not leave its volumes behind either
                await asyncio.shield(self._remove_claims(namespace, [*made]))
            raise
        finally:
            if observer is not None:
                observer.created(namespace, spec.name, (_uid(created) or None) if created is not None else None)
        log.info("created notebook %s/%s (volumes: %s) for %s", namespace, spec.name, ", ".join(made) or "-", creator)
        self.watcher.observe(created)
        return read_notebook(created, [], self.clock())

    async def _check_gpu_quota(
        self, namespace: str, gpus: tuple[tuple[str, int], ...], *, starting: str | None = None
    ) -> None:
        """Refuse GPUs that the namespace's quota has no room for (see `gpu_quota`)."""
        if not gpus:
            return
        with kube_errors("notebook", namespace, starting or ""):
            quotas = await self.client.list(RESOURCE_QUOTAS, namespace)
        problem = gpu_quota_problem(quotas.items, self.watcher.notebooks_in(namespace), gpus, starting=starting)
        if problem is not None:
            raise Forbidden(problem, field="gpus")

    async def _chosen_poddefaults(self, namespace: str, labels: tuple[str, ...]) -> builtins.list[JsonObject]:
        """The namespace's PodDefaults selecting `labels`; a label none selects is refused."""
        chosen = chosen_poddefaults(await self.poddefaults(namespace), labels)
        missing = sorted(set(labels) - {selector_label(obj) for obj in chosen})
        if missing:
            raise InvalidNotebookSpec(
                f"No configuration in {namespace} has the label {missing[0]!r}.", field="configurations"
            )
        return chosen

    # -- PodDefaults ("configurations") ---------------------------------------------------------------

    async def poddefaults(self, namespace: str) -> builtins.list[JsonObject]:
        """The namespace's PodDefaults, by name."""
        self._check_served(namespace)
        with configuration_errors(namespace, ""):
            found = await self.client.list(PODDEFAULTS, namespace)
        return sorted(found.items, key=_name)

    async def create_poddefault(self, namespace: str, body: JsonObject) -> JsonObject:
        self._check_served(namespace)
        with configuration_errors(namespace, _name(body)):
            created = await self.client.create(PODDEFAULTS, namespace, body)
        log.info("created configuration (PodDefault) %s/%s", namespace, _name(body))
        return created

    async def delete_poddefault(self, namespace: str, name: str) -> None:
        self._check_served(namespace)
        with configuration_errors(namespace, name):
            await self.client.delete(PODDEFAULTS, namespace, name)
        log.info("deleted configuration (PodDefault) %s/%s", namespace, name)

    async def _remove_claims(self, namespace: str, names: builtins.list[str]) -> None:
        for name in names:
            try:
                await self.client.delete(PVCS, namespace, name)
                log.info("removed volume %s/%s: its notebook could not be created", namespace, name)
            except KubernetesNotFound:
                pass  # gone already
            except KubernetesError as exc:
                log.error("could not remove volume %s/%s after a failed create: %s", namespace, name, exc.description)

    async def stop(self, namespace: str, name: str) -> Notebook:
        """Set `kubeflow-resource-stopped` (the time); the controller scales the server to zero.

        Read from the API, not the watch: just after a start the watch may still say "stopped", and
        a STOP pressed then must not be skipped."""
        self._check_served(namespace)
        with kube_errors("notebook", namespace, name):
            current = await self.client.get(NOTEBOOKS, namespace, name)
        if is_stopped(current):
            return read_notebook(current, self.watcher.warnings_in(namespace), self.clock())  # keep its stop time
        return await self._patch(namespace, name, stop_patch(self.clock()))

    async def start(self, namespace: str, name: str) -> Notebook:
        """Remove `kubeflow-resource-stopped`; the controller starts the server again. Where the gateway
        applies configurations (no webhook), the same patch re-applies them as they are now, as the
        webhook would to the new pod: see `_start_patch`. A stopped server with GPUs starts only
        when the namespace's GPU quota has room for them."""
        known = self.watcher.notebook(namespace, name) if self._watcher is not None else None
        if known is not None and is_stopped(known):
            await self._check_gpu_quota(namespace, read_spec(known).gpus, starting=name)
        if not self.apply_poddefaults:
            return await self._patch(namespace, name, START_PATCH)
        self._check_served(namespace)
        attempts = START_ATTEMPTS
        while True:
            with kube_errors("notebook", namespace, name):
                current = await self.client.get(NOTEBOOKS, namespace, name)
            patch = await self._start_patch(namespace, current)
            try:
                return await self._patch(namespace, name, patch)
            except Conflict:  # edited between our read and our patch: read it again
                attempts -= 1
                if not attempts:
                    raise
                log.info("notebook %s/%s changed while starting; retrying", namespace, name)

    async def _start_patch(self, namespace: str, current: JsonObject) -> JsonObject:
        """START_PATCH, plus, for a stopped Notebook with the gateway's record of what it injected: that
        taken out and the PodDefaults selecting the Notebook's labels now applied (as at creation, what
        the user set wins). A running Notebook gets no new pod, so its template is left as it is."""
        injected = injected_configurations(current)
        if injected is None or not is_stopped(current):
            return START_PATCH
        metadata = current.get("metadata")
        labels = metadata.get("labels") if isinstance(metadata, dict) else None
        wanted = configuration_labels(labels) if isinstance(labels, dict) else []
        chosen = chosen_poddefaults(await self.poddefaults(namespace), wanted) if wanted else []
        updated = copy.deepcopy(current)
        remove_injected(updated, injected)
        reapplied = apply_poddefaults(updated, chosen)
        gone = sorted(set(injected) - set(reapplied))
        log.info(
            "starting notebook %s/%s with configurations %s (no longer there: %s)",
            namespace,
            _name(current),
            ", ".join(reapplied) or "-",
            ", ".join(gone) or "-",
        )
        return reconfiguring_start_patch(current, updated, reapplied)

    async def _patch(self, namespace: str, name: str, patch: JsonObject) -> Notebook:
        self._check_served(namespace)
        with kube_errors("notebook", namespace, name):
            patched = await self.client.patch(NOTEBOOKS, namespace, name, patch)
        return read_notebook(patched, self.watcher.warnings_in(namespace), self.clock())

    async def delete(self, namespace: str, name: str, *, volumes: bool = False) -> Deletion:
        """Delete the Notebook; its volumes stay (the user's data), as in the web app, unless `volumes`:
        then also the claims the gateway made with it (by uid), but none another notebook still uses."""
        self._check_served(namespace)
        doomed: dict[str, str] = {}
        kept: builtins.list[tuple[str, str]] = []
        if volumes:
            obj = self.watcher.notebook(namespace, name)
            if obj is None:
                with kube_errors("notebook", namespace, name):
                    obj = await self.client.get(NOTEBOOKS, namespace, name)
            doomed, kept = self._deletable_volumes(namespace, name, obj)
            for claim, uid in [*doomed.items()]:  # refusals (RBAC, a webhook) before anything is gone
                try:
                    with kube_errors("volume", namespace, claim):
                        await self.client.delete(PVCS, namespace, claim, uid=uid, dry_run=True)
                except (NotFound, Conflict):
                    del doomed[claim]  # gone already, or replaced by another claim of that name: not ours
        with kube_errors("notebook", namespace, name):
            await self.client.delete(NOTEBOOKS, namespace, name)
        log.info("deleted notebook %s/%s", namespace, name)
        deleted: builtins.list[str] = []
        for claim, uid in doomed.items():
            try:
                if await _gone_is_fine(self.client.delete(PVCS, namespace, claim, uid=uid)):
                    deleted.append(claim)
                    log.info("deleted volume %s/%s with its notebook %s", namespace, claim, name)
            except KubernetesError as exc:  # the notebook is gone already: say which volume is left, and why
                log.error("could not delete volume %s/%s after its notebook: %s", namespace, claim, exc.description)
                kept.append((claim, f"deleting it failed ({exc.reason or exc.api_status}); delete it by hand"))
        return Deletion(tuple(deleted), tuple(kept))

    def _deletable_volumes(
        self, namespace: str, name: str, obj: JsonObject
    ) -> tuple[dict[str, str], builtins.list[tuple[str, str]]]:
        """The claims made with this notebook that it still mounts, less those another notebook mounts."""
        made = made_volumes(obj)
        mounted = claim_names(obj)
        others: dict[str, str] = {}
        for other in self.watcher.notebooks_in(namespace):
            if _name(other) != name:
                others.update(dict.fromkeys(claim_names(other), _name(other)))
        doomed: dict[str, str] = {}
        kept: builtins.list[tuple[str, str]] = []
        for claim, uid in sorted(made.items()):
            if claim not in mounted:
                continue  # no longer this notebook's (someone edited the pod template): not ours to judge
            if claim in others:
                kept.append((claim, f"notebook server {others[claim]} uses it too"))
            else:
                doomed[claim] = uid
        return doomed, kept

    def _check_served(self, namespace: str) -> None:
        if not self.watcher.watches(namespace):
            raise NotFound(f"Namespace {namespace} is not served by this gateway.")


@contextlib.contextmanager
def kube_errors(subject: Subject, namespace: str, name: str) -> Iterator[None]:
    """The client's errors, worded for the notebook server (or volume) they were about."""
    try:
        yield
    except KubernetesError as exc:
        raise notebook_error(exc, subject, namespace, name) from None


@contextlib.contextmanager
def configuration_errors(namespace: str, name: str) -> Iterator[None]:
    """The client's errors about a PodDefault, worded for a configuration."""
    try:
        yield
    except KubernetesNotFound as exc:
        if not name:
            raise notebook_error(exc, "new notebook", namespace, name) from None
        raise NotFound(f"There is no configuration {namespace}/{name}.") from None
    except KubernetesConflict:
        raise Conflict(f"A configuration named {name} already exists in {namespace}.", field="name") from None
    except KubernetesInvalid as exc:
        raise BadRequest(exc.detail or "The cluster refused the configuration.") from None
    except KubernetesError as exc:
        raise notebook_error(exc, "new notebook", namespace, name) from None


def notebook_error(exc: KubernetesError, subject: Subject, namespace: str, name: str) -> GatewayError:
    """What a user is told about `subject`; the client's own error where there is nothing to add
    (unavailable, the gateway's RBAC short, an unexpected answer)."""
    if isinstance(exc, KubernetesUnavailable):
        log.warning("Kubernetes API unavailable: %s", exc.description)
    elif isinstance(exc, KubernetesNotFound):
        if subject == "notebook":
            return NotebookNotFound(f"There is no notebook server {namespace}/{name}.")
        return NotFound(f"Namespace {namespace} does not exist in the cluster.")  # creating into nothing
    elif isinstance(exc, KubernetesConflict):
        if not exc.already_exists:
            return Conflict(f"Notebook server {namespace}/{name} changed meanwhile; try again.")
        if subject == "volume":
            return Conflict(
                f"A volume named {name} already exists in {namespace}: choose another name, or attach it "
                "as an existing volume."
            )
        return NotebookExists(f"A notebook server named {name} already exists in {namespace}.", field="name")
    elif isinstance(exc, KubernetesInvalid):
        return InvalidNotebookSpec(exc.detail or "The cluster refused the notebook server's settings.")
    return exc


async def _gone_is_fine(call: Awaitable[None]) -> bool:
    """Await a delete; False when the object was already gone (404) or is another object by now (409:
    its uid differs, so it is not the volume the gateway made)."""
    try:
        await call
    except (KubernetesNotFound, KubernetesConflict):
        return False
    return True


def _uid(obj: JsonObject) -> str:
    metadata = obj.get("metadata")
    uid = metadata.get("uid") if isinstance(metadata, dict) else None
    return uid if isinstance(uid, str) else ""


def _name(obj: JsonObject) -> str:
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else ""


def _reporting(reflector: Reflector, observer: NotebookObserver) -> Callable[[WatchEvent | None], None]:
    """The reflector's change hook (the route table) followed by telling `observer` about every
    Notebook listed, added or modified, and every one deleted."""
    routes = reflector.on_change

    def on_change(event: WatchEvent | None) -> None:
        routes(event)
        try:
            if event is None:  # a (re)list replaced the view
                for names in reflector.objects.values():
                    for obj in names.values():
                        _report(observer, obj)
            elif event.type == "DELETED":
                if uid := _uid(event.object):
                    observer.gone(uid)
            else:
                _report(observer, event.object)
        except Exception:  # the observer must never stop the watch that keeps the routes
            log.exception("the notebook observer failed")

    return on_change


def _report(observer: NotebookObserver, obj: JsonObject) -> None:
    key, uid, metadata = object_key(obj), _uid(obj), obj.get("metadata")
    if key is None or not uid or not isinstance(metadata, dict):
        return
    annotations = metadata.get("annotations")
    creator = annotations.get(CREATOR_ANNOTATION) if isinstance(annotations, dict) else None
    created = metadata.get("creationTimestamp")
    observer.seen(
        key[0],
        key[1],
        uid,
        creator=creator if isinstance(creator, str) else None,
        created=created if isinstance(created, str) else None,
    )


def _dict_of(obj: JsonObject, key: str) -> JsonObject:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}
