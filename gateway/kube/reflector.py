"""`Reflector`: list-then-watch of one kind of object in one namespace (or all), kept as a local view.

List once, then watch from the list's resourceVersion; when a watch ends, watch again from the last version
seen; relist on 410 Gone; back off (exponentially, with jitter: `gateway.backoff`) while the API is down.
Meanwhile the last known view keeps serving. `watch_health()` sums up several reflectors for /readyz;
`stop()` is the shutdown they share.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from ..backoff import Backoff
from ..errors import KubernetesError, KubernetesGone
from .client import JsonObject, Kind, KubeClient, WatchEvent
from .watch_health import WatchHealth

log = logging.getLogger(__name__)

WATCH_TIMEOUT_S = 300.0  # the server ends a watch after about this long; we then resume it
MIN_BACKOFF_S, MAX_BACKOFF_S = 0.1, 30.0
QUICK_END_S = 1.0  # a watch that ends sooner than this with no events counts as a failure


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
        self.backoff = Backoff(MIN_BACKOFF_S, MAX_BACKOFF_S)  # jittered: replicas do not retry in step
        self._answered = False  # the current watch delivered an event

    @property
    def scope(self) -> str:
        return f"{self.kind.plural} in {self.namespace or 'every namespace'}"

    async def sync(self) -> None:
        try:
            listed = await self.client.list(self.kind, self.namespace, field_selector=self.field_selector)
        except KubernetesError as exc:
            self.error = exc.description
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
        while True:
            self._answered = False
            started = time.monotonic()
            try:
                if not self.resource_version:
                    await self.sync()
                await self._watch()
                if self._answered or time.monotonic() - started >= QUICK_END_S:
                    self.backoff.reset()
                    continue
                # A watch that ends at once with nothing in it (a proxy cutting streams?): do not spin.
                delay = self.backoff.next()
                log.warning("the watch of %s ended at once; retrying in %.1fs", self.scope, delay)
            except KubernetesGone:
                log.info("%s: resourceVersion %s expired; relisting", self.scope, self.resource_version)
                self.resource_version = ""
                continue
            except KubernetesError as exc:
                delay = self._failed(exc.description)
                log.warning("watching %s failed (%s); retrying in %.1fs", self.scope, exc.description, delay)
            except Exception as exc:  # a bug, or something unforeseen from the client: keep the last view, retry
                delay = self._failed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
                log.exception("watching %s failed; retrying in %.1fs", self.scope, delay)
            await self.sleep(delay)

    def _failed(self, error: str) -> float:
        """Record a failure; the wait before the next try (afresh if the API answered until just now)."""
        if self._answered:
            self.backoff.reset()
        self.error = error
        return self.backoff.next()

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


def watch_health(subject: str, reflectors: Iterable[Reflector]) -> WatchHealth:
    """The health of `reflectors` together: synced when all are, failing when one is."""
    reflectors = list(reflectors)
    failing = [reflector for reflector in reflectors if reflector.error is not None]
    stamps = [reflector.last_ok for reflector in failing or reflectors]
    answered = [stamp for stamp in stamps if stamp is not None]
    last_ok = min(answered) if answered and len(answered) == len(stamps) else None  # None: one never answered
    synced = bool(reflectors) and all(reflector.synced for reflector in reflectors)
    return WatchHealth(subject, synced, failing[0].error if failing else None, last_ok)


def object_key(obj: JsonObject) -> tuple[str, str] | None:
    """(namespace, name) of an object, or None if it has no name."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return None
    namespace, name = metadata.get("namespace", ""), metadata.get("name")
    if not isinstance(name, str) or not name or not isinstance(namespace, str):
        return None
    return namespace, name


async def stop(task: asyncio.Task[None] | None) -> None:
    """Cancel a background task (a watch, a reconcile loop) and wait for it: the shutdown every such
    component shares. The client it used is not its to close (app.py closes the one client last)."""
    if task is None:
        return
    # Cancel until it is done: a library may drop one cancel (Python 3.11's wait_for does when the
    # awaited thing finishes at the same moment), and a shutdown must not wait forever on that.
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.cancelled() and task.exception() is not None:
        log.error("a watch ended with an error at shutdown", exc_info=task.exception())
