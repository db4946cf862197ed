"""One conformance suite for every `SessionStore`: each test runs on memory and on a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from gateway.errors import ServiceUnavailable
from gateway.identity import Identity
from gateway.sessions import Expiry, MemorySessionStore, RedisSessionStore, Session, SessionStore, new_session_id
from tests.conftest import RedisServer

EXPIRY = Expiry(idle_s=600, max_age_s=3600)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@contextlib.asynccontextmanager
async def open_store(request: pytest.FixtureRequest, clock: Clock, expiry: Expiry) -> AsyncIterator[SessionStore]:
    """The store the fixture's param names: memory, or Redis under a key prefix of its own."""
    if request.param == "memory":
        yield MemorySessionStore(expiry, clock=clock)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    client = redis.Redis.from_url(server.url)
    try:
        yield RedisSessionStore(client, expiry, clock=clock, prefix=f"t{uuid.uuid4().hex[:8]}:")
    finally:
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[SessionStore]:
    async with open_store(request, clock, EXPIRY) as opened:
        yield opened


def make_session(clock: Clock, subject: str = "alice@example.com", sid: str | None = None) -> Session:
    identity = Identity(subject, subject, ("ml-team",))
    return Session(
        new_session_id(),
        identity,
        clock.now,
        clock.now,
        id_token="idt",
        provider_sid=sid,
        provider_sub=f"sub-{subject}",
    )


async def test_a_saved_session_loads_with_its_identity(store: SessionStore, clock: Clock) -> None:
    session = make_session(clock)
    await store.save(session)
    assert await store.load(session.id) == session


async def test_an_unknown_session_is_none(store: SessionStore) -> None:
    assert await store.load(new_session_id()) is None


async def test_an_idle_session_expires_but_activity_keeps_it(store: SessionStore, clock: Clock) -> None:
    session = make_session(clock)
    await store.save(session)
    clock.now += 500
    assert await store.load(session.id) is not None  # seen: the idle timer starts again
    clock.now += 500
    assert await store.load(session.id) is not None
    clock.now += 601
    assert await store.load(session.id) is None


async def test_a_page_polling_on_its_own_does_not_keep_an_idle_session(store: SessionStore, clock: Clock) -> None:
    session = make_session(clock)
    await store.save(session)
    clock.now += 300
    assert await store.load(session.id, touch=False) is not None
    clock.now += 299
    assert await store.load(session.id, touch=False) is not None  # 599 s: still within the 600 s
    clock.now += 2
    assert await store.load(session.id, touch=False) is None  # nobody touched it for 601 s


@pytest.fixture(params=["memory", "redis"])
async def short_store(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[SessionStore]:
    """A store whose sessions idle out after 20 s (shorter than the usual write-back interval)."""
    async with open_store(request, clock, Expiry(idle_s=20, max_age_s=3600)) as opened:
        yield opened


async def test_a_short_idle_timeout_still_lets_activity_keep_the_session(
    short_store: SessionStore, clock: Clock
) -> None:
    session = make_session(clock)
    await short_store.save(session)
    for _ in range(12):
        clock.now += 10
        assert await short_store.load(session.id) is not None  # used every 10 s for two minutes
    clock.now += 21
    assert await short_store.load(session.id) is None


async def test_activity_never_extends_the_absolute_age(store: SessionStore, clock: Clock) -> None:
    session = make_session(clock)
    await store.save(session)
    for _ in range(7):
        clock.now += 500
        assert await store.load(session.id) is not None  # active every 500 s for 3500 s
    clock.now += 500
    assert await store.load(session.id) is None  # 4000 s: past the 3600 s maximum, however active


async def test_delete_ends_a_session(store: SessionStore, clock: Clock) -> None:
    session = make_session(clock)
    await store.save(session)
    await store.delete(session.id)
    assert await store.load(session.id) is None


async def test_delete_for_a_user_ends_only_their_sessions(store: SessionStore, clock: Clock) -> None:
    alices = [make_session(clock), make_session(clock)]
    bob = make_session(clock, "bob@example.com")
    for session in [*alices, bob]:
        await store.save(session)
    assert await store.delete_for(provider_sub="sub-alice@example.com") == 2
    assert [await store.load(s.id) for s in alices] == [None, None]
    assert await store.load(bob.id) == bob


async def test_delete_for_a_provider_session_ends_only_that_one(store: SessionStore, clock: Clock) -> None:
    laptop, phone = make_session(clock, sid="sid-1"), make_session(clock, sid="sid-2")
    await store.save(laptop)
    await store.save(phone)
    assert await store.delete_for(provider_sub="sub-alice@example.com", provider_sid="sid-9") == 0
    assert await store.delete_for(provider_sid="sid-1") == 1
    assert await store.load(laptop.id) is None
    assert await store.load(phone.id) == phone


async def test_a_pending_login_can_be_taken_once(store: SessionStore) -> None:
    await store.put_login("state-1", {"nonce": "n", "verifier": "v"}, ttl_s=60)
    assert await store.take_login("state-1") == {"nonce": "n", "verifier": "v"}
    assert await store.take_login("state-1") is None


async def test_a_pending_login_expires(clock: Clock) -> None:
    store = MemorySessionStore(EXPIRY, clock=clock)  # Redis expiry runs on its own clock; see the Redis test below
    await store.put_login("state-1", {"nonce": "n"}, ttl_s=60)
    clock.now += 61
    assert await store.take_login("state-1") is None


async def test_redis_expires_sessions_by_itself(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    store = RedisSessionStore(client, Expiry(idle_s=600, max_age_s=3600), prefix="ttl:")
    session = make_session(Clock())
    await store.save(Session(session.id, session.identity, 0, 0))  # created long ago: nothing to keep
    assert await client.exists(f"ttl:s:{session.id}") == 0
    await store.put_login("s", {}, ttl_s=30)
    assert 0 < await client.pttl("ttl:login:s") <= 30_000
    await client.aclose()


async def test_a_stopped_redis_is_unavailable_not_signed_out(own_redis_server: RedisServer, clock: Clock) -> None:
    client = redis.Redis.from_url(own_redis_server.url)
    store = RedisSessionStore(client, EXPIRY, clock=clock)
    session = make_session(clock)
    await store.save(session)
    own_redis_server.stop()
    with pytest.raises(ServiceUnavailable):
        await store.load(session.id)
    own_redis_server.start()  # the same data comes back; the client reconnects by itself
    assert await store.load(session.id) == session
    await client.aclose()


async def test_loads_that_arrive_together_each_get_their_own_session(store: SessionStore, clock: Clock) -> None:
    alice, bob = make_session(clock), make_session(clock, "bob@example.com")
    await store.save(alice)
    await store.save(bob)
    loads = [store.load(alice.id), store.load(bob.id), store.load(new_session_id()), store.load(alice.id)]
    assert await asyncio.gather(*loads) == [alice, bob, None, alice]


async def test_a_load_cancelled_while_waiting_leaves_the_others_alone(redis_server: RedisServer, clock: Clock) -> None:
    client = redis.Redis.from_url(redis_server.url)
    store = RedisSessionStore(client, EXPIRY, clock=clock, prefix=f"t{uuid.uuid4().hex[:8]}:")
    alice, bob = make_session(clock), make_session(clock, "bob@example.com")
    await store.save(alice)
    await store.save(bob)
    leaving = asyncio.create_task(store.load(alice.id))
    staying = asyncio.create_task(store.load(bob.id))
    await asyncio.sleep(0)  # both are waiting for Redis's answer now (a client that left, and one that stays)
    leaving.cancel()
    assert await staying == bob
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert await store.load(alice.id) == alice
    await client.aclose()


async def test_a_sign_out_on_another_replica_ends_the_session_at_once(redis_server: RedisServer, clock: Clock) -> None:
    """Replicas share nothing but Redis: what one changes or deletes, the next load on another sees."""
    clients = [redis.Redis.from_url(redis_server.url) for _ in range(2)]
    here, there = (RedisSessionStore(client, EXPIRY, clock=clock, prefix="replicas:") for client in clients)
    session = make_session(clock)
    await here.save(session)
    assert await here.load(session.id) == session
    renamed = Session(session.id, Identity("alice@example.com", groups=("admins",)), clock.now, clock.now)
    await there.save(renamed)
    assert await here.load(session.id) == renamed
    await there.delete(session.id)
    assert await here.load(session.id) is None
    for client in clients:
        await client.aclose()


async def test_loads_that_arrive_together_all_fail_while_redis_is_down(
    own_redis_server: RedisServer, clock: Clock
) -> None:
    client = redis.Redis.from_url(own_redis_server.url)
    store = RedisSessionStore(client, EXPIRY, clock=clock)
    sessions = [make_session(clock), make_session(clock, "bob@example.com")]
    for session in sessions:
        await store.save(session)
    own_redis_server.stop()
    outcomes = await asyncio.gather(*(store.load(s.id) for s in sessions), return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [ServiceUnavailable, ServiceUnavailable]
    own_redis_server.start()
    assert await asyncio.gather(*(store.load(s.id) for s in sessions)) == sessions
    await client.aclose()


async def test_loads_that_arrive_together_cost_redis_one_command(own_redis_server: RedisServer, clock: Clock) -> None:
    """What keeps a busy gateway's session checks cheap: one MGET for all the requests of a loop turn."""
    client = redis.Redis.from_url(own_redis_server.url)
    store = RedisSessionStore(client, EXPIRY, clock=clock)
    sessions = [make_session(clock, f"user{index}@example.com") for index in range(5)]
    for session in sessions:
        await store.save(session)
    await client.config_resetstat()
    assert await asyncio.gather(*(store.load(s.id) for s in sessions * 2)) == sessions * 2
    stats = await client.info("commandstats")
    assert {name: stats[name]["calls"] for name in ("cmdstat_get", "cmdstat_mget") if name in stats} == {
        "cmdstat_mget": 1
    }
    await client.aclose()
