"""One conformance suite for the notebook credential stores, run on memory and on a real Redis; and a
gateway on Redis sessions, where sign-out ends a notebook origin's credential for every replica."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis

from gateway import notebook_credentials
from gateway.errors import ServiceUnavailable
from gateway.notebook_credentials import (
    Credential,
    CredentialStore,
    Grant,
    MemoryCredentialStore,
    RedisCredentialStore,
    binding_of,
)
from tests.conftest import RedisServer, unused_port
from tests.fakes.upstream import FakeUpstream
from tests.origins import OriginClient

GRANT = Grant("session-1", "alice", "nb1", binding_of("state"), "/notebook/alice/nb1/lab")


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[CredentialStore]:
    if request.param == "memory":
        yield MemoryCredentialStore()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    client = redis.Redis.from_url(server.url)
    yield RedisCredentialStore(client, prefix=f"t{uuid.uuid4().hex[:8]}:")
    await client.aclose()


async def test_a_code_is_taken_once(store: CredentialStore) -> None:
    code = await store.put_code(GRANT)
    assert await store.take_code(code) == GRANT
    assert await store.take_code(code) is None
    assert await store.take_code("made-up") is None


async def test_a_code_expires(store: CredentialStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notebook_credentials, "CODE_TTL_S", 0.1)
    code = await store.put_code(GRANT)
    await asyncio.sleep(0.3)
    assert await store.take_code(code) is None


async def test_credentials_load_until_their_session_ends(store: CredentialStore) -> None:
    first, second = Credential("c1", "session-1", "alice", "nb1"), Credential("c2", "session-1", "alice", "nb2")
    other = Credential("c3", "session-2", "alice", "nb1")
    for credential in (first, second, other):
        await store.save(credential, ttl_s=60)
    assert await store.load("c1") == first
    assert await store.end_session("session-1") == 2
    assert await store.load("c1") is None and await store.load("c2") is None
    assert await store.load("c3") == other


async def test_a_credential_expires_with_its_ttl(store: CredentialStore) -> None:
    await store.save(Credential("c1", "session-1", "alice", "nb1"), ttl_s=0.1)
    await asyncio.sleep(0.3)
    assert await store.load("c1") is None


async def test_redis_down_is_503_never_no_credential() -> None:
    client = redis.Redis.from_url(f"redis://127.0.0.1:{unused_port()}/0", socket_connect_timeout=0.5)
    store = RedisCredentialStore(client)
    with pytest.raises(ServiceUnavailable):
        await store.load("c1")
    with pytest.raises(ServiceUnavailable):
        await store.take_code("code")
    await client.aclose()


async def test_on_redis_sign_out_ends_the_notebook_credential(
    gateway_factory: Callable[..., Any],
    routes_file: Callable[[dict[tuple[str, str], str]], Path],
    aiohttp_server: Any,
    redis_server: RedisServer,
) -> None:
    upstream = await FakeUpstream.start(aiohttp_server)
    alice: OriginClient = await gateway_factory(
        routes_file=routes_file({("alice", "nb1"): upstream.url}),
        notebook_origins="isolated",
        notebook_domain="localhost",
        session_store="redis",
        redis_url=redis_server.url,
    )
    assert (await alice.get("/notebook/alice/nb1/echo")).status == 200
    await alice.session.post(alice.make_url("/oauth2/sign_out"), allow_redirects=False)
    assert (await alice.get("/notebook/alice/nb1/echo")).status == 401
