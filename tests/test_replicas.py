"""Three gateway replicas behind nginx with one Redis (tests/replicas.py): whatever a user does through one replica,
every other replica knows at once; and one replica killed with `kill -9` costs only what it was serving."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as redis
from aiohttp import WSMsgType
from yarl import URL

from gateway.audit.redis_sink import PREFIX as STREAM
from gateway.audit.stream_copy import read_chain_id, read_stream_copy
from gateway.audit.verify import verify
from gateway.cookies import SESSION_COOKIE
from gateway.proxy_ws import SESSION_RECHECK_S

from . import replicas
from .conftest import wait_until
from .fakes.node_idp import ALICE, BOB, PASSWORD, sign_in
from .replicas import LOGIN_FAILURES_MAX, REPLICAS, Fleet

fleet = replicas.fleet  # the module's fixture

BROWSER = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
TEAM_EDIT = {"subject": f"user:{BOB}", "namespace": "team", "role": "edit"}


@dataclass
class Browser:
    """A signed-in user: their own cookie jar, and the headers to send their session anywhere."""

    http: aiohttp.ClientSession
    fleet: Fleet

    @property
    def cookie(self) -> str:
        return self.http.cookie_jar.filter_cookies(URL(self.fleet.url))[SESSION_COOKIE].value

    @property
    def headers(self) -> dict[str, str]:
        # The public origin: every replica is configured with nginx's URL, whichever port a request reaches.
        return {"Cookie": f"{SESSION_COOKIE}={self.cookie}", "Origin": self.fleet.url}

    async def status(self, url: str) -> int:
        async with aiohttp.ClientSession() as plain, plain.get(url, headers=self.headers) as resp:
            return resp.status


@pytest.fixture
async def browsers() -> AsyncIterator[list[aiohttp.ClientSession]]:
    sessions: list[aiohttp.ClientSession] = []
    yield sessions
    for session in sessions:
        await session.close()


async def signed_in(
    fleet: Fleet, browsers: list[aiohttp.ClientSession], user: str, start: int | None = None, back: int | None = None
) -> Browser:
    """Sign `user` in at the real provider: started on replica `start` and finished on replica `back` (or both
    through nginx, which sends consecutive requests to different replicas)."""
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    browsers.append(http)
    origin = fleet.url if start is None else fleet.replicas[start].url
    callback = await sign_in(http, f"{origin}/oauth2/start", user, PASSWORD)
    if back is not None:
        callback = callback.with_port(fleet.replicas[back].port)
    async with http.get(callback, headers=BROWSER, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
    return Browser(http, fleet)


async def test_a_sign_in_started_on_one_replica_finishes_on_another_and_works_on_all(
    fleet: Fleet, browsers: list[aiohttp.ClientSession]
) -> None:
    alice = await signed_in(fleet, browsers, ALICE, start=0, back=1)  # login state (state, PKCE) is in Redis
    async with aiohttp.ClientSession() as plain:
        for replica in fleet.replicas:
            async with plain.get(f"{replica.url}/oauth2/userinfo", headers=alice.headers) as resp:
                assert resp.status == 200 and (await resp.json())["user"] == ALICE
            async with plain.get(f"{replica.url}/notebook/alice/nb1/echo", headers=alice.headers) as resp:
                echoed = {name.lower(): value for name, value in (await resp.json())["headers"]}
                assert echoed["kubeflow-userid"] == ALICE
        for _ in range(REPLICAS):  # and through nginx, which visits each replica in turn
            assert await alice.status(f"{fleet.url}/notebook/alice/nb1/echo") == 200


async def test_a_sign_out_on_one_replica_ends_the_session_on_all_within_a_second(
    fleet: Fleet, browsers: list[aiohttp.ClientSession]
) -> None:
    bob = await signed_in(fleet, browsers, BOB)
    headers = bob.headers
    for replica in fleet.replicas:
        assert await bob.status(f"{replica.url}/oauth2/userinfo") == 200
    async with aiohttp.ClientSession() as plain:
        async with plain.post(f"{fleet.replicas[0].url}/oauth2/sign_out", headers=headers, allow_redirects=False) as r:
            assert r.status in (302, 303)

        async def ended_everywhere() -> bool:
            for replica in fleet.replicas:
                async with plain.get(f"{replica.url}/oauth2/userinfo", headers=headers) as resp:
                    if resp.status != 401:
                        return False
            return True

        await wait_until(ended_everywhere, timeout_s=1.0)


async def grant(admin: Browser, replica: int, rule: dict[str, str], method: str = "POST") -> None:
    url = f"{admin.fleet.replicas[replica].url}/api/policies"
    async with aiohttp.ClientSession() as plain, plain.request(method, url, json=rule, headers=admin.headers) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["changed"] is True


async def everywhere(user: Browser, path: str, replicas: list[int], status: int) -> bool:
    """Whether each of these replicas answers `user` at `path` with `status`."""
    return {await user.status(f"{user.fleet.replicas[i].url}{path}") for i in replicas} == {status}


async def test_a_policy_change_through_one_replica_is_enforced_by_all_within_a_second(
    fleet: Fleet, browsers: list[aiohttp.ClientSession]
) -> None:
    alice = await signed_in(fleet, browsers, ALICE)  # a bootstrap admin
    bob = await signed_in(fleet, browsers, BOB)
    team = "/notebook/team/nb/echo"
    assert await everywhere(bob, team, [0, 1, 2], 403)

    await grant(alice, 0, TEAM_EDIT)
    await wait_until(lambda: everywhere(bob, team, [1, 2], 200), timeout_s=1.0)

    await grant(alice, 1, TEAM_EDIT, method="DELETE")
    await wait_until(lambda: everywhere(bob, team, [0, 2], 403), timeout_s=1.0)


async def test_a_websocket_on_one_replica_is_cut_when_access_is_revoked_through_another(
    fleet: Fleet, browsers: list[aiohttp.ClientSession]
) -> None:
    alice = await signed_in(fleet, browsers, ALICE)
    bob = await signed_in(fleet, browsers, BOB)
    await grant(alice, 0, TEAM_EDIT)
    ws_url = f"{fleet.replicas[2].url}/notebook/team/nb/ws"
    await wait_until(lambda: everywhere(bob, "/notebook/team/nb/echo", [2], 200), timeout_s=1.0)
    async with aiohttp.ClientSession() as plain, plain.ws_connect(ws_url, headers=bob.headers) as ws:
        await ws.send_str("hello from bob")
        assert await ws.receive_str() == "hello from bob"

        await grant(alice, 1, TEAM_EDIT, method="DELETE")  # revoked through another replica
        msg = await asyncio.wait_for(ws.receive(), timeout=1.0)
        assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 1008, "access revoked")


async def test_a_sign_out_on_one_replica_closes_that_sessions_websocket_on_another(
    fleet: Fleet, browsers: list[aiohttp.ClientSession]
) -> None:
    alice = await signed_in(fleet, browsers, ALICE)
    headers = alice.headers
    async with aiohttp.ClientSession() as plain:
        async with plain.ws_connect(f"{fleet.replicas[2].url}/notebook/alice/nb1/ws", headers=headers) as ws:
            await ws.send_str("still here")
            assert await ws.receive_str() == "still here"
            sign_out = f"{fleet.replicas[0].url}/oauth2/sign_out"
            async with plain.post(sign_out, headers=headers, allow_redirects=False) as resp:
                assert resp.status in (302, 303)
            msg = await asyncio.wait_for(ws.receive(), timeout=2 * SESSION_RECHECK_S)
            assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 1008, "signed out")


async def test_failed_sign_ins_are_counted_across_replicas(fleet: Fleet) -> None:
    # From one client address (nginx and the test are trusted proxies, so X-Forwarded-For names the client).
    client = {"X-Forwarded-For": "203.0.113.77"}
    async with aiohttp.ClientSession() as plain:
        for index in range(LOGIN_FAILURES_MAX):  # one forged callback on each replica in turn
            url = f"{fleet.replicas[index % REPLICAS].url}/oauth2/callback?state=forged&code=x"
            async with plain.get(url, headers=client) as resp:
                assert resp.status == 400
        for replica in fleet.replicas:  # every replica now refuses this address
            async with plain.get(f"{replica.url}/oauth2/start", headers=client, allow_redirects=False) as resp:
                assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0
        async with plain.get(f"{fleet.url}/oauth2/start", headers=BROWSER, allow_redirects=False) as resp:
            assert resp.status == 302  # another address is not limited


async def test_every_replicas_audit_chain_verifies_and_the_stream_holds_all_their_events(
    fleet: Fleet, browsers: list[aiohttp.ClientSession]
) -> None:
    bob = await signed_in(fleet, browsers, BOB)
    for replica in fleet.replicas:  # each replica records a denial of its own
        assert await bob.status(f"{replica.url}/notebook/alice/nb1/echo") == 403
    client = redis.Redis.from_url(fleet.redis.url)
    chains = {replica.index: read_chain_id(replica.audit_dir) for replica in fleet.replicas}
    assert None not in chains.values() and len(set(chains.values())) == REPLICAS

    async def shipped(directory: Path, chain_id: str) -> bool:
        return (await read_stream_copy(client, chain_id)).shipped == verify(directory).last_seq

    try:
        events = 0
        for replica in fleet.replicas:
            chain_id = chains[replica.index]
            assert chain_id is not None
            await wait_until(functools.partial(shipped, replica.audit_dir, chain_id), timeout_s=10)
            copy = await read_stream_copy(client, chain_id)  # the stream first, then the files (see verify)
            report = verify(replica.audit_dir, complete=True, copy=copy)
            assert report.ok, report.problem
            assert report.compared == list(range(1, report.last_seq + 1))  # each event is in the stream, unaltered
            events += report.last_seq
        assert await client.xlen(STREAM) == events  # and the stream holds nothing else
    finally:
        await client.aclose()


@dataclass
class Outcome:
    started: float
    ended: float
    status: int | None  # None: the connection failed


async def test_a_replica_killed_mid_traffic_costs_only_its_in_flight_requests(
    fleet: Fleet, browsers: list[aiohttp.ClientSession]
) -> None:
    """Last in this module: the killed replica stays down."""
    alice = await signed_in(fleet, browsers, ALICE)
    victim = 1
    outcomes: list[Outcome] = []
    stop = asyncio.Event()

    async def keep_working(http: aiohttp.ClientSession, post: bool) -> None:
        # POSTs of 0.2 s each are in flight most of the time, and nginx never retries one it has sent.
        method, path = ("POST", "slow?delay_s=0.2") if post else ("GET", "echo")
        while not stop.is_set():
            started = time.monotonic()
            try:
                async with http.request(method, f"{fleet.url}/notebook/alice/nb1/{path}", headers=alice.headers) as r:
                    await r.read()
                    status: int | None = r.status
            except aiohttp.ClientError:
                status = None
            outcomes.append(Outcome(started, time.monotonic(), status))

    async def held(http: aiohttp.ClientSession, replica: int) -> int | None:
        url = f"{fleet.replicas[replica].url}/notebook/alice/nb1/slow?delay_s=2"
        try:
            async with http.get(url, headers=alice.headers) as resp:
                await resp.read()
                return resp.status
        except aiohttp.ClientError:
            return None

    async with aiohttp.ClientSession() as http:
        users = [asyncio.create_task(keep_working(http, post=i % 2 == 0)) for i in range(6)]
        holding = {i: [asyncio.create_task(held(http, i)) for _ in range(2)] for i in range(REPLICAS)}
        await wait_until(lambda: len(outcomes) >= 30)
        await asyncio.sleep(0.3)  # every held request has reached the notebook
        fleet.kill(victim)
        killed_at = time.monotonic()
        await asyncio.sleep(2.0)
        stop.set()
        await asyncio.gather(*users)
        held_statuses = {i: [await task for task in tasks] for i, tasks in holding.items()}

    # Requests sent straight to the killed replica are lost; those on the others are not.
    assert held_statuses == {i: [None, None] if i == victim else [200, 200] for i in range(REPLICAS)}
    # Through nginx: every request started after the kill succeeded; every failure was in flight at the kill.
    after = [o for o in outcomes if o.started > killed_at]
    assert after and all(o.status == 200 for o in after)
    failed = [o for o in outcomes if o.status != 200]
    in_flight = [o for o in outcomes if o.started <= killed_at <= o.ended]
    assert all(o.started <= killed_at <= o.ended for o in failed)
    print(f"kill -9 of one of {REPLICAS}: {len(failed)} of {len(in_flight)} requests in flight through nginx failed")
