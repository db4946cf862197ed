"""The audit log at scale: writing events, indexing them, and "the last 1,000 events of one user out
of 1,000,000" from the local index (SQLite) and from Redis (stream + per-user sorted sets).

Usage: `.venv/bin/python bench/audit_bench.py [--events 1000000] [--users 1000] [--skip-redis]`
(about 3-5 minutes and ~2 GB of RAM for Redis at the default size). Figures go to stdout and, with
`--json FILE`, to a file. Nothing here is a test: it depends on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.audit import AuditEvent, AuditLog  # noqa: E402
from gateway.audit.chain import Sealer  # noqa: E402
from gateway.audit.filesink import ChainedFile  # noqa: E402
from gateway.audit.index import FileIndex  # noqa: E402
from gateway.audit.query import Filter  # noqa: E402
from gateway.audit.redis_sink import RedisSink  # noqa: E402
from gateway.audit.verify import verify  # noqa: E402

ACTIONS = ("notebook.access", "notebook.create", "auth.login", "access.denied", "notebook.stop")


def event(n: int, users: int) -> AuditEvent:
    user = f"user{n % users:04d}@example.com"
    return AuditEvent(
        action=ACTIONS[n % len(ACTIONS)],
        outcome="denied" if n % 17 == 0 else "allowed",
        actor=user,
        groups=("staff",),
        auth_method="session",
        session=f"{n % 5000:032x}",
        client_ip=f"10.0.{n % 250}.{n % 200}",
        user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0",
        request_id=f"{n:032x}",
        namespace=f"user{n % users:04d}",
        notebook=f"nb{n % 3}",
        details={"kind": "http", "method": "GET", "path": f"/notebook/user{n % users:04d}/nb{n % 3}/lab"},
    )


async def timed(label: str, results: dict[str, float], run: Callable[[], Awaitable[object]], repeat: int = 5) -> None:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await run()
        samples.append((time.perf_counter() - started) * 1000)
    results[label] = statistics.median(samples)
    print(f"  {label}: median {results[label]:.1f} ms (of {repeat}; first {samples[0]:.1f} ms)", flush=True)


async def bench_write(directory: Path, count: int, users: int, key: bytes | None, results: dict[str, float]) -> None:
    audit = AuditLog(ChainedFile(directory, Sealer(key), 64 * 1024 * 1024), stdout=False)
    await audit.open()
    started = time.perf_counter()
    for n in range(count):
        audit.emit(event(n, users))
    elapsed = time.perf_counter() - started
    await audit.close()
    label = "hmac" if key else "sha256"
    results[f"emit_us_per_event_{label}"] = elapsed / count * 1e6
    size = sum(p.stat().st_size for p in directory.glob("audit-*.jsonl"))  # noqa: ASYNC240 (once, after timing)
    per_event = elapsed / count * 1e6
    print(f"  emit ({label}): {count} events in {elapsed:.1f} s = {per_event:.1f} µs/event, {size / count:.0f} B/event")


async def bench_files(directory: Path, users: int, results: dict[str, float]) -> None:
    index = FileIndex(directory)
    started = time.perf_counter()
    indexed = await asyncio.to_thread(index.catch_up)
    results["index_build_s"] = time.perf_counter() - started
    print(f"  index build: {indexed} events in {results['index_build_s']:.1f} s")
    user = f"user{users // 2:04d}@example.com"

    async def last_1000() -> None:
        page = await index.search(Filter(user=user), limit=1000)
        assert len(page.events) == 1000, len(page.events)

    await timed("files_last_1000_of_one_user_ms", results, last_1000)

    async def namespace_denied() -> None:
        await index.search(Filter(namespace=f"user{users // 3:04d}", outcome="denied"), limit=100)

    await timed("files_namespace_denied_ms", results, namespace_denied)

    async def text_anywhere() -> None:
        await index.search(Filter(text="10.0.7.7"), limit=100)

    await timed("files_text_search_ms", results, text_anywhere, repeat=3)
    started = time.perf_counter()
    report = await asyncio.to_thread(verify, directory)
    results["verify_s"] = time.perf_counter() - started
    print(f"  verify: {report.events} events in {results['verify_s']:.1f} s, ok={report.ok}")
    await index.stop()


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server), or use --skip-redis")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    raise SystemExit("redis-server did not start")


async def bench_redis(directory: Path, count: int, users: int, results: dict[str, float]) -> None:
    proc, port = start_redis(directory)
    client = aioredis.Redis(port=port)
    try:
        file = ChainedFile(directory / "audit", Sealer(), 64 * 1024 * 1024)
        file.open()  # only to read the chain id and length of the log written before
        file.close()
        sink = RedisSink(
            client, file.directory, chain_id=lambda: file.chain_id, latest_seq=lambda: file.seq, max_events=count
        )
        started = time.perf_counter()
        shipped = await sink.ship()
        elapsed = time.perf_counter() - started
        results["redis_ship_us_per_event"] = elapsed / max(shipped, 1) * 1e6
        info = await client.info("memory")
        print(f"  ship to Redis: {shipped} events in {elapsed:.1f} s; Redis uses {info['used_memory_human']}")
        user = f"user{users // 2:04d}@example.com"

        async def last_1000() -> None:
            page = await sink.search(Filter(user=user), limit=1000)
            assert len(page.events) == 1000, len(page.events)

        await timed("redis_last_1000_of_one_user_ms", results, last_1000)

        async def newest_100() -> None:
            await sink.search(Filter(), limit=100)

        await timed("redis_newest_100_ms", results, newest_100)

        async def action_outcome() -> None:
            await sink.search(Filter(action="notebook.create", outcome="denied"), limit=100)

        await timed("redis_action_and_outcome_scan_ms", results, action_outcome)
    finally:
        await client.aclose()
        proc.terminate()
        proc.wait()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=1000, help="events are spread evenly over this many users")
    parser.add_argument("--skip-redis", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results: dict[str, float] = {}
    print(f"audit bench: {args.events} events, {args.users} users, {platform.python_version()} on {platform.node()}")
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
        work = Path(tmp)
        await bench_write(work / "hmac", min(args.events, 100_000), args.users, b"k" * 32, results)
        await bench_write(work / "audit", args.events, args.users, None, results)
        await bench_files(work / "audit", args.users, results)
        if not args.skip_redis:
            await bench_redis(work, args.events, args.users, results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
