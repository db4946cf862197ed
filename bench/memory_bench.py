"""The gateway's memory (RSS) idle and under issue 15's load: 10,000 sessions in use, 10,000 routes, 1,000
open kernel-like WebSockets; bytes per route, per session and per WebSocket. Target: <= 200 MiB with all three.

Two gateways run as `proxy_bench.py` starts them (`serve`, Redis sessions, a policy file, audit, INFO access
log): one with the bench's single route (idle RSS), one with 10,000 more static routes; on the latter, one
request with each of 10,000 distinct session cookies (10,000 users, allowed by a group rule), then 1,000
WebSockets held open through it, each after one echo (a kernel channel that is connected and quiet).
Usage: `.venv/bin/python bench/memory_bench.py [--routes 10000] [--sessions 10000] [--websockets 1000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis
from proxy_bench import (
    PREFIX,
    ensure_command,
    free_port,
    make_credentials,
    rss_bytes,
    start_gateway,
    start_redis,
    start_upstream,
    wait_proxying,
)

from gateway.cookies import SESSION_COOKIE, CookieSigner
from gateway.identity import Identity
from gateway.sessions import Expiry, RedisSessionStore, Session, new_session_id

MAX_LOADED_RSS_MIB = 200.0  # issue 15
GROUP = "bench-users"
POLICY = f"p, group:{GROUP}, bench, *, edit, allow\n"


def routes_toml(count: int, upstream_port: int) -> str:
    """`count` more static routes (namespace ns-00000 ... , server nb), all to the upstream."""
    return "".join(
        f'[[route]]\nnamespace = "ns-{i:05d}"\nname = "nb"\nurl = "http://127.0.0.1:{upstream_port}"\n'
        for i in range(count)
    )


async def make_cookies(redis_url: str, cookie_secret: str, count: int) -> list[str]:
    """`count` signed-in users' session cookies (one user each, in the group the policy allows)."""
    client = aioredis.Redis.from_url(redis_url)
    store = RedisSessionStore(client, Expiry(idle_s=8 * 3600, max_age_s=24 * 3600))
    signer = CookieSigner(cookie_secret)
    now = time.time()
    sessions = [
        Session(
            new_session_id(),
            Identity(f"user{i:05d}@example.com", f"user{i:05d}@example.com", (GROUP,), "session"),
            created_at=now,
            last_seen=now,
        )
        for i in range(count)
    ]
    try:
        for start in range(0, count, 20):  # within the client pool's connection limit
            await asyncio.gather(*(store.save(s) for s in sessions[start : start + 20]))
    finally:
        await client.aclose()
    return [f"{SESSION_COOKIE}={signer.sign(s.id)}" for s in sessions]


async def use_sessions(url: str, cookies: list[str], concurrency: int) -> dict[int, int]:
    """One GET per cookie; the count of each status."""
    statuses: dict[int, int] = {}
    queue = list(cookies)

    async def worker(session: aiohttp.ClientSession) -> None:
        while queue:
            cookie = queue.pop()
            async with session.get(url, headers={"Cookie": cookie}) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return statuses


async def hold_websockets(
    url: str, cookies: list[str], origin: str, all_open: asyncio.Event, release: asyncio.Event
) -> int:
    """Open a WebSocket per cookie through the gateway, one echo each; set `all_open` and keep them open until
    `release` is set; return how many opened."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        sockets = []
        for start in range(0, len(cookies), 50):
            batch = cookies[start : start + 50]
            opened = await asyncio.gather(
                *(session.ws_connect(url, headers={"Cookie": c, "Origin": origin}) for c in batch)
            )
            for ws in opened:
                await ws.send_str('{"header": {"msg_type": "kernel_info_request"}}')
                await ws.receive()
            sockets.extend(opened)
        all_open.set()
        await release.wait()
        for ws in sockets:
            await ws.close()
    return len(sockets)


def settle(pid: int, seconds: float = 2.0) -> int:
    """RSS once the process has had a moment to finish what the last step started."""
    time.sleep(seconds)
    return rss_bytes(pid)


def mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"


async def websockets_rss(url: str, cookies: list[str], origin: str, pid: int) -> tuple[int, int]:
    """(WebSockets opened, the gateway's RSS while they are open)."""
    all_open, release = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(hold_websockets(url, cookies, origin, all_open, release))
    waiter = asyncio.create_task(all_open.wait())
    await asyncio.wait((holder, waiter), return_when=asyncio.FIRST_COMPLETED)
    if holder.done():  # failed before all were open
        waiter.cancel()
        return holder.result(), 0
    rss = await asyncio.to_thread(settle, pid)
    release.set()
    return await holder, rss


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routes", type=int, default=10_000, help="static routes added (default 10,000)")
    parser.add_argument("--sessions", type=int, default=10_000, help="distinct session cookies used (10,000)")
    parser.add_argument("--websockets", type=int, default=1_000, help="WebSockets held open (default 1,000)")
    parser.add_argument("--concurrency", type=int, default=32, help="HTTP requests in flight")
    parser.add_argument(
        "--gateway-env", action="append", default=[], metavar="KEY=VALUE", help="extra gateway environment"
    )
    parser.add_argument("--out", type=Path, help="also write the report (markdown) here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    extra_env = dict(item.split("=", 1) for item in args.gateway_env)
    redis = ensure_command("redis-server", "redis-server")
    ports = {name: free_port() for name in ("upstream", "redis", "gateway", "loaded")}
    rows: list[tuple[str, str]] = []
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gateway-memory-")))
        jwks, _ = make_credentials(workdir, ports["upstream"])
        start_upstream(stack, ports["upstream"], jwks)
        start_redis(stack, redis, ports["redis"])
        redis_url = f"redis://127.0.0.1:{ports['redis']}/0"
        cookie_secret = secrets.token_urlsafe(48)
        policy = workdir / "policy.csv"
        policy.write_text(POLICY)
        env = {"GATEWAY_POLICY_FILE": str(policy), **extra_env}
        cookies = asyncio.run(make_cookies(redis_url, cookie_secret, max(args.sessions, args.websockets, 1)))
        first = {"Cookie": cookies[0]}

        # 1. Idle, one route.
        with ExitStack() as idle_stack:
            pid = start_gateway(idle_stack, workdir, ports, cookie_secret, "INFO", None, extra_env=env)
            if not wait_proxying(f"http://127.0.0.1:{ports['gateway']}{PREFIX}", first, 60):
                raise SystemExit((workdir / "gateway.log").read_text()[-3000:])
            idle = settle(pid)
        rows.append(("idle (1 route, after one request)", mib(idle)))

        # 2. The same with N more routes.
        pid = start_gateway(
            stack,
            workdir,
            ports,
            cookie_secret,
            "INFO",
            None,
            extra_env=env,
            extra_routes=routes_toml(args.routes, ports["upstream"]),
            name="loaded",
        )
        base = f"127.0.0.1:{ports['loaded']}"
        if not wait_proxying(f"http://{base}{PREFIX}", first, 120):
            raise SystemExit((workdir / "loaded.log").read_text()[-3000:])
        with_routes = settle(pid)
        per_route = (with_routes - idle) / max(args.routes, 1)
        rows.append((f"idle with {args.routes:,} more routes", f"{mib(with_routes)} ({per_route:,.0f} B per route)"))

        # 3. N distinct sessions in use.
        started = time.monotonic()
        statuses = asyncio.run(use_sessions(f"http://{base}{PREFIX}", cookies[: args.sessions], args.concurrency))
        elapsed = time.monotonic() - started
        with_sessions = settle(pid)
        per_session = (with_sessions - with_routes) / max(args.sessions, 1)
        rows.append(
            (
                f"after one request with each of {args.sessions:,} sessions ({elapsed:.0f} s; statuses {statuses})",
                f"{mib(with_sessions)} ({per_session:,.0f} B per session)",
            )
        )

        # 4. N open WebSockets (one echo each, then quiet), on top of the routes and sessions.
        ws_url = f"ws://{base}{PREFIX}ws"
        opened, with_ws = asyncio.run(websockets_rss(ws_url, cookies[: args.websockets], f"http://{base}", pid))
        per_ws = (with_ws - with_sessions) / max(opened, 1)
        rows.append(
            (
                f"with {opened:,} WebSockets open (and the routes and sessions)",
                f"{mib(with_ws)} ({per_ws:,.0f} B per WebSocket)",
            )
        )
        after_ws = settle(pid)
        rows.append(("after the WebSockets closed", mib(after_ws)))
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line), "?")
    met = "yes" if with_ws <= MAX_LOADED_RSS_MIB * 2**20 else "NO"
    lines = [
        "# Memory benchmark",
        "",
        f"{datetime.now(UTC).isoformat(timespec='seconds')} · {os.cpu_count()} x {cpu} · Python "
        f"{platform.python_version()} · aiohttp {aiohttp.__version__}",
        "",
        "RSS of the `python -m gateway serve` process tree (VmRSS), 2 s after each step.",
        "",
        "| state | gateway RSS |",
        "| --- | ---: |",
        *(f"| {state} | {value} |" for state, value in rows),
        "",
        "| target | measured | met |",
        "| --- | ---: | --- |",
        f"| RSS <= {MAX_LOADED_RSS_MIB:.0f} MiB with {args.sessions:,} sessions, {args.routes:,} routes and "
        f"{args.websockets:,} WebSockets | {mib(with_ws)} | {met} |",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
