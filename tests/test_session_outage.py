"""GATEWAY_SESSION_OUTAGE_GRACE_S on a real Redis that the test stops: off, every request needs Redis (503 while it
is down); on, a session this replica checked within the grace keeps working through a short outage, and the
price of that (a sign-out made on another replica just before the outage is not seen yet) is shown too."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from gateway.errors import ServiceUnavailable
from gateway.sessions import RedisSessionStore

from .conftest import RedisServer
from .test_sessions import EXPIRY, Clock, make_session

GRACE_S = 30.0


@pytest.fixture
async def client(own_redis_server: RedisServer) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(own_redis_server.url)
    yield client
    await client.aclose()


async def test_off_by_default_a_known_session_gets_503_while_redis_is_down(
    client: redis.Redis, own_redis_server: RedisServer
) -> None:
    clock = Clock()
    store = RedisSessionStore(client, EXPIRY, clock=clock)
    session = make_session(clock)
    await store.save(session)
    assert await store.load(session.id) == session
    own_redis_server.stop()
    with pytest.raises(ServiceUnavailable):
        await store.load(session.id)


async def test_on_a_session_checked_within_the_grace_survives_an_outage_and_no_longer(
    client: redis.Redis, own_redis_server: RedisServer
) -> None:
    clock = Clock()
    store = RedisSessionStore(client, EXPIRY, clock=clock, outage_grace_s=GRACE_S)
    session, never_seen = make_session(clock), make_session(clock, "bob@example.com")
    for each in (session, never_seen):
        await store.save(each)
    assert await store.load(session.id) == session  # Redis vouches for it now
    own_redis_server.stop()
    clock.now += GRACE_S - 1
    assert await store.load(session.id) == session
    with pytest.raises(ServiceUnavailable):
        await store.load(never_seen.id)  # this replica never checked it: no grace
    clock.now += 1.5
    with pytest.raises(ServiceUnavailable):
        await store.load(session.id)  # the grace is counted from Redis's last answer, not extended by use


async def test_on_a_sign_out_here_ends_the_grace_and_one_elsewhere_waits_for_redis(
    client: redis.Redis, own_redis_server: RedisServer
) -> None:
    clock = Clock()
    here = RedisSessionStore(client, EXPIRY, clock=clock, outage_grace_s=GRACE_S)
    other_replica = RedisSessionStore(client, EXPIRY, clock=clock, outage_grace_s=GRACE_S)
    signed_out_here, signed_out_there = make_session(clock), make_session(clock, "bob@example.com")
    for each in (signed_out_here, signed_out_there):
        await here.save(each)
        assert await here.load(each.id) == each
    await here.delete(signed_out_here.id)
    await other_replica.delete(signed_out_there.id)
    own_redis_server.stop()
    with pytest.raises(ServiceUnavailable):
        await here.load(signed_out_here.id)
    # The documented trade: the other replica's sign-out is in Redis, which this replica cannot read now.
    assert await here.load(signed_out_there.id) == signed_out_there
    own_redis_server.start()
    assert await here.load(signed_out_there.id) is None  # once Redis answers, the sign-out holds everywhere
