"""`NotebookWatcher`: list-then-watch of Notebooks (and the Warning events about them) across the
watched namespaces, and the route table the proxy reads, kept in step with them.

Each (kind, namespace) pair is one `Reflector`: list once, then watch from the list's
resourceVersion; when a watch ends, watch again from the last version seen; relist on 410 Gone;
back off exponentially while the API is down. Meanwhile the last known view keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass

from yarl import URL

from .kube_client import EVENTS, NOTEBOOKS, ApiError, JsonObject, Kind, KubeClient, WatchEvent
from .notebook_resource import is_routable

log = logging.getLogger(__name__)

RouteResolver = Callable[[str, str], URL]  # (namespace, name) -> the notebook's upstream origin
WATCH_TIMEOUT_S = 300.0  # the server ends a watch after about this long; we then resume it
MIN_BACKOFF_S, MAX_BACKOFF_S = 0.1, 30.0
QUICK_END_S = 1.0  # a watch that ends sooner than this with no events counts as a failure
# The Notebook controller re-emits its Pod's and StatefulSet's events onto the Notebook.
WARNINGS_SELECTOR = "involvedObject.kind=Notebook,type=Warning"


def service_resolver(cluster_domain: str) -> RouteResolver:
    """Kubeflow's Service for a notebook: `<name>.<namespace>.svc.<domain>`, port 80 (-> 8888)."""

    def resolve(namespace: str, name: str) -> URL:
        return URL(f"http://{name}.{namespace}.svc.{cluster_domain}:80")

    return resolve


class Reflector:
    """One kind of object in one namespace (or all of them), kept as `objects[namespace][name]`.

    `sync()` replaces the view with a fresh list; `run()` watches from there until cancelled.
    `on_change` hears every applied change: an event, or None after a sync replaced everything.
    """

    def __init__(
        self,
        client: KubeClient,
        kind: Kind,
        namespace: str | None,
        *,
        field_selector: str | None = None,
        on_change: Callable[[WatchEvent | None], None] = lambda change: None,
        watch_timeout_s: float = WATCH_TIMEOUT_S,
    ) -> None:
        self.client, self.kind, self.namespace = client, kind, namespace
        self.field_selector = field_selector
        self.on_change = on_change
        self.watch_timeout_s = watch_timeout_s
        self.objects: dict[str, dict[str, JsonObject]] = {}
        self.resource_version = ""  # "" until the first list, and again after a 410
        self.synced = False
        self.last_sync: float | None = None  # wall-clock time of the last successful list
        # For /readyz: when the API last answered (a list, a watch it accepted, an event), and the
        # failure it has not answered since (None while all is well).
        self.last_ok: float | None = None
        self.error: str | None = None
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # tests may record the backoff
        self._answered = False  # the current watch delivered an event

    @property
    def scope(self) -> str:
        return f"{self.kind.plural} in {self.namespace or 'every namespace'}"

    async def sync(self) -> None:
        try:
            listed = await self.client.list(self.kind, self.namespace, field_selector=self.field_selector)
        except ApiError as exc:
            self.error = str(exc)
            raise
        objects: dict[str, dict[str, JsonObject]] = {}
        for obj in listed.items:
            key = object_key(obj)
            if key is not None:
                objects.setdefault(key[0], {})[key[1]] = obj
        self.objects, self.resource_version = objects, listed.resource_version  # one swap: never half a view
        self.synced, self.last_sync = True, time.time()
        self._answered_now()
        log.info("listed %d %s at resourceVersion %s", len(listed.items), self.scope, listed.resource_version)
        self.on_change(None)

    async def run(self) -> None:
        """Watch until cancelled: resume after each watch, relist on 410, back off while the API fails."""
        delay = MIN_BACKOFF_S
        while True:
            self._answered = False
            started = time.monotonic()
            try:
                if not self.resource_version:
                    await self.sync()
                await self._watch()
                if self._answered or time.monotonic() - started >= QUICK_END_S:
                    delay = MIN_BACKOFF_S
                    continue
                # A watch that ends at once with nothing in it (a proxy cutting streams?): do not spin.
                log.warning("the watch of %s ended at once; retrying in %.1fs", self.scope, delay)
            except ApiError as exc:
                if exc.status == 410:
                    log.info("%s: resourceVersion %s expired; relisting", self.scope, self.resource_version)
                    self.resource_version = ""
                    continue
                delay = MIN_BACKOFF_S if self._answered else delay  # up until just now: back off afresh
                self.error = str(exc)
                log.warning("watching %s failed (%s); retrying in %.1fs", self.scope, exc, delay)
            except Exception as exc:  # a bug, or something unforeseen from the client: keep the last view, retry
                delay = MIN_BACKOFF_S if self._answered else delay
                self.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                log.exception("watching %s failed; retrying in %.1fs", self.scope, delay)
            await self.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)

    async def _watch(self) -> None:
        """One watch from `resource_version`, applying its events until the server ends it."""
        events = self.client.watch(
            self.kind,
            self.namespace,
            self.resource_version,
            timeout_s=self.watch_timeout_s,
            field_selector=self.field_selector,
            on_open=self._answered_now,
        )
        async with contextlib.aclosing(events):
            async for event in events:
                self._answered = True
                self._answered_now()
                self._apply(event)

    def _answered_now(self) -> None:
        self.last_ok, self.error = time.time(), None

    def _apply(self, event: WatchEvent) -> None:
        key = object_key(event.object)
        if event.type in ("ADDED", "MODIFIED") and key is not None:
            self.objects.setdefault(key[0], {})[key[1]] = event.object
        elif event.type == "DELETED" and key is not None:
            names = self.objects.get(key[0], {})
            names.pop(key[1], None)
            if not names:
                self.objects.pop(key[0], None)
        if event.resource_version:
            self.resource_version = event.resource_version  # a BOOKMARK only moves this forward
        if event.type != "BOOKMARK":
            self.on_change(event)


@dataclass(frozen=True, slots=True)
class WatchHealth:
    """Where some watches stand, for /readyz. `synced`: every first list came back (until then the view
    is empty or partial). `error`: one of them cannot reach the API now (the last view keeps serving).
    `last_ok`: wall-clock time the API last answered the one that has gone longest without."""

    subject: str
    synced: bool
    error: str | None = None
    last_ok: float | None = None


def watch_health(subject: str, reflectors: Iterable[Reflector]) -> WatchHealth:
    """The health of `reflectors` together: synced when all are, failing when one is."""
    reflectors = list(reflectors)
    failing = [reflector for reflector in reflectors if reflector.error is not None]
    stamps = [reflector.last_ok for reflector in failing or reflectors]
    answered = [stamp for stamp in stamps if stamp is not None]
    last_ok = min(answered) if answered and len(answered) == len(stamps) else None  # None: one never answered
    synced = bool(reflectors) and all(reflector.synced for reflector in reflectors)
    return WatchHealth(subject, synced, failing[0].error if failing else None, last_ok)


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
        self.routes: dict[tuple[str, str], URL] = {}

    @property
    def reflectors(self) -> list[Reflector]:
        return [*self.notebooks, *self.warnings]

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
        elif event.type != "DELETED" and is_routable(event.object):
            self.routes[key] = self._resolver(*key)
        else:
            self.routes.pop(key, None)

    def _rebuild_routes(self) -> None:
        self.routes = {
            (namespace, name): self._resolver(namespace, name)
            for namespace, name, obj in self._all_notebooks()
            if is_routable(obj)
        }

    def _all_notebooks(self) -> Iterator[tuple[str, str, JsonObject]]:
        for reflector in self.notebooks:
            for namespace, names in reflector.objects.items():
                for name, obj in names.items():
                    yield namespace, name, obj


def object_key(obj: JsonObject) -> tuple[str, str] | None:
    """(namespace, name) of an object, or None if it has no name."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return None
    namespace, name = metadata.get("namespace", ""), metadata.get("name")
    if not isinstance(name, str) or not name or not isinstance(namespace, str):
        return None
    return namespace, name


async def stop(task: asyncio.Task[None] | None, client: KubeClient | None) -> None:
    """Cancel a background task (a watch, a reconcile loop) and close its client, if it has one: the
    shutdown every such component shares."""
    if task is not None:
        # Cancel until it is done: a library may drop one cancel (Python 3.11's wait_for does when the
        # awaited thing finishes at the same moment), and a shutdown must not wait forever on that.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        if not task.cancelled() and task.exception() is not None:
            log.error("a watch ended with an error at shutdown", exc_info=task.exception())
    if client is not None:
        await client.close()
