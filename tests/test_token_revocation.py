"""Bearer tokens end with the session they came from: a signed-out session's ID token (were it ever read) is no API
key, a provider's back-channel logout ends its tokens too, and every replica sees it (the marks live in the session
store: Redis in production)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as redis

from gateway.sessions import Expiry, MemorySessionStore, RedisSessionStore, Revocation, SessionStore, token_hash

from .conftest import Client, RedisServer

EXPIRY = Expiry(idle_s=600, max_age_s=3600)
LIST = "/api/namespaces/alice/notebooks"


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    if request.param == "memory":
        yield MemorySessionStore(EXPIRY)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    client = redis.Redis.from_url(server.url)
    yield RedisSessionStore(client, EXPIRY, prefix=f"t{uuid.uuid4().hex[:8]}:")
    await client.aclose()


async def test_a_revoked_token_hash_is_refused_and_no_other(store: SessionStore) -> None:
    await store.revoke(Revocation(token_hash=token_hash("token-a")))
    assert await store.revoked(Revocation(token_hash=token_hash("token-a"), sid="s1", sub="u1", issued_at=5))
    assert not await store.revoked(Revocation(token_hash=token_hash("token-b"), sid="s1", sub="u1", issued_at=5))


async def test_a_revoked_provider_session_ends_every_token_of_it(store: SessionStore) -> None:
    await store.revoke(Revocation(sid="s1"))
    assert await store.revoked(Revocation(token_hash=token_hash("any"), sid="s1", issued_at=10**10))
    assert not await store.revoked(Revocation(token_hash=token_hash("any"), sid="s2", issued_at=0))


async def test_a_users_tokens_are_refused_up_to_the_moment_of_the_logout_only(store: SessionStore) -> None:
    await store.revoke(Revocation(sub="u1", issued_at=1000.0))
    assert await store.revoked(Revocation(sub="u1", issued_at=999.0))
    assert await store.revoked(Revocation(sub="u1", issued_at=1000.0))
    assert not await store.revoked(Revocation(sub="u1", issued_at=1001.0))  # signed in again afterwards
    assert not await store.revoked(Revocation(sub="u2", issued_at=0.0))


async def test_a_signed_out_sessions_id_token_no_longer_works_as_a_bearer_token(
    gateway_factory: Callable[..., Any], routes_file: Callable[[dict[tuple[str, str], str]], Path]
) -> None:
    # The token as anyone could have read it before this release (the opt-in here stands for that leak).
    client: Client = await gateway_factory(routes_file=routes_file({}), ext_authz_id_token=True)
    id_token = (await client.get("/oauth2/auth")).headers["Authorization"].removeprefix("Bearer ")
    bearer = {"Authorization": f"Bearer {id_token}"}
    async with aiohttp.ClientSession() as other:  # no cookie: the token alone
        async with other.get(client.make_url(LIST), headers=bearer) as resp:
            assert resp.status == 200  # a live session's token works, as API clients expect
        async with client.post("/oauth2/sign_out", allow_redirects=False) as resp:
            assert resp.status in (302, 303)
        async with other.get(client.make_url(LIST), headers=bearer) as resp:
            assert resp.status == 401
            assert "signed out" in (await resp.json())["message"]
