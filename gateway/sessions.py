"""Server-side sessions and pending sign-ins: the `SessionStore` protocol, with a Redis store
(production: shared by every replica) and a memory store (dev mode only)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

import redis.asyncio as redis
from redis.exceptions import RedisError

from .errors import ServiceUnavailable
from .identity import Identity
from .session_cache import SessionCache, invalidation_channel

Clock = Callable[[], float]

# last_seen is written back at most this often, so a busy session costs one write a minute, not one a request
# (more often only for idle timeouts under a few minutes, which would otherwise end a busy session).
TOUCH_INTERVAL_S = 60.0


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser. The id is the secret in the cookie; tokens never leave the store."""

    id: str
    identity: Identity
    created_at: float
    last_seen: float
    id_token: str | None = None  # for id_token_hint at sign-out
    refresh_token: str | None = None
    tokens_expire_at: float | None = None  # refresh before this
    provider_sid: str | None = None  # the provider's `sid` and `sub`, for back-channel logout
    provider_sub: str | None = None

    def to_json(self) -> str:
        data = asdict(self)
        data["identity"]["groups"] = list(self.identity.groups)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str | bytes) -> Session:
        data: dict[str, Any] = json.loads(text)
        ident = data.pop("identity")
        identity = Identity(ident["subject"], ident.get("email"), tuple(ident.get("groups", ())), ident["method"])
        return cls(identity=identity, **data)


@dataclass(frozen=True, slots=True)
class Expiry:
    idle_s: float
    max_age_s: float

    def remaining_s(self, session: Session, now: float) -> float:
        """Seconds until the session ends by idleness or age, whichever is first (<= 0: ended)."""
        return min(session.last_seen + self.idle_s, session.created_at + self.max_age_s) - now

    def due_touch(self, session: Session, now: float) -> bool:
        """Whether a use of the session now should be written back as its last use."""
        return now - session.last_seen >= min(TOUCH_INTERVAL_S, self.idle_s / 4)


class SessionStore(Protocol):
    """Sessions (by id) and pending sign-ins (by state), both with expiry.

    `load` returns None for an unknown or expired session and refreshes its idle timer, unless told
    the use is not the user's (`touch=False`: a page polling in the background); it never extends
    the absolute age. `take_login` returns a pending sign-in once, then never again.
    Every method raises `errors.ServiceUnavailable` when the store cannot answer: an outage is
    never reported as "no session", so nothing is let through or silently signed out.
    """

    async def save(self, session: Session) -> None: ...

    async def load(self, session_id: str, *, touch: bool = True) -> Session | None: ...

    async def delete(self, session_id: str) -> None: ...

    async def delete_for(self, *, provider_sub: str | None = None, provider_sid: str | None = None) -> int:
        """End every session of a provider's user (`sub`), or of one provider session (`sid`), or of
        that session of that user when both are given; return how many ended."""
        ...

    async def put_login(self, state: str, data: dict[str, str], ttl_s: float) -> None: ...

    async def take_login(self, state: str) -> dict[str, str] | None: ...

    async def revoke(self, marks: Revocation) -> None:
        """Bearer credentials that must no longer work: the tokens of a signed-out session, every token of a
        provider session (`sid`), or every token of a user (`sub`) issued up to a moment. Kept as long as a
        session can live, which outlasts the tokens a session is handed."""
        ...

    async def revoked(self, marks: Revocation) -> bool:
        """Whether a token carrying `marks` (its hash, `sid`, `sub` and issue time) was revoked."""
        ...

    async def ping(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Revocation:
    """What identifies bearer tokens to refuse (to `revoke`) or one token to check (to `revoked`).
    `issued_at`: to `revoke`, the moment up to which `sub`'s tokens are refused; to `revoked`, the token's `iat`."""

    token_hash: str | None = None
    sid: str | None = None
    sub: str | None = None
    issued_at: float = 0.0

    def keys(self) -> list[str]:
        return [key for key in (_mark("tok", self.token_hash), _mark("sid", self.sid), _mark("sub", self.sub)) if key]


def _mark(kind: str, value: str | None) -> str | None:
    return f"{kind}:{value}" if value else None


def token_hash(token: str) -> str:
    """How a revoked token is remembered: never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


class MemorySessionStore:
    """Sessions in this process only: lost on restart, invisible to other replicas. Dev mode only."""

    def __init__(self, expiry: Expiry, clock: Clock = time.time) -> None:
        self.expiry, self.clock = expiry, clock
        self._sessions: dict[str, Session] = {}
        self._logins: dict[str, tuple[float, dict[str, str]]] = {}
        self._revoked: dict[str, tuple[float, float]] = {}  # mark -> (expires, revoked up to)

    async def revoke(self, marks: Revocation) -> None:
        now = self.clock()
        self._revoked = {key: entry for key, entry in self._revoked.items() if entry[0] > now}  # drop the stale
        for key in marks.keys():
            self._revoked[key] = (now + self.expiry.max_age_s, max(marks.issued_at, self._revoked.get(key, (0, 0))[1]))

    async def revoked(self, marks: Revocation) -> bool:
        now = self.clock()
        found = [self._revoked.get(key) for key in marks.keys()]
        return any(
            _refuses(key, entry[1], marks)
            for key, entry in zip(marks.keys(), found, strict=True)
            if entry and entry[0] > now
        )

    async def save(self, session: Session) -> None:
        self._sessions[session.id] = session

    async def load(self, session_id: str, *, touch: bool = True) -> Session | None:
        session = self._sessions.get(session_id)
        now = self.clock()
        if session is None or self.expiry.remaining_s(session, now) <= 0:
            self._sessions.pop(session_id, None)
            return None
        if touch and self.expiry.due_touch(session, now):
            session = self._sessions[session_id] = replace(session, last_seen=now)
        return session

    async def delete(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    async def delete_for(self, *, provider_sub: str | None = None, provider_sid: str | None = None) -> int:
        doomed = [s.id for s in self._sessions.values() if _matches(s, provider_sub, provider_sid)]
        for session_id in doomed:
            del self._sessions[session_id]
        return len(doomed)

    async def put_login(self, state: str, data: dict[str, str], ttl_s: float) -> None:
        self._logins[state] = (self.clock() + ttl_s, data)

    async def take_login(self, state: str) -> dict[str, str] | None:
        entry = self._logins.pop(state, None)
        return entry[1] if entry and entry[0] > self.clock() else None

    async def ping(self) -> None:
        return None


def _refuses(key: str, revoked_up_to: float, marks: Revocation) -> bool:
    """A revoked token hash or provider session is refused outright; a user's tokens only up to the moment."""
    return not key.startswith("sub:") or marks.issued_at <= revoked_up_to


def _matches(session: Session, provider_sub: str | None, provider_sid: str | None) -> bool:
    if provider_sub is None and provider_sid is None:
        return False
    return (provider_sub is None or session.provider_sub == provider_sub) and (
        provider_sid is None or session.provider_sid == provider_sid
    )


VALIDATED_MAX = 100_000  # sessions remembered for the outage grace, per replica


class RedisSessionStore:
    """Sessions in Redis, so every replica sees a sign-in and a sign-out at once.

    Keys: `<prefix>s:<id>` (the session, expiring with it), `<prefix>sub:<provider sub>` and
    `<prefix>sid:<provider sid>` (sets of session ids, for back-channel logout),
    `<prefix>login:<state>` (a pending sign-in, read once with GETDEL).
    """

    def __init__(
        self,
        client: redis.Redis,
        expiry: Expiry,
        clock: Clock = time.time,
        prefix: str = "ngw:",
        *,
        outage_grace_s: float = 0.0,
        cache: SessionCache[Session] | None = None,
        announce: bool = False,
    ) -> None:
        self.client, self.expiry, self.clock, self.prefix = client, expiry, clock, prefix
        # With `announce` (the session cache on), every write of a session is published on this channel in the same
        # transaction, for the replicas' caches. Off, no PUBLISH is sent: a Redis ACL user without @pubsub still works.
        self.channel = invalidation_channel(prefix) if announce else None
        self.cache = cache
        self._reads = _ReadBatcher(client)
        # Off (0) by default: while Redis cannot be reached, a session this replica read from Redis at most
        # this long ago is still honoured. The price: a sign-out made on another replica in the last
        # `outage_grace_s` before the outage is seen here only once Redis answers again (docs/operators.md).
        self.outage_grace_s = outage_grace_s
        self._validated: dict[str, tuple[float, Session]] = {}  # id -> (when Redis last vouched, session)

    async def save(self, session: Session) -> None:
        ttl_ms = int(self.expiry.remaining_s(session, self.clock()) * 1000)
        if ttl_ms <= 0:
            return
        async with _available():
            pipe = self.client.pipeline(transaction=True)
            pipe.set(self._key(session.id), session.to_json(), px=ttl_ms)
            if self.channel:
                pipe.publish(self.channel, session.id)
            for index in self._indexes(session):
                pipe.sadd(index, session.id)
                # The index lives as long as its longest session could; stale ids in it are harmless.
                pipe.expire(index, int(self.expiry.max_age_s) + 60)
            await pipe.execute()

    async def load(self, session_id: str, *, touch: bool = True) -> Session | None:
        cache = self.cache
        if cache is not None:
            cached = cache.get(session_id)
            if cached is not None:
                now = self.clock()
                if self.expiry.remaining_s(cached, now) > 0 and not (touch and self.expiry.due_touch(cached, now)):
                    return cached
            epoch = cache.epoch
        try:
            async with _available():
                raw = await self._reads.get(self._key(session_id))
        except ServiceUnavailable:
            recent = self._validated.get(session_id) if self.outage_grace_s > 0 else None
            now = self.clock()
            if recent is None or now - recent[0] > self.outage_grace_s or self.expiry.remaining_s(recent[1], now) <= 0:
                raise
            return recent[1]  # not touched: nothing can be written now, and the idle timer is Redis's to keep
        if raw is None:
            self._validated.pop(session_id, None)
            return None
        session = self._reads.parse(raw)
        now = self.clock()
        if self.expiry.remaining_s(session, now) <= 0:
            await self.delete(session_id)
            return None
        if self.outage_grace_s > 0:
            if len(self._validated) >= VALIDATED_MAX:
                self._validated.clear()  # bounded memory; the cost is only a shorter grace for some sessions
            self._validated[session_id] = (now, session)
        if touch and self.expiry.due_touch(session, now):
            session = replace(session, last_seen=now)
            await self.save(session)
        elif cache is not None:
            cache.put(session_id, session, epoch)
        return session

    async def delete(self, session_id: str) -> None:
        self._validated.pop(session_id, None)
        async with _available():
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self._key(session_id))
            if self.channel:
                pipe.publish(self.channel, session_id)
            await pipe.execute()

    async def delete_for(self, *, provider_sub: str | None = None, provider_sid: str | None = None) -> int:
        indexes = [self.prefix + f"sub:{provider_sub}"] if provider_sub is not None else []
        if provider_sid is not None:
            indexes.append(self.prefix + f"sid:{provider_sid}")
        if not indexes:
            return 0
        async with _available():
            members = await self.client.sinter(indexes) if len(indexes) > 1 else await self.client.smembers(indexes[0])
            ids = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
            for session_id in ids:
                self._validated.pop(session_id, None)
            if not ids:
                return 0
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(*(self._key(i) for i in ids))
            if self.channel:
                pipe.publish(self.channel, " ".join(ids))
            deleted = (await pipe.execute())[0]
            await self.client.srem(indexes[0], *ids)
            return int(deleted)

    async def put_login(self, state: str, data: dict[str, str], ttl_s: float) -> None:
        async with _available():
            await self.client.set(self.prefix + f"login:{state}", json.dumps(data), px=int(ttl_s * 1000))

    async def revoke(self, marks: Revocation) -> None:
        keys = marks.keys()
        if not keys:
            return
        async with _available():
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                # A later revocation (of a `sub`: a later moment) simply replaces an earlier one.
                pipe.set(self.prefix + f"revoked:{key}", repr(marks.issued_at), ex=int(self.expiry.max_age_s) + 60)
            await pipe.execute()

    async def revoked(self, marks: Revocation) -> bool:
        keys = marks.keys()
        if not keys:
            return False
        async with _available():
            moments = await self.client.mget([self.prefix + f"revoked:{key}" for key in keys])
        return any(
            moment is not None and _refuses(key, float(moment), marks)
            for key, moment in zip(keys, moments, strict=True)
        )

    async def take_login(self, state: str) -> dict[str, str] | None:
        async with _available():
            raw = await self.client.getdel(self.prefix + f"login:{state}")
        return None if raw is None else dict(json.loads(raw))

    async def ping(self) -> None:
        async with _available():
            await self.client.ping()

    def _key(self, session_id: str) -> str:
        return self.prefix + f"s:{session_id}"

    def _indexes(self, session: Session) -> list[str]:
        indexes = [self.prefix + f"sub:{session.provider_sub}"] if session.provider_sub else []
        if session.provider_sid:
            indexes.append(self.prefix + f"sid:{session.provider_sid}")
        return indexes


_Answer = asyncio.Future[bytes | str | None]  # one read's value, None for a missing key
_Batch = dict[str, list[_Answer]]  # key -> the reads waiting for it


class _ReadBatcher:
    """Session reads that start in the same turn of the event loop go to Redis as one MGET: one round
    trip, one command to pack and parse, for all the requests that arrived together.

    This is not a cache: every read is sent after its request arrived, so a sign-out on any replica
    is seen by the next request, and a failed MGET fails every read in it (a 503 each, as a GET's
    failure would). `parse` only skips decoding JSON it has decoded before: the bytes still come
    from Redis each time, and a changed or deleted session never matches an old entry.
    """

    PARSED_MAX = 1024  # distinct session values kept decoded; cleared when full

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._pending: _Batch | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the pending batch will be flushed on
        self._flushes: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks
        self._parsed: dict[bytes, Session] = {}

    async def get(self, key: str) -> bytes | str | None:
        loop = asyncio.get_running_loop()
        if self._pending is None or self._loop is not loop:
            # The flush runs in the next turn of the loop, after every request handler ready in this one.
            self._pending, self._loop = {}, loop
            flush = loop.create_task(self._flush(self._pending))
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)
        waiter: _Answer = loop.create_future()
        self._pending.setdefault(key, []).append(waiter)
        return await waiter

    async def _flush(self, pending: _Batch) -> None:
        if self._pending is pending:
            self._pending = None  # reads from here on make the next batch
        keys = list(pending)
        try:
            values = await self.client.mget(keys) if len(keys) > 1 else [await self.client.get(keys[0])]
        except asyncio.CancelledError:  # the loop is shutting down: so are the requests waiting
            for waiter in _waiting(pending.values()):
                waiter.cancel()
            raise
        except Exception as exc:
            for waiter in _waiting(pending.values()):
                waiter.set_exception(exc)
            return
        for value, waiters in zip(values, pending.values(), strict=True):
            for waiter in _waiting([waiters]):
                waiter.set_result(value)

    def parse(self, raw: bytes | str) -> Session:
        key = raw.encode() if isinstance(raw, str) else raw
        session = self._parsed.get(key)
        if session is None:
            if len(self._parsed) >= self.PARSED_MAX:
                self._parsed.clear()
            session = self._parsed[key] = Session.from_json(key)
        return session


def _waiting(batches: Iterable[list[_Answer]]) -> Iterator[_Answer]:
    """The futures still waiting for an answer (a done one's request was cancelled meanwhile)."""
    return (waiter for waiters in batches for waiter in waiters if not waiter.done())


class _available:
    """Translates any Redis failure into a 503 at the one place Redis is called."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, RedisError | OSError):
            raise ServiceUnavailable("The session store (Redis) is unavailable; try again shortly.") from exc
