"""`SessionCache`: the sessions this replica read from Redis lately, kept in memory so that a busy browser's
requests need no Redis round trip, and dropped the moment any replica changes or ends one.

Every write of a session (save, sign-out, back-channel logout, expiry by refresh failure) publishes the
session's id on one Redis channel in the same transaction as the write (`sessions.RedisSessionStore`), and
each replica listens on it (`run`): an id heard is dropped from the cache at once, so a sign-out on one
replica ends the session on every other within the channel's delivery time (milliseconds).

Failing closed: the cache is trusted only while the channel is known to be live. The listener pings Redis on
the subscribed connection every `PING_INTERVAL_S`; Redis answers in order on that connection, so a pong to a
ping sent at moment t proves every invalidation published before t has been heard. The cache answers only while
such a moment is at most `LIVENESS_S` old; otherwise (connection lost, Redis restarted or stalled, this
replica's loop starved) every read goes to Redis as it would without the cache, and the entries are cleared
when the channel comes back, since invalidations may have been missed meanwhile. A read whose Redis answer
raced an invalidation is not cached (`epoch`). Entries also age out after `max_age_s` whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Generic, TypeVar

import redis.asyncio as redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from .backoff import Backoff

Session = TypeVar("Session")  # sessions.Session, which imports this module

log = logging.getLogger(__name__)

PING_INTERVAL_S = 0.1
# Longest the cache is trusted after the channel last proved itself; with the WebSocket re-check (1 s) this
# bounds how long a sign-out can go unseen on a replica whose channel died silently.
LIVENESS_S = 0.5
STALLED_S = 2.0  # no pong for this long: the connection is dropped and made again
ENTRIES_MAX = 100_000  # sessions cached per replica; cleared when full (the cost: one Redis read each)


class SessionCache(Generic[Session]):
    def __init__(self, client: redis.Redis, channel: str, *, max_age_s: float) -> None:
        self.client, self.channel, self.max_age_s = client, channel, max_age_s
        self._entries: dict[str, tuple[float, Session]] = {}  # id -> (monotonic time cached, session)
        self.epoch = 0  # bumped by every invalidation heard, and when trust is lost or regained
        self._proven_at = -1e18  # monotonic moment up to which every invalidation has been heard
        self._pings: dict[str, float] = {}  # payload -> send time, of the pings not answered yet

    def trusted(self) -> bool:
        return time.monotonic() - self._proven_at <= LIVENESS_S

    def get(self, session_id: str) -> Session | None:
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        now = time.monotonic()
        if now - self._proven_at > LIVENESS_S or now - entry[0] > self.max_age_s:
            return None
        return entry[1]

    def put(self, session_id: str, session: Session, epoch: int) -> None:
        """Remember a session read from Redis, unless an invalidation was heard since the read began (`epoch`)."""
        if epoch != self.epoch or not self.trusted():
            return
        if len(self._entries) >= ENTRIES_MAX:
            self._entries.clear()
        self._entries[session_id] = (time.monotonic(), session)

    def drop(self, session_ids: list[str]) -> None:
        self.epoch += 1
        for session_id in session_ids:
            self._entries.pop(session_id, None)

    def _distrust(self) -> None:
        """Until a ping sent from now on is answered, nothing is served from the cache, and what it held is gone."""
        self._proven_at = -1e18
        self._pings.clear()
        self._entries.clear()
        self.epoch += 1

    async def run(self) -> None:
        """Listen for invalidations until cancelled, reconnecting after any failure (the cache is off meanwhile)."""
        backoff = Backoff(0.1, 5.0)
        failed_before = False
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                await self._listen(pubsub, backoff)
            except (RedisError, OSError) as exc:
                # Once per outage (and at the first attempt: a Redis ACL user without @pubsub never gets further).
                if self._proven_at > 0 or not failed_before:
                    log.warning("session cache off: its invalidation channel failed (%s); reading Redis", exc)
                failed_before = True
            finally:
                self._distrust()
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(backoff.next())

    async def _listen(self, pubsub: PubSub, backoff: Backoff) -> None:
        sent = 0
        next_ping = 0.0
        while True:
            now = time.monotonic()
            if now >= next_ping:
                if self._pings and now - min(self._pings.values()) > STALLED_S:
                    raise RedisError("the invalidation channel stopped answering pings")
                sent += 1
                self._pings[str(sent)] = now
                await pubsub.ping(str(sent))  # numbered: an answer names the moment it vouches for
                next_ping = now + PING_INTERVAL_S
            message = await pubsub.get_message(timeout=max(next_ping - time.monotonic(), 0.0))
            if message is None:
                continue
            kind, data = message["type"], message["data"]
            text = data.decode() if isinstance(data, bytes) else str(data)
            if kind == "message":
                self.drop(text.split())
            elif kind == "pong":
                sent_at = self._pings.pop(text, None)
                if sent_at is None:
                    continue  # a ping from before a reconnection: it vouches for nothing
                for older in [key for key, at in self._pings.items() if at < sent_at]:
                    del self._pings[older]  # answered in order: those were lost with an old connection
                if sent_at > self._proven_at:
                    if self._proven_at < 0:
                        log.info("session cache on: listening for invalidations on %s", self.channel)
                    self._proven_at = sent_at
                    backoff.reset()
            elif kind == "subscribe":
                # The first subscription, or redis-py resubscribing after it reconnected by itself: either way,
                # invalidations published while this connection was not subscribed were never heard.
                self._distrust()


def invalidation_channel(prefix: str) -> str:
    return prefix + "sessions-changed"
