"""`open_redis(settings)`: the one Redis client the gateway uses for everything it keeps in Redis (sessions and
sign-in state, failed sign-in counters, the audit stream, notebook discovery), from one place.

A plain URL (`redis://`, `rediss://` for TLS, ACL user and password in it or in their own settings), or Redis
Sentinel: the sentinels name the current master of `GATEWAY_REDIS_SENTINEL_MASTER`, and after a failover the
client asks them again (redis-py's `SentinelConnectionPool`), so the gateway follows the new master by itself.
Redis Cluster is not supported: see docs/operators.md for why.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as redis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.sentinel import Sentinel

from .config import Settings

# Every command either answers or fails within these, so a lost server becomes a 503, never a hang.
SOCKET_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 2.0


def open_redis(settings: Settings) -> redis.Redis:
    """A client for the configured Redis. No I/O here: connections open on first use."""
    url = settings.redis_url.get_secret_value()
    credentials: dict[str, Any] = {}
    if settings.redis_username:
        credentials["username"] = settings.redis_username
    if settings.redis_password is not None:
        credentials["password"] = settings.redis_password.get_secret_value()
    timeouts: dict[str, Any] = {"socket_timeout": SOCKET_TIMEOUT_S, "socket_connect_timeout": CONNECT_TIMEOUT_S}
    if not settings.redis_sentinels:
        return redis.Redis.from_url(url, **timeouts, **credentials)
    # With sentinels the URL gives only what is not an address: the database, TLS and the servers' credentials.
    parsed = parse_url(url)
    server: dict[str, Any] = {"db": parsed.get("db", 0), **timeouts}
    for key in ("username", "password"):
        if parsed.get(key):
            server[key] = parsed[key]
    server |= credentials
    if parsed.get("connection_class") is SSLConnection:
        server["ssl"] = True  # the sentinel pool then uses its SSL connection class
    to_sentinels: dict[str, Any] = dict(timeouts)
    if settings.redis_sentinel_username:
        to_sentinels["username"] = settings.redis_sentinel_username
    if settings.redis_sentinel_password is not None:
        to_sentinels["password"] = settings.redis_sentinel_password.get_secret_value()
    addresses = [(address.host, address.port) for address in settings.redis_sentinels]
    sentinel = Sentinel(addresses, sentinel_kwargs=to_sentinels, **server)
    client: redis.Redis = sentinel.master_for(settings.redis_sentinel_master)
    return client


async def close_redis(client: redis.Redis) -> None:
    """Close a client from `open_redis`, and with Sentinel also its connections to the sentinels (closing the
    master's client alone leaves those open)."""
    await client.aclose()
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        await sentinel.aclose()
