"""Counters of failed sign-ins per client IP and per username, in Redis (memory in dev), with a window."""

from __future__ import annotations

import time
from typing import Protocol

import redis.asyncio as redis
from redis.exceptions import RedisError

from .errors import ServiceUnavailable


class FailureCounter(Protocol):
    """`fail(key)` counts one failure; `retry_after_s(key)` is 0 while under the limit, else the seconds
    until the window ends. Raises `ServiceUnavailable` when the store cannot answer (fail closed)."""

    async def fail(self, key: str) -> None: ...

    async def retry_after_s(self, key: str) -> int: ...


class MemoryFailureCounter:
    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (window end, failures)

    async def fail(self, key: str) -> None:
        now = time.monotonic()
        end, count = self._windows.get(key, (0.0, 0))
        self._windows[key] = (end, count + 1) if end > now else (now + self.window_s, 1)

    async def retry_after_s(self, key: str) -> int:
        end, count = self._windows.get(key, (0.0, 0))
        remaining = end - time.monotonic()
        return max(1, int(remaining + 0.999)) if count >= self.limit and remaining > 0 else 0


class RedisFailureCounter:
    """A fixed window per key: INCR, with the expiry set when the window opens."""

    def __init__(self, client: redis.Redis, limit: int, window_s: float, prefix: str = "ngw:fail:") -> None:
        self.client, self.limit, self.window_s, self.prefix = client, limit, window_s, prefix

    async def fail(self, key: str) -> None:
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.incr(self.prefix + key)
            pipe.expire(self.prefix + key, int(self.window_s), nx=True)
            await pipe.execute()
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable("The sign-in rate limiter (Redis) is unavailable.") from exc

    async def retry_after_s(self, key: str) -> int:
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(self.prefix + key)
            pipe.ttl(self.prefix + key)
            count, ttl = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable("The sign-in rate limiter (Redis) is unavailable.") from exc
        if count is None or int(count) < self.limit:
            return 0
        return max(1, int(ttl))
