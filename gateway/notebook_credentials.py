"""Per-notebook credentials and the single-use codes that hand them over: the `CredentialStore`
protocol, with a Redis store (shared by every replica) and a memory store (dev mode only).

A credential names one session and one notebook. It is only as good as its session: whoever
checks it loads the session too, so sign-out, back-channel logout and expiry end it without
touching it. Sign-out also deletes a session's credentials, so nothing is left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Protocol

import redis.asyncio as redis
from redis.exceptions import RedisError

from .errors import ServiceUnavailable

Clock = Callable[[], float]

CODE_TTL_S = 30.0  # from the gateway host's redirect to the notebook origin's callback: one browser hop


@dataclass(frozen=True, slots=True)
class Grant:
    """What a handshake code stands for: a session's access to one notebook, for the browser that
    holds `binding` (the hash of the state cookie set on the notebook origin), then going to `return_to`."""

    session_id: str
    namespace: str
    name: str
    binding: str
    return_to: str


@dataclass(frozen=True, slots=True)
class Credential:
    """A notebook origin's credential: the secret id is in its cookie; it is valid for one notebook."""

    id: str
    session_id: str
    namespace: str
    name: str


def binding_of(state: str) -> str:
    """What a code records of the state cookie: a hash, so that the store never holds a cookie's value."""
    return hashlib.sha256(state.encode()).hexdigest()


class CredentialStore(Protocol):
    """Codes (`put_code` / `take_code`: each returned once, then never, and not after `CODE_TTL_S`)
    and credentials (`save` / `load` / `end_session`). `load` returns a credential as saved; the
    caller checks its session. Every method raises `errors.ServiceUnavailable` when the store cannot
    answer, so an outage is never read as "no credential" or "already used"."""

    async def put_code(self, grant: Grant) -> str: ...

    async def take_code(self, code: str) -> Grant | None: ...

    async def save(self, credential: Credential, ttl_s: float) -> None: ...

    async def load(self, credential_id: str) -> Credential | None: ...

    async def end_session(self, session_id: str) -> int:
        """Delete every credential of a session; return how many there were."""
        ...


def new_secret() -> str:
    return secrets.token_urlsafe(32)


class MemoryCredentialStore:
    """Credentials in this process only, as `MemorySessionStore` keeps sessions (dev mode)."""

    def __init__(self, clock: Clock = time.time) -> None:
        self.clock = clock
        self._codes: dict[str, tuple[float, Grant]] = {}
        self._credentials: dict[str, tuple[float, Credential]] = {}

    async def put_code(self, grant: Grant) -> str:
        now = self.clock()
        self._codes = {code: entry for code, entry in self._codes.items() if entry[0] > now}  # stays small
        code = new_secret()
        self._codes[code] = (now + CODE_TTL_S, grant)
        return code

    async def take_code(self, code: str) -> Grant | None:
        entry = self._codes.pop(code, None)
        return entry[1] if entry is not None and entry[0] > self.clock() else None

    async def save(self, credential: Credential, ttl_s: float) -> None:
        self._credentials[credential.id] = (self.clock() + ttl_s, credential)

    async def load(self, credential_id: str) -> Credential | None:
        entry = self._credentials.get(credential_id)
        if entry is None or entry[0] <= self.clock():
            self._credentials.pop(credential_id, None)
            return None
        return entry[1]

    async def end_session(self, session_id: str) -> int:
        doomed = [key for key, (_, cred) in self._credentials.items() if cred.session_id == session_id]
        for key in doomed:
            del self._credentials[key]
        return len(doomed)


class RedisCredentialStore:
    """Keys: `<prefix>nbcode:<code>` (read once with GETDEL), `<prefix>nbc:<id>` (a credential, expiring
    with the longest its session could live) and `<prefix>nbs:<session id>` (a session's credential ids)."""

    def __init__(self, client: redis.Redis, prefix: str = "ngw:") -> None:
        self.client, self.prefix = client, prefix

    async def put_code(self, grant: Grant) -> str:
        code = new_secret()
        with _available():
            await self.client.set(f"{self.prefix}nbcode:{code}", json.dumps(asdict(grant)), px=int(CODE_TTL_S * 1000))
        return code

    async def take_code(self, code: str) -> Grant | None:
        with _available():
            raw = await self.client.getdel(f"{self.prefix}nbcode:{code}")
        return None if raw is None else Grant(**json.loads(raw))

    async def save(self, credential: Credential, ttl_s: float) -> None:
        index = f"{self.prefix}nbs:{credential.session_id}"
        with _available():
            pipe = self.client.pipeline(transaction=True)
            pipe.set(f"{self.prefix}nbc:{credential.id}", json.dumps(asdict(credential)), px=int(ttl_s * 1000))
            pipe.sadd(index, credential.id)
            pipe.expire(index, int(ttl_s) + 60)
            await pipe.execute()

    async def load(self, credential_id: str) -> Credential | None:
        with _available():
            raw = await self.client.get(f"{self.prefix}nbc:{credential_id}")
        return None if raw is None else Credential(**json.loads(raw))

    async def end_session(self, session_id: str) -> int:
        index = f"{self.prefix}nbs:{session_id}"
        with _available():
            members = await self.client.smembers(index)
            ids = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
            deleted = await self.client.delete(*(f"{self.prefix}nbc:{i}" for i in ids)) if ids else 0
            await self.client.delete(index)
        return int(deleted)


@contextlib.contextmanager
def _available() -> Iterator[None]:
    """Any Redis failure becomes a 503, here, where Redis is called."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable("The credential store (Redis) is unavailable; try again shortly.") from exc
