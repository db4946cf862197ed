"""`Activity`: when each notebook server was last used, as the gateway sees it, shared by replicas.

The proxy calls `touch()` for every request and every WebSocket message it relays to a notebook
server. That is the hot path, so `touch()` is one clock read and one dict store, no I/O: what it
records is flushed to Redis by a background task at most every `flush_interval_s` (one `ZADD GT`
per flush for every server touched meanwhile, so replicas only ever move a time forward). Readers
(the list page, the API, the culler) merge Redis with what this replica has not flushed yet.

Without Redis (dev's memory sessions) the record is this process's alone.

Only servers the proxy actually routed to are touched (after authorization and a successful route
lookup), so the keys are bounded by the notebooks that exist; `max_tracked` caps them anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime

import redis.asyncio as redis

log = logging.getLogger(__name__)

REDIS_KEY = "notebook-gateway:activity"  # a sorted set: member "<namespace>/<name>", score a Unix time
FLUSH_INTERVAL_S = 5.0
MAX_TRACKED = 20_000  # servers one replica keeps unflushed times for; beyond, new ones wait for a flush
# Jupyter's front ends poll these on a timer while a tab is open (and visible), without the user doing
# anything; counted, they would keep an abandoned tab's server alive forever. GET only, exact paths.
BACKGROUND_POLLS = frozenset(
    {"api/kernels", "api/sessions", "api/terminals", "api/kernelspecs", "api/me", "api/status"}
)

Key = tuple[str, str]  # (namespace, name)


def rfc3339(timestamp: float) -> str:
    """A Unix time as Kubeflow's culler writes `notebooks.kubeflow.org/last-activity` (RFC 3339, UTC, seconds)."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_user_activity(method: str, rest: str) -> bool:
    """Whether a proxied HTTP request (its path after the notebook's prefix) counts as use of the server."""
    return not (method == "GET" and rest.rstrip("/") in BACKGROUND_POLLS)


class Activity:
    """Each notebook server's last activity (Unix seconds). `clock` is the wall clock (tests inject one)."""

    def __init__(
        self,
        client: redis.Redis | None,
        clock: Callable[[], float],
        *,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        max_tracked: int = MAX_TRACKED,
        alive: Callable[[str, str], object] | None = None,
    ) -> None:
        self.client = client
        self.clock = clock
        self.flush_interval_s = flush_interval_s
        self.max_tracked = max_tracked
        self._pending: dict[Key, float] = {}  # touched since the last flush
        self._known: dict[Key, float] = {}  # flushed by this replica, or read back from Redis
        self._task: asyncio.Task[None] | None = None
        # Whether a server still runs (the backend's route lookup): the others' times leave /metrics.
        self.alive = alive

    # -- the hot path ----------------------------------------------------------------------------

    def touch_request(self, namespace: str, name: str, method: str, rest: str) -> None:
        """A proxied HTTP request: counted unless it is one of the front ends' background polls."""
        if is_user_activity(method, rest):
            self.touch(namespace, name)

    def touch(self, namespace: str, name: str) -> None:
        """Someone used this server now. No I/O; at most one flush per interval carries it to Redis."""
        key = (namespace, name)
        if len(self._pending) >= self.max_tracked and key not in self._pending:
            return  # a flush is overdue (Redis down for long): known servers keep being timed
        self._pending[key] = self.clock()

    # -- reads -----------------------------------------------------------------------------------

    async def last(self, keys: Iterable[Key]) -> dict[Key, float]:
        """The last activity of each of `keys` that has one: the newest of Redis and this replica's."""
        wanted = list(dict.fromkeys(keys))
        found = {key: self._latest_local(key) for key in wanted}
        if self.client is not None and wanted:
            try:
                scores = await self.client.zmscore(REDIS_KEY, [_member(key) for key in wanted])
            except (redis.RedisError, OSError) as exc:
                log.warning("last activity: Redis did not answer (%s); showing this replica's view", exc)
            else:
                for key, score in zip(wanted, scores, strict=True):
                    if score is not None:
                        self._known[key] = max(float(score), self._known.get(key, 0.0))
                        found[key] = max(float(score), found[key] or 0.0)
        return {key: value for key, value in found.items() if value}

    def snapshot(self) -> Mapping[Key, float]:
        """This replica's view, for /metrics (no I/O)."""
        merged = dict(self._known)
        for key, value in self._pending.items():
            merged[key] = max(value, merged.get(key, 0.0))
        return merged

    def _latest_local(self, key: Key) -> float:
        return max(self._pending.get(key, 0.0), self._known.get(key, 0.0))

    # -- writes ----------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Send what was touched since the last flush to Redis; kept for the next try if Redis fails."""
        self._prune()
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        for key, value in pending.items():
            self._known[key] = max(value, self._known.get(key, 0.0))
        if self.client is None:
            return
        try:
            # GT: a replica's older time never replaces a newer one another replica wrote.
            await self.client.zadd(REDIS_KEY, {_member(key): value for key, value in pending.items()}, gt=True)
        except (redis.RedisError, OSError) as exc:
            log.warning("last activity: could not write to Redis (%s); retrying at the next flush", exc)
            for key, value in pending.items():
                self._pending[key] = max(value, self._pending.get(key, 0.0))

    async def forget(self, namespace: str, name: str) -> None:
        """The server was deleted: a new one of the same name starts with no history."""
        key = (namespace, name)
        self._pending.pop(key, None)
        self._known.pop(key, None)
        if self.client is not None:
            try:
                await self.client.zrem(REDIS_KEY, _member(key))
            except (redis.RedisError, OSError) as exc:
                log.warning("last activity of %s/%s not removed from Redis: %s", namespace, name, exc)

    async def retain(self, keys: Iterable[Key]) -> None:
        """Forget every server but `keys` (those that exist): servers deleted outside the gateway
        (kubectl) leave no time behind in Redis. Called by the culler's round, once across replicas."""
        if self.client is None:
            return
        keep = {_member(key) for key in keys}
        try:
            members = await self.client.zrange(REDIS_KEY, 0, -1)
            names = [member.decode() if isinstance(member, bytes) else str(member) for member in members]
            gone = [name for name in names if name not in keep]
            if gone:
                await self.client.zrem(REDIS_KEY, *gone)
        except (redis.RedisError, OSError) as exc:
            log.warning("last activity: could not clear deleted servers from Redis: %s", exc)

    def _prune(self) -> None:
        """Drop this replica's flushed times for servers that no longer run (bounds /metrics to running
        servers; Redis keeps them for the list page and the culler)."""
        if self.alive is not None:
            for key in [key for key in self._known if not self.alive(*key)]:
                del self._known[key]

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="activity-flush")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()  # what this replica saw last is not lost at shutdown

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self.flush()
            except Exception:  # never let the flusher die: activity would stop being shared
                log.exception("last activity: flush failed")


def _member(key: Key) -> str:
    return f"{key[0]}/{key[1]}"  # both are DNS labels: "/" cannot occur in either
