"""`RedisSink`: ships the audit files to a capped Redis stream (the cluster-wide view every replica
writes to) with per-user, per-namespace and per-notebook indexes, and searches them.

The local audit files are the spool: the shipper reads events from them in order and records, in
the same atomic Lua call, how far this directory's chain has been shipped. When Redis is down
nothing is lost or reordered; when it returns (or after a crash) shipping resumes where it stopped.

Keys (prefix `ngw:audit`): the stream `ngw:audit` (field `e`: the stored line; `c`: the chain id of
the directory it came from, since every replica's chain numbers its events from 1), sorted sets
`ngw:audit:u:<user>`, `ngw:audit:ns:<namespace>`, `ngw:audit:nb:<namespace>/<notebook>` of stream
ids scored by time, and `ngw:audit:shipped:<chain id>`. Not for Redis Cluster (the script writes
keys it is not given).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import redis.asyncio as redis
from redis.exceptions import RedisError

from ..backoff import Backoff
from .query import BadQuery, Filter, Page, PageFiller, StoreUnavailable
from .segments import ChainReader, Stored

log = logging.getLogger(__name__)

PREFIX = "ngw:audit"
BATCH = 500  # events per script call (stream ids within one millisecond must stay under 1000)
UNTIL_SLACK_MS = 3_600_000  # replayed events reach the stream after their time; look this far past `until`
MIN_BACKOFF_S, MAX_BACKOFF_S = 0.5, 30.0  # between shipping attempts while Redis is down (jittered)

# KEYS: the stream, this chain's shipped position. ARGV: MAXLEN ("0": none), MINID ms ("0": none),
# the batch's last seq, the rank bound that trims an index to MAXLEN, the index TTL (seconds), the
# chain id, then four values per event: the line and its user, namespace and notebook index keys ("" for none).
SHIP = """
local n = (#ARGV - 6) / 4
for i = 0, n - 1 do
  local base = 7 + i * 4
  local id
  if ARGV[1] ~= '0' then
    id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[base], 'c', ARGV[6])
  else
    id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[base], 'c', ARGV[6])
  end
  local dash = string.find(id, '-', 1, true)
  local seq = tonumber(string.sub(id, dash + 1))
  if seq > 999 then seq = 999 end
  local score = string.sub(id, 1, dash - 1) .. string.format('%03d', seq)
  for j = 1, 3 do
    local key = ARGV[base + j]
    if key ~= '' then
      redis.call('ZADD', key, score, id)
      if ARGV[1] ~= '0' then redis.call('ZREMRANGEBYRANK', key, 0, ARGV[4]) end
      if ARGV[2] ~= '0' then
        redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ARGV[2] .. '000')
        redis.call('EXPIRE', key, ARGV[5])
      end
    end
  end
end
if ARGV[2] ~= '0' then redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[2]) end
redis.call('SET', KEYS[2], ARGV[3])
return n
"""


class RedisAuditStore:
    """Searches the stream, through the narrowest index a filter allows."""

    source = "redis"

    def __init__(self, client: redis.Redis, prefix: str = PREFIX) -> None:
        self.client, self.prefix = client, prefix

    # -- as a store --------------------------------------------------------------------------------

    async def search(self, filter: Filter, *, cursor: str | None = None, limit: int = 100) -> Page:
        before = _parse_cursor(cursor)
        try:
            key = self._index_for(filter)
            if key is not None:
                return await self._search_index(key, filter, before, limit)
            return await self._search_stream(filter, before, limit)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"the audit stream in Redis cannot be read: {exc}") from exc

    def _index_for(self, filter: Filter) -> str | None:
        """The narrowest index for a filter, or None to walk the stream."""
        if filter.notebook is not None and filter.namespace is not None:
            return f"{self.prefix}:nb:{filter.namespace}/{filter.notebook}"
        if filter.user is not None:
            return f"{self.prefix}:u:{filter.user}"
        if filter.namespace is not None:
            return f"{self.prefix}:ns:{filter.namespace}"
        return None

    async def _search_index(self, key: str, filter: Filter, before: str | None, limit: int) -> Page:
        high = f"({_score(before)}" if before else "+inf"
        if filter.until is not None:
            bound = _score(f"{_ms(filter.until) + UNTIL_SLACK_MS}-999")
            high = bound if high == "+inf" or int(bound) < int(high[1:]) else high
        low = _score(f"{_ms(filter.since)}-0") if filter.since is not None else "-inf"
        chunk = limit if not filter.text else max(limit, 1000)
        filling = PageFiller(filter, limit)
        while True:
            members = await self.client.zrevrangebyscore(key, high, low, start=0, num=chunk)
            ids = [member.decode() if isinstance(member, bytes) else str(member) for member in members]
            pipe = self.client.pipeline(transaction=False)
            for stream_id in ids:
                pipe.xrange(self.prefix, stream_id, stream_id, count=1)
            results = await pipe.execute() if ids else []
            for stream_id, entries in zip(ids, results, strict=True):
                # An id the index still names may have been trimmed from the stream: counted, not kept.
                if filling.take(_record(entries[0][1]) if entries else None):
                    return filling.page(f"r{stream_id}")
            if len(ids) < chunk:
                return filling.page(None)
            high = f"({_score(ids[-1])}"
            if filling.over_budget:
                return filling.page(f"r{ids[-1]}")

    async def _search_stream(self, filter: Filter, before: str | None, limit: int) -> Page:
        high = f"({before}" if before else "+"
        if filter.until is not None and high == "+":
            high = str(_ms(filter.until) + UNTIL_SLACK_MS)
        low = str(_ms(filter.since)) if filter.since is not None else "-"
        chunk = limit if not (filter.text or filter.action or filter.outcome) else max(limit, 1000)
        filling = PageFiller(filter, limit)
        while True:
            entries = await self.client.xrevrange(self.prefix, max=high, min=low, count=chunk) or []
            for raw_id, fields in entries:
                stream_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
                high = f"({stream_id}"
                if filling.take(_record(fields)):
                    return filling.page(f"r{stream_id}")
            if len(entries) < chunk:
                return filling.page(None)
            if filling.over_budget:
                return filling.page(f"r{high[1:]}")


class RedisSink(RedisAuditStore):
    """Follows the audit files into Redis (and, as a store, searches what is there)."""

    name = "redis"  # the `sink` label of its failures on /metrics

    def __init__(
        self,
        client: redis.Redis,
        directory: Path,
        *,
        chain_id: Callable[[], str],
        latest_seq: Callable[[], int],
        max_events: int = 1_000_000,
        max_age_s: float | None = None,
        prefix: str = PREFIX,
    ) -> None:
        super().__init__(client, prefix)
        self.directory = directory
        self.chain_id, self.latest_seq = chain_id, latest_seq
        self.max_events, self.max_age_s = max_events, max_age_s
        self.shipped = 0  # seq of the last event known to be in Redis
        # Until Redis has said how far it got (it may be down at start-up), `spooled` counts from here.
        self._known_from: int | None = None
        self.down: str | None = None  # why shipping is failing, while it is
        self.failures = 0  # attempts to ship that failed
        self._script = client.register_script(SHIP)
        self._reader = ChainReader(directory)
        self._positioned = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Set by stop(): cancel() alone can be lost. On Python 3.11, asyncio.wait_for (which redis-py uses
        # to send a command) drops a cancellation that lands as the send completes; the loop would run on.
        self._stopping = False

    # -- as a sink ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._known_from = self.latest_seq()
        self._task = asyncio.create_task(self._run(), name="audit-redis")

    def accept(self, record: dict[str, object]) -> None:
        self._wake.set()

    async def stop(self, timeout_s: float = 3.0) -> None:
        """Ship what is left if Redis answers quickly; otherwise it goes on the next start."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            self._task.cancel()
            # Wait for the shipper to end without swallowing a cancel aimed at whoever is stopping us.
            await asyncio.wait({self._task})
        if self.down is None:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self.ship()

    def problem(self) -> str | None:
        return None  # events wait safely in the files; /readyz already reports Redis itself

    @property
    def backlog(self) -> int:
        """Events written to the files but not yet in Redis."""
        return max(0, self.latest_seq() - self.shipped)

    @property
    def spooled(self) -> int:
        """`backlog` for /metrics. Before Redis has first answered, only the events written since start-up
        are counted (a lower bound): how far an earlier process got is kept in Redis."""
        if self._known_from is not None:
            return max(0, self.latest_seq() - self._known_from)
        return self.backlog

    async def _run(self) -> None:
        backoff = Backoff(MIN_BACKOFF_S, MAX_BACKOFF_S)
        while not self._stopping:
            try:
                await self.ship()
                if self.down is not None:
                    log.warning("audit: Redis answers again; shipped the spooled events (up to %d)", self.shipped)
                self.down = None
                backoff.reset()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._wake.wait()
                self._wake.clear()
            except (RedisError, OSError) as exc:
                if self.down is None:
                    log.warning("audit: cannot ship events to Redis (%s); they wait in %s", exc, self.directory)
                self.down = str(exc) or type(exc).__name__
                self.failures += 1
                self._positioned = False  # ask Redis where it got to once it is back
                if not self._stopping:
                    await asyncio.sleep(backoff.next())

    async def ship(self) -> int:
        """Send every event written since the last call; returns how many."""
        if not self._positioned:
            raw = await self.client.get(self._position_key())
            if raw is not None:
                after = int(raw)
            else:  # a new Redis (or a new chain): refill it, but not beyond what it would keep
                after = max(0, self.latest_seq() - self.max_events)
            await asyncio.to_thread(self._reader.seek, after)
            self.shipped, self._positioned, self._known_from = after, True, None
        total = 0
        while batch := await asyncio.to_thread(self._reader.read, BATCH):
            try:
                await self._script(keys=[self.prefix, self._position_key()], args=self._arguments(batch))
            except BaseException:
                self._positioned = False  # the reader moved past events that may not have been sent
                raise
            self.shipped = batch[-1].seq
            total += len(batch)
        return total

    def _position_key(self) -> str:
        return position_key(self.prefix, self.chain_id())

    def _arguments(self, batch: list[Stored]) -> list[str | bytes]:
        min_ms = int((time.time() - self.max_age_s) * 1000) if self.max_age_s else 0
        index_ttl_s = int(self.max_age_s) + 60 if self.max_age_s else 0
        args: list[str | bytes] = [str(self.max_events), str(min_ms), str(batch[-1].seq), f"-{self.max_events + 1}"]
        args += [str(index_ttl_s), self.chain_id()]
        for stored in batch:
            record = stored.record
            actor, namespace, notebook = record.get("actor"), record.get("namespace"), record.get("notebook")
            args.append(stored.line)
            args.append(f"{self.prefix}:u:{actor}" if isinstance(actor, str) and actor != "-" else "")
            args.append(f"{self.prefix}:ns:{namespace}" if isinstance(namespace, str) else "")
            args.append(f"{self.prefix}:nb:{namespace}/{notebook}" if isinstance(notebook, str) and namespace else "")
        return args


def position_key(prefix: str, chain_id: str) -> str:
    """Where Redis keeps the seq of the last event of a chain that reached the stream."""
    return f"{prefix}:shipped:{chain_id}"


def _parse_cursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    ms, _, seq = cursor[1:].partition("-")
    if not (cursor.startswith("r") and ms.isdigit() and seq.isdigit()):
        raise BadQuery("this cursor was not made by this audit store", "cursor")
    return cursor[1:]


def _score(stream_id: str) -> str:
    """A stream id as the index score the script gives it: milliseconds, then 3 digits of sequence."""
    ms, _, seq = stream_id.partition("-")
    return f"{ms}{min(int(seq or 0), 999):03d}"


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _record(fields: object) -> dict[str, object] | None:
    raw = fields.get(b"e") if isinstance(fields, dict) else None
    if not isinstance(raw, bytes | str):
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
