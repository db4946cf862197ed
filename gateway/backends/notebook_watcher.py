"""`NotebookWatcher`: list-then-watch of Notebooks (and the Warning events about them, and their
Services) across the watched namespaces, and the route table the proxy reads, kept in step with them.

A notebook's Service lives in its namespace, where `default-editor` may edit it: turned into an
ExternalName, or replaced by one the notebook does not own, it would point the gateway (and the
signed-in user's identity headers) at any host. So a notebook is routed only while its Service, if
there is one, is a ClusterIP Service that the Notebook controls (ownerReferences). With none yet, its
name resolves to nothing; once one appears, the watch sees it before it can be used.

Each (kind, namespace) pair is one `kube.reflector.Reflector`; meanwhile the last known view keeps serving.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import datetime

from yarl import URL

from ..kube.client import EVENTS, NOTEBOOKS, JsonObject, Kind, KubeClient, WatchEvent
from ..kube.reflector import WATCH_TIMEOUT_S, Reflector, object_key, watch_health
from ..kube.watch_health import WatchHealth
from .notebook_resource import is_routable
from .proxy_annotations import DEFAULT, ProxyBehaviour, from_annotations

RouteResolver = Callable[[str, str], URL]  # (namespace, name) -> the notebook's upstream origin
# The Notebook controller re-emits its Pod's and StatefulSet's events onto the Notebook.
WARNINGS_SELECTOR = "involvedObject.kind=Notebook,type=Warning"
NOTEBOOK_SERVICES = Kind("", "v1", "services", "service")


def service_resolver(cluster_domain: str) -> RouteResolver:
    """Kubeflow's Service for a notebook: `<name>.<namespace>.svc.<domain>`, port 80 (-> 8888)."""

    def resolve(namespace: str, name: str) -> URL:
        return URL(f"http://{name}.{namespace}.svc.{cluster_domain}:80")

    return resolve


class NotebookWatcher:
    """Notebooks and their Warning events in `namespaces` (empty: cluster-wide), and the routes.

    `routes` maps (namespace, name) to the upstream origin of every notebook that is neither stopped
    nor being deleted; it is rebuilt by one assignment after a list and updated in place per event.
    """

    def __init__(
        self,
        client: KubeClient,
        namespaces: tuple[str, ...],
        resolver: RouteResolver,
        *,
        watch_timeout_s: float = WATCH_TIMEOUT_S,
    ) -> None:
        self.namespaces = namespaces
        self._resolver = resolver
        scopes = namespaces or (None,)
        self.notebooks = [
            Reflector(client, NOTEBOOKS, ns, on_change=self._notebook_changed, watch_timeout_s=watch_timeout_s)
            for ns in scopes
        ]
        self.warnings = [
            Reflector(client, EVENTS, ns, field_selector=WARNINGS_SELECTOR, watch_timeout_s=watch_timeout_s)
            for ns in scopes
        ]
        self.services = [
            Reflector(client, NOTEBOOK_SERVICES, ns, on_change=self._service_changed, watch_timeout_s=watch_timeout_s)
            for ns in scopes
        ]
        self.routes: dict[tuple[str, str], URL] = {}
        # Told how long each notebook created after this watcher started took to be ready (for /metrics).
        self.on_first_ready: Callable[[float], None] | None = None
        # Whole seconds: creationTimestamp has no fraction, so a notebook created in the second this watcher
        # started would otherwise look older than it.
        self._started_at = float(int(time.time()))
        self._starting: dict[tuple[str, str], float] = {}  # created since then, not yet ready: creation time
        # Only the routed notebooks whose annotations ask for more than the prefix kept (VS Code, RStudio).
        self.behaviours: dict[tuple[str, str], ProxyBehaviour] = {}

    @property
    def reflectors(self) -> list[Reflector]:
        return [*self.notebooks, *self.warnings, *self.services]

    @property
    def synced(self) -> bool:
        return all(reflector.synced for reflector in self.reflectors)

    def health(self) -> WatchHealth:
        return watch_health("notebooks", self.reflectors)

    def watches(self, namespace: str) -> bool:
        return not self.namespaces or namespace in self.namespaces

    async def sync(self) -> None:
        """The first list of everything, before the gateway serves. Every list finishes (or fails)
        before this returns, so none is still running when `run()` starts its own."""
        results = await asyncio.gather(*(reflector.sync() for reflector in self.reflectors), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def run(self) -> None:
        """Every reflector's watch loop, until cancelled."""
        await asyncio.gather(*(reflector.run() for reflector in self.reflectors))

    # -- the view ---------------------------------------------------------------------------------

    def notebook(self, namespace: str, name: str) -> JsonObject | None:
        return self._objects(self.notebooks, namespace).get(name)

    def notebooks_in(self, namespace: str) -> list[JsonObject]:
        return [obj for _, obj in sorted(self._objects(self.notebooks, namespace).items())]

    def warnings_in(self, namespace: str) -> list[JsonObject]:
        return list(self._objects(self.warnings, namespace).values())

    def observe(self, obj: JsonObject) -> None:
        """A notebook the gateway just created: shown (and routed) before its ADDED event arrives.
        Only when the view has no such notebook yet, so a newer object from the watch always wins."""
        key = object_key(obj)
        if key is None or not self.watches(key[0]) or self.notebook(*key) is not None:
            return
        reflector = self._reflector_for(self.notebooks, key[0])
        reflector.objects.setdefault(key[0], {})[key[1]] = obj
        self._notebook_changed(WatchEvent("ADDED", obj))

    def route(self, namespace: str, name: str) -> URL | None:
        return self.routes.get((namespace, name))

    def proxy_behaviour(self, namespace: str, name: str) -> ProxyBehaviour:
        return self.behaviours.get((namespace, name), DEFAULT)

    @property
    def resolver(self) -> RouteResolver:
        return self._resolver

    @resolver.setter
    def resolver(self, resolver: RouteResolver) -> None:
        self._resolver = resolver
        self._rebuild_routes()

    def _objects(self, reflectors: list[Reflector], namespace: str) -> dict[str, JsonObject]:
        if not self.watches(namespace):
            return {}
        return self._reflector_for(reflectors, namespace).objects.get(namespace, {})

    def _reflector_for(self, reflectors: list[Reflector], namespace: str) -> Reflector:
        return reflectors[self.namespaces.index(namespace)] if self.namespaces else reflectors[0]

    def _notebook_changed(self, event: WatchEvent | None) -> None:
        key = object_key(event.object) if event is not None else None
        if event is None or key is None:
            self._rebuild_routes()
        elif event.type != "DELETED" and self._routable(*key, event.object):
            self._add_route(key, event.object)
        else:
            self._drop_route(key)
        if event is not None and key is not None and self.on_first_ready is not None:
            self._time_startup(key, event)

    def _time_startup(self, key: tuple[str, str], event: WatchEvent) -> None:
        """Creation to first readiness, for the notebooks created while this watcher runs: those it
        saw not ready first (one seen ready at once, or made before a restart, is not timed)."""
        if event.type == "DELETED":
            self._starting.pop(key, None)
            return
        status = event.object.get("status")
        replicas = status.get("readyReplicas") if isinstance(status, dict) else None
        ready = isinstance(replicas, int) and replicas >= 1
        if not ready:
            created = creation_time(event.object)
            if created is not None and created >= self._started_at:
                self._starting.setdefault(key, created)
        elif (created := self._starting.pop(key, None)) is not None and self.on_first_ready is not None:
            self.on_first_ready(max(time.time() - created, 0.0))

    def _service_changed(self, event: WatchEvent | None) -> None:
        """A Service added, edited or deleted: the route of the notebook of that name follows."""
        key = object_key(event.object) if event is not None else None
        if event is None or key is None:
            self._rebuild_routes()
            return
        notebook = self.notebook(*key)
        if notebook is not None and self._routable(*key, notebook):
            self._add_route(key, notebook)
        else:
            self._drop_route(key)

    def _add_route(self, key: tuple[str, str], notebook: JsonObject) -> None:
        behaviour = _behaviour(key, notebook)
        if behaviour is DEFAULT:
            self.behaviours.pop(key, None)
        else:
            self.behaviours[key] = behaviour
        self.routes[key] = self._resolver(*key)

    def _drop_route(self, key: tuple[str, str]) -> None:
        self.routes.pop(key, None)
        self.behaviours.pop(key, None)

    def _routable(self, namespace: str, name: str, notebook: JsonObject) -> bool:
        service = self._objects(self.services, namespace).get(name)
        return is_routable(notebook) and (service is None or is_notebooks_service(service, notebook))

    def _rebuild_routes(self) -> None:
        routable = [(ns, name, obj) for ns, name, obj in self._all_notebooks() if self._routable(ns, name, obj)]
        behaviours = {(ns, name): _behaviour((ns, name), obj) for ns, name, obj in routable}
        # Behaviours first: a route never exists without its behaviour in place.
        self.behaviours = {key: behaviour for key, behaviour in behaviours.items() if behaviour is not DEFAULT}
        self.routes = {(ns, name): self._resolver(ns, name) for ns, name, _ in routable}

    def all_notebooks(self) -> list[tuple[str, str, JsonObject]]:
        """(namespace, name, Notebook) for every Notebook watched, sorted."""
        return sorted(self._all_notebooks(), key=lambda item: item[:2])

    def _all_notebooks(self) -> Iterator[tuple[str, str, JsonObject]]:
        for reflector in self.notebooks:
            for namespace, names in reflector.objects.items():
                for name, obj in names.items():
                    yield namespace, name, obj


def creation_time(obj: JsonObject) -> float | None:
    """An object's `metadata.creationTimestamp` as a Unix time; None when absent or malformed."""
    metadata = obj.get("metadata")
    stamp = metadata.get("creationTimestamp") if isinstance(metadata, dict) else None
    try:
        return datetime.fromisoformat(stamp).timestamp() if isinstance(stamp, str) else None
    except ValueError:
        return None


def _behaviour(key: tuple[str, str], notebook: JsonObject) -> ProxyBehaviour:
    metadata = notebook.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    return from_annotations(*key, annotations) if isinstance(annotations, dict) else DEFAULT


def is_notebooks_service(service: JsonObject, notebook: JsonObject) -> bool:
    """Whether `service` is one the gateway may send `notebook`'s traffic to: a ClusterIP Service (no
    ExternalName, no external name at all) whose controlling owner is this Notebook (kind, name and,
    when both carry one, uid)."""
    spec = service.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    if spec.get("type", "ClusterIP") != "ClusterIP" or spec.get("externalName"):
        return False
    metadata, notebook_metadata = service.get("metadata"), notebook.get("metadata")
    owners = metadata.get("ownerReferences") if isinstance(metadata, dict) else None
    name = notebook_metadata.get("name") if isinstance(notebook_metadata, dict) else None
    uid = notebook_metadata.get("uid") if isinstance(notebook_metadata, dict) else None
    return any(
        isinstance(owner, dict)
        and owner.get("kind") == "Notebook"
        and owner.get("controller") is True
        and owner.get("name") == name
        and (uid is None or owner.get("uid") in (None, uid))
        for owner in (owners if isinstance(owners, list) else [])
    )
