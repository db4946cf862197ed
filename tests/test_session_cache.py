"""The in-process session cache (GATEWAY_SESSION_CACHE_S) on a real Redis, with two "replicas" (two stores, each
with its own Redis client, cache and listener): a repeated read costs no Redis command, and a sign-out, a
back-channel logout or a changed session on one replica is seen by the other within a second, also when the
invalidation channel's connection is cut or Redis restarts (the cache then stops answering: fail closed).
Two real `serve` processes sharing Redis are in tests/test_replicas.py (sign-out and WebSocket cuts) and
tests/test_workers.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import pytest
import redis.asyncio as redis

from gateway.errors import ServiceUnavailable
from gateway.session_cache import SessionCache
from gateway.sessions import RedisSessionStore, Session

from .conftest import RedisServer, wait_until
from .test_sessions import EXPIRY, Clock, make_session


@dataclass
class Replica:
    store: RedisSessionStore
    cache: SessionCache[Session]
    client: redis.Redis


@pytest.fixture
async def replicas(own_redis_server: RedisServer) -> AsyncIterator[list[Replica]]:
    clock = Clock()
    made: list[Replica] = []
    listeners = []
    for _ in range(2):
        client = redis.Redis.from_url(own_redis_server.url, socket_timeout=2, socket_connect_timeout=1)
        store = RedisSessionStore(client, EXPIRY, clock=clock, announce=True)
        assert store.channel is not None
        cache: SessionCache[Session] = SessionCache(client, store.channel, max_age_s=30)
        store.cache = cache
        listeners.append(asyncio.create_task(cache.run()))
        made.append(Replica(store, cache, client))
    for replica in made:
        await wait_until(replica.cache.trusted, timeout_s=5)
    yield made
    for listener in listeners:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
    for replica in made:
        await replica.client.aclose()


async def reads(client: redis.Redis) -> int:
    """Session reads Redis has executed so far (GET, or MGET for a batch)."""
    stats = await client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("get", "mget"))


async def gone(store: RedisSessionStore, session_id: str) -> bool:
    return await store.load(session_id, touch=False) is None


async def test_a_repeated_read_is_answered_from_memory_without_a_redis_command(replicas: list[Replica]) -> None:
    one = replicas[0]
    session = make_session(Clock())
    await one.store.save(session)
    assert await one.store.load(session.id) == session
    before = await reads(one.client)
    for _ in range(5):
        assert await one.store.load(session.id) == session
    assert await reads(one.client) == before


async def test_a_sign_out_on_one_replica_ends_the_cached_session_on_the_other_within_a_second(
    replicas: list[Replica],
) -> None:
    here, there = replicas
    session = make_session(Clock())
    await here.store.save(session)
    assert await there.store.load(session.id) == session  # cached there now
    await here.store.delete(session.id)
    await wait_until(lambda: gone(there.store, session.id), timeout_s=1.0)


async def test_a_back_channel_logout_ends_the_cached_sessions_on_the_other_replica(replicas: list[Replica]) -> None:
    here, there = replicas
    clock = Clock()
    first, second = make_session(clock, sid="op-1"), make_session(clock, sid="op-1")
    for session in (first, second):
        await here.store.save(session)
        assert await there.store.load(session.id) == session
    assert await here.store.delete_for(provider_sid="op-1") == 2
    for session in (first, second):
        await wait_until(lambda s=session: gone(there.store, s.id), timeout_s=1.0)  # type: ignore[misc]


async def test_a_changed_session_replaces_the_cached_one_on_the_other_replica(replicas: list[Replica]) -> None:
    here, there = replicas
    session = make_session(Clock())
    await here.store.save(session)
    assert await there.store.load(session.id) == session
    refreshed = replace(session, id_token="a newer one")

    async def seen() -> bool:
        return await there.store.load(session.id) == refreshed

    await here.store.save(refreshed)
    await wait_until(seen, timeout_s=1.0)


async def test_a_read_that_raced_an_invalidation_is_not_kept(replicas: list[Replica]) -> None:
    cache = replicas[0].cache
    session = make_session(Clock())
    epoch = cache.epoch  # a read from Redis begins
    cache.drop([session.id])  # and an invalidation is heard before its answer is in
    cache.put(session.id, session, epoch)
    assert cache.get(session.id) is None


async def test_with_its_channel_cut_the_cache_forgets_what_it_may_have_missed(replicas: list[Replica]) -> None:
    here, there = replicas
    session = make_session(Clock())
    await here.store.save(session)
    assert await there.store.load(session.id) == session
    admin = here.client
    await admin.client_kill_filter(_type="pubsub")
    # A sign-out whose announcement the cut connection can never deliver (deleted without one).
    await admin.delete(f"{here.store.prefix}s:{session.id}")
    await wait_until(lambda: gone(there.store, session.id), timeout_s=1.0)
    await wait_until(there.cache.trusted, timeout_s=5)  # the listener came back by itself
    other = make_session(Clock(), "bob@example.com")
    await here.store.save(other)
    assert await there.store.load(other.id) == other
    before = await reads(there.client)
    assert await there.store.load(other.id) == other
    assert await reads(there.client) == before  # answering from memory again


async def test_while_redis_is_down_a_cached_session_is_refused_and_after_a_restart_sign_outs_still_count(
    replicas: list[Replica], own_redis_server: RedisServer
) -> None:
    here, there = replicas
    session = make_session(Clock())
    await here.store.save(session)
    assert await there.store.load(session.id) == session
    own_redis_server.stop()

    async def refused() -> bool:
        try:
            await there.store.load(session.id, touch=False)
        except ServiceUnavailable:
            return True
        return False

    await wait_until(refused, timeout_s=1.0)  # the cache does not stand in for Redis
    own_redis_server.start()  # its data survives (append-only file)
    await wait_until(there.cache.trusted, timeout_s=10)
    assert await there.store.load(session.id) == session
    await here.store.delete(session.id)
    await wait_until(lambda: gone(there.store, session.id), timeout_s=1.0)
