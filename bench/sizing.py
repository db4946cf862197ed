"""Sizing numbers for docs/operators.md ("Sizing"), measured on this machine:

- Redis memory per 1,000 sessions: N sessions written through the gateway's own `RedisSessionStore` into an empty
  redis-server (each with a signed ID token, a refresh token and its back-channel logout indexes, as a sign-in
  through a real provider leaves them), `INFO memory` before and after.
- Gateway replicas per 1,000 active users: the CPU one `python -m gateway serve` process spends per proxied HTTP
  request (session cookie, authorization, audit, access log at INFO) and per relayed WebSocket frame, read from
  /proc, times an assumed load per active user, against the CPU a replica may use before the autoscaler adds one.

Usage: `.venv/bin/python bench/sizing.py [--sessions 10000] [--requests 20000]` (about a minute); prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import math
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
import jwt
import redis.asyncio as aioredis
from cryptography.hazmat.primitives.asymmetric import rsa
from proxy_bench import (
    HEADERS,
    PREFIX,
    cpu_seconds,
    ensure_command,
    free_port,
    make_credentials,
    make_session,
    start_gateway,
    start_redis,
    start_upstream,
    wait_proxying,
    ws_echoes,
)

from gateway.identity import Identity
from gateway.sessions import Expiry, RedisSessionStore, Session, new_session_id

# The assumed load of one active user: a JupyterLab tab in use. Its background polling (kernels, sessions,
# terminals, the open directory: each about every 10 s) is about 0.5 requests/s; opening, saving and the file
# browser add to it, so we take 1 request/s. Running a cell about every 10 s relays some 6 frames (request,
# busy, input, output, result, idle), completions and comms more: we take 2 frames/s.
REQUESTS_PER_USER_S = 1.0
FRAMES_PER_USER_S = 2.0
# The CPU a replica may use on average: the HorizontalPodAutoscaler's target (200% of the 250m request, half of
# the one-core limit: deploy/base/hpa.yaml), leaving room for bursts while a new replica starts.
REPLICA_CPU_CORES = 0.5


def realistic_session(key: rsa.RSAPrivateKey, index: int) -> Session:
    """A session as a sign-in through an OpenID provider leaves it: identity with groups, a signed ID token (for
    id_token_hint), a refresh token, and the provider's `sub` and `sid` (indexed for back-channel logout)."""
    now = time.time()
    email = f"user{index:06d}@example.com"
    groups = ("ml-team", "staff", f"project-{index % 50}")
    claims = {
        "iss": "https://dex.example.com/dex",
        "sub": secrets.token_urlsafe(24),
        "aud": "notebook-gateway",
        "exp": int(now) + 3600,
        "iat": int(now),
        "nonce": secrets.token_urlsafe(32),
        "at_hash": secrets.token_urlsafe(16),
        "email": email,
        "email_verified": True,
        "name": f"User {index}",
        "groups": list(groups),
    }
    id_token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "sizing"})
    return Session(
        id=new_session_id(),
        identity=Identity(email, email, groups, "session"),
        created_at=now,
        last_seen=now,
        id_token=id_token,
        refresh_token=secrets.token_urlsafe(64),
        tokens_expire_at=now + 3600,
        provider_sid=secrets.token_urlsafe(16),
        provider_sub=str(claims["sub"]),
    )


async def redis_bytes_per_session(redis_url: str, count: int) -> tuple[float, int]:
    """(bytes of Redis memory per session, bytes of one session's stored JSON)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    client = aioredis.Redis.from_url(redis_url)
    store = RedisSessionStore(client, Expiry(idle_s=8 * 3600, max_age_s=7 * 24 * 3600))
    try:
        await client.flushall()
        before = int((await client.info("memory"))["used_memory"])
        sessions = [realistic_session(key, i) for i in range(count)]
        for start in range(0, count, 20):  # within the client pool's connection limit
            await asyncio.gather(*(store.save(s) for s in sessions[start : start + 20]))
        after = int((await client.info("memory"))["used_memory"])
        await client.flushall()
    finally:
        await client.aclose()
    return (after - before) / count, len(sessions[0].to_json())


async def http_load(url: str, total: int, concurrency: int) -> int:
    """GET `url` `total` times from `concurrency` workers; return how many answered 200."""
    done = 0
    remaining = total

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done, remaining
        while remaining > 0:
            remaining -= 1
            async with session.get(url, headers=HEADERS) as resp:
                await resp.read()
                done += resp.status == 200

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return done


def measure_cpu(args: argparse.Namespace, redis: str) -> tuple[float, float]:
    """(gateway CPU µs per proxied HTTP request, per relayed WebSocket frame)."""
    ports = {name: free_port() for name in ("upstream", "redis", "gateway")}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gateway-sizing-")))
        jwks, _ = make_credentials(workdir, ports["upstream"])
        start_upstream(stack, ports["upstream"], jwks)
        cookie_secret = secrets.token_urlsafe(48)
        start_redis(stack, redis, ports["redis"])
        HEADERS["Cookie"] = asyncio.run(make_session(f"redis://127.0.0.1:{ports['redis']}/0", cookie_secret))
        HEADERS["Origin"] = f"http://127.0.0.1:{ports['gateway']}"
        pid = start_gateway(stack, workdir, ports, cookie_secret, "INFO", None)
        url = f"http://127.0.0.1:{ports['gateway']}{PREFIX}"
        if not wait_proxying(url, HEADERS, 60):
            raise SystemExit((workdir / "gateway.log").read_text()[-3000:])
        asyncio.run(http_load(url, args.requests // 10, args.concurrency))  # warm-up
        before = cpu_seconds(pid)
        ok = asyncio.run(http_load(url, args.requests, args.concurrency))
        http_us = (cpu_seconds(pid) - before) * 1e6 / ok
        ws_url = f"ws://127.0.0.1:{ports['gateway']}{PREFIX}ws"
        asyncio.run(ws_echoes(ws_url, 4, 200, 256, 8))  # warm-up
        before = cpu_seconds(pid)
        asyncio.run(ws_echoes(ws_url, 4, args.frames // 8, 256, 8))  # each echo is two frames relayed
        frame_us = (cpu_seconds(pid) - before) * 1e6 / (args.frames // 8 * 4 * 2)
    return http_us, frame_us


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10_000, help="sessions written for the memory measurement")
    parser.add_argument("--requests", type=int, default=20_000, help="HTTP requests for the CPU measurement")
    parser.add_argument("--concurrency", type=int, default=32, help="HTTP requests in flight")
    parser.add_argument("--frames", type=int, default=40_000, help="WebSocket frames relayed for the CPU measurement")
    parser.add_argument("--requests-per-user-s", type=float, default=REQUESTS_PER_USER_S)
    parser.add_argument("--frames-per-user-s", type=float, default=FRAMES_PER_USER_S)
    parser.add_argument("--replica-cpu", type=float, default=REPLICA_CPU_CORES, help="cores a replica may average")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    redis = ensure_command("redis-server", "redis-server")
    port = free_port()
    with ExitStack() as stack:
        start_redis(stack, redis, port)
        per_session, json_bytes = asyncio.run(redis_bytes_per_session(f"redis://127.0.0.1:{port}/0", args.sessions))
    http_us, frame_us = measure_cpu(args, redis)
    user_cores = (args.requests_per_user_s * http_us + args.frames_per_user_s * frame_us) / 1e6
    replicas = 1000 * user_cores / args.replica_cpu
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line), "?")
    print(
        f"{datetime.now(UTC).isoformat(timespec='seconds')} · {os.cpu_count()} x {cpu} · Python "
        f"{platform.python_version()}\n"
    )
    print("| measure | value |")
    print("| --- | ---: |")
    print(f"| Redis memory per 1,000 sessions | {per_session * 1000 / 2**20:.2f} MiB ({per_session:,.0f} B each) |")
    print(f"| one session's stored JSON | {json_bytes:,} B |")
    print(f"| gateway CPU per proxied HTTP request | {http_us:,.0f} µs |")
    print(f"| gateway CPU per relayed WebSocket frame | {frame_us:,.0f} µs |")
    print(
        f"| CPU per active user ({args.requests_per_user_s:g} req/s + {args.frames_per_user_s:g} frames/s) | "
        f"{user_cores * 1000:.2f} millicores |"
    )
    print(
        f"| replicas per 1,000 active users (at {args.replica_cpu:g} core each) | {replicas:.2f} "
        f"(round up: {math.ceil(replicas)}; never fewer than 2) |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
