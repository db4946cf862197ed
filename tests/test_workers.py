"""GATEWAY_WORKERS=2: one `serve` command, two worker processes on one port (SO_REUSEPORT) sharing a real Redis.
Both serve (each process stamps its own prefix on the request ids it hands out), and a sign-out answered by one
worker ends the session on the other within a second (the session cache's invalidation channel)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from gateway.cli import workers as cli_workers
from gateway.cookies import SESSION_COOKIE, CookieSigner
from gateway.identity import Identity
from gateway.sessions import Expiry, RedisSessionStore, Session, new_session_id

from .conftest import RedisServer, make_settings, unused_port, wait_for_port, wait_until
from .replicas import Fleet, require_tools

COOKIE_SECRET = "workers-share-this-cookie-secret-0123456789"


class Workers:
    def __init__(self, fleet: Fleet, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.fleet, self.port, self.proc, self.log = fleet, port, proc, log
        self.url = f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    require_tools()
    directory = tmp_path_factory.mktemp("workers")
    fleet = Fleet(directory, unused_port())
    fleet.redis.start()
    fleet.idp.start()
    replica = fleet.replicas[0]
    fleet.routes_file.write_text("")
    env = fleet.environment(replica) | {
        "GATEWAY_WORKERS": "2",
        "GATEWAY_PUBLIC_URL": replica.url,
        "GATEWAY_COOKIE_SECRET": COOKIE_SECRET,
    }
    log = directory / "workers.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=directory
        )
    try:
        wait_for_port(replica.port, proc=proc, timeout_s=60)
        yield Workers(fleet, replica.port, proc, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        fleet.idp.stop()
        fleet.redis.stop()


def worker_pids(parent: int) -> list[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    # multiprocessing's spawned workers; its resource tracker is a child too, and no worker.
    return [int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def running(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


async def signed_in(redis: RedisServer) -> tuple[Session, dict[str, str]]:
    """A session stored with the gateway's own classes, as a sign-in would leave it."""
    client = aioredis.Redis.from_url(redis.url)
    try:
        now = time.time()
        session = Session(new_session_id(), Identity("worker-user@example.com"), created_at=now, last_seen=now)
        await RedisSessionStore(client, Expiry(idle_s=3600, max_age_s=7200)).save(session)
    finally:
        await client.aclose()
    return session, {"Cookie": f"{SESSION_COOKIE}={CookieSigner(COOKIE_SECRET).sign(session.id)}"}


async def answers(url: str, headers: dict[str, str], times: int) -> list[tuple[int, str]]:
    """(status, the answering process's request id prefix) for `times` requests, each on a new connection."""
    seen = []
    for _ in range(times):
        async with aiohttp.ClientSession() as fresh, fresh.get(url, headers=headers) as resp:
            seen.append((resp.status, resp.headers["X-Request-Id"].split("-")[0]))
    return seen


async def test_two_workers_both_serve_and_a_sign_out_on_one_is_seen_by_the_other(workers: Workers) -> None:
    assert len(worker_pids(workers.proc.pid)) == 2
    session, headers = await signed_in(workers.fleet.redis)
    userinfo = f"{workers.url}/oauth2/userinfo"

    async def both_answered() -> bool:
        seen = await answers(userinfo, headers, 20)
        assert {status for status, _ in seen} == {200}
        return len({prefix for _, prefix in seen}) == 2

    await wait_until(both_answered, timeout_s=30)  # each worker has the session cached now

    async with aiohttp.ClientSession() as http:
        sign_out = f"{workers.url}/oauth2/sign_out"
        async with http.post(sign_out, headers=headers | {"Origin": workers.url}, allow_redirects=False) as resp:
            assert resp.status in (302, 303)
            signed_out_by = resp.headers["X-Request-Id"].split("-")[0]

    async def refused_by_the_other() -> bool:
        seen = await answers(userinfo, headers, 10)
        assert {status for status, _ in seen} == {401}, seen  # from the first request on, whichever worker
        return any(prefix != signed_out_by for _, prefix in seen)

    await wait_until(refused_by_the_other, timeout_s=10)


async def test_each_worker_writes_its_own_audit_chain(workers: Workers) -> None:
    audit = workers.fleet.replicas[0].audit_dir
    await wait_until(lambda: sorted(p.name for p in audit.iterdir()) == ["worker-0", "worker-1"], timeout_s=10)


async def test_a_worker_that_dies_takes_the_others_down_so_the_pod_restarts(workers: Workers) -> None:
    pids = worker_pids(workers.proc.pid)
    os.kill(pids[0], signal.SIGKILL)
    assert workers.proc.wait(timeout=60) != 0
    assert not any(running(pid) for pid in pids)


def test_workers_are_refused_where_one_process_must_hold_the_state(tmp_path: Path) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text("")
    local = make_settings(workers=2, backend="local", session_store="redis")
    assert any("local backend" in problem for problem in cli_workers.problems(local, dev=False))
    memory = make_settings(workers=2, routes_file=routes, session_store="memory")
    assert any("SESSION_STORE" in problem for problem in cli_workers.problems(memory, dev=False))
    assert cli_workers.problems(make_settings(workers=2, routes_file=routes, session_store="redis"), dev=False) == []
