"""Soak: the gateway under mixed traffic for a while, reporting what drifts.

One `python -m gateway serve` (Redis sessions, a policy file, audit, INFO access log) in front of the bench
upstream and a real jupyter-server, signing users in through the real OpenID provider of tests/oidc. After a
short closed-loop run to find the peak, it holds `--load` (80 %) of that peak of 1 KiB GETs, and meanwhile:
kernels running code over their WebSockets, a sign-in through the provider every few seconds (then an API
call with the new session), API reads, and policy edits (a grant, then its revocation). Every interval it
records errors, HTTP p50/p99, the gateway's RSS and open file descriptors, and Redis memory; at the end it
stops the gateway and verifies the audit chain with `python -m gateway audit verify`.
Usage: `PYTHONPATH=. .venv/bin/python bench/soak.py [--minutes 10] [--interval 30]` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis
from proxy_bench import (
    JUPYTER_PREFIX,
    PREFIX,
    ROOT,
    ensure_command,
    free_port,
    make_credentials,
    rss_bytes,
    start_gateway,
    start_jupyter,
    start_redis,
    start_upstream,
    wait_proxying,
)
from yarl import URL

from tests.fakes.node_idp import ALICE, BOB, DEFAULT_USERS, PASSWORD, NodeIdP, NodeUser, sign_in

KERNEL_PROTOCOL = "v1.kernel.websocket.jupyter.org"
NAVIGATE = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
# alice is a bootstrap admin (policy edits, API reads); bob and the load's users reach the notebooks through
# this group rule.
POLICY = "p, group:staff, bench, *, edit, allow\n"
# The gateway caps one user's requests in flight (GATEWAY_UPSTREAM_REQUESTS_PER_USER, 64): the HTTP load is
# spread over this many signed-in users, each kept under the cap, as many browsers would be.
IN_FLIGHT_PER_USER = 48


def load_users(count: int) -> dict[str, NodeUser]:
    """The provider's accounts: alice, bob and `count` users for the HTTP load (all in group staff)."""
    users = dict(DEFAULT_USERS)
    users.update({f"load{i}@example.com": NodeUser(groups=("staff",)) for i in range(count)})
    return users


async def signed_in(base: str, user: str) -> aiohttp.ClientSession:
    """A browser-like client session, signed in as `user` through the provider's pages (soak and faults)."""
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        callback = await sign_in(session, f"{base}/oauth2/start", user, PASSWORD)
        async with session.get(callback, allow_redirects=False, headers=NAVIGATE) as resp:
            if resp.status != 302:
                raise RuntimeError(f"callback answered {resp.status}: {await resp.text()}")
    except BaseException:
        await session.close()
        raise
    return session


@dataclass
class Interval:
    """What happened in one reporting interval."""

    http: list[float] = field(default_factory=list)  # seconds per successful request
    kernel: list[float] = field(default_factory=list)  # seconds per executed cell
    sign_ins: int = 0
    api: int = 0
    policy_edits: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


@dataclass
class Sample:
    elapsed_s: float
    interval: Interval
    rss: int
    fds: int
    redis_bytes: int


class Soak:
    def __init__(self, base: str, args: argparse.Namespace) -> None:
        self.base, self.args = base, args
        self.current = Interval()
        self.stopping = asyncio.Event()
        self.origin = {"Origin": base}

    # --- traffic ---------------------------------------------------------------------------------------------

    async def http_peak(self, sessions: list[aiohttp.ClientSession], seconds: float) -> float:
        """Closed-loop 1 KiB GETs from 32 workers (spread over the users) for `seconds`: requests per second."""
        done = 0
        deadline = time.monotonic() + seconds

        async def worker(session: aiohttp.ClientSession) -> None:
            nonlocal done
            while time.monotonic() < deadline:
                async with session.get(f"{self.base}{PREFIX}") as resp:
                    await resp.read()
                    done += resp.status == 200

        started = time.monotonic()
        await asyncio.gather(*(worker(sessions[i % len(sessions)]) for i in range(32)))
        return done / (time.monotonic() - started)

    async def http_load(self, sessions: list[aiohttp.ClientSession], rate: float) -> None:
        """Open-loop GETs at `rate` per second, round-robin over the users' sessions (each on its own schedule
        slot; one that finds its user at IN_FLIGHT_PER_USER is not sent and counts as an error: the gateway is
        not keeping up)."""
        period, slot = 1 / rate, time.monotonic()
        in_flight: dict[int, set[asyncio.Task[None]]] = {i: set() for i in range(len(sessions))}
        turn = 0

        async def one(session: aiohttp.ClientSession) -> None:
            started = time.monotonic()
            try:
                async with session.get(f"{self.base}{PREFIX}") as resp:
                    body = await resp.read()
                if resp.status == 200 and len(body) == 1024:
                    self.current.http.append(time.monotonic() - started)
                else:
                    self.current.error(f"http {resp.status}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.current.error(f"http {type(exc).__name__}")

        while not self.stopping.is_set():
            slot += period
            delay = slot - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            turn = (turn + 1) % len(sessions)
            mine = in_flight[turn]
            if len(mine) < IN_FLIGHT_PER_USER:
                task = asyncio.create_task(one(sessions[turn]))
                mine.add(task)
                task.add_done_callback(mine.discard)
            else:
                self.current.error(f"http backlog over {IN_FLIGHT_PER_USER} a user")
        await asyncio.gather(*(task for tasks in in_flight.values() for task in tasks))

    async def kernel(self, session: aiohttp.ClientSession, xsrf: str) -> None:
        """A kernel started through the gateway, running a cell every second over its WebSocket."""
        headers = {"X-XSRFToken": xsrf, **self.origin}
        async with session.post(
            f"{self.base}{JUPYTER_PREFIX}api/kernels", json={"name": "python3"}, headers=headers
        ) as resp:
            if resp.status != 201:
                self.current.error(f"kernel start {resp.status}")
                return
            kernel_id = (await resp.json())["id"]
        url = f"{self.base}{JUPYTER_PREFIX}api/kernels/{kernel_id}/channels"
        try:
            async with session.ws_connect(url, protocols=(KERNEL_PROTOCOL,), headers=self.origin) as ws:
                count = 0
                while not self.stopping.is_set():
                    count += 1
                    started = time.monotonic()
                    try:
                        text = await execute(ws, f"print(sum(range({count})))")
                        if text == f"{sum(range(count))}\n":
                            self.current.kernel.append(time.monotonic() - started)
                        else:
                            self.current.error("kernel wrong output")
                    except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
                        self.current.error(f"kernel {type(exc).__name__}")
                        return
                    await self.pause(1.0)
        finally:
            async with session.delete(f"{self.base}{JUPYTER_PREFIX}api/kernels/{kernel_id}", headers=headers):
                pass

    async def sign_ins(self) -> None:
        """bob signs in through the provider every few seconds, then uses the session once."""
        while not self.stopping.is_set():
            try:
                session = await signed_in(self.base, BOB)
                async with session:
                    async with session.get(f"{self.base}{PREFIX}") as resp:
                        await resp.read()
                    if resp.status == 200:
                        self.current.sign_ins += 1
                    else:
                        self.current.error(f"after sign-in {resp.status}")
            except Exception as exc:  # the provider's pages, the callback: all count
                self.current.error(f"sign-in {type(exc).__name__}")
            await self.pause(self.args.sign_in_every)

    async def api(self, session: aiohttp.ClientSession) -> None:
        """An admin's API reads and policy edits: a grant, then its revocation."""
        edits = 0
        while not self.stopping.is_set():
            async with session.get(f"{self.base}/api/policies") as resp:
                await resp.read()
                if resp.status == 200:
                    self.current.api += 1
                else:
                    self.current.error(f"api {resp.status}")
            edits += 1
            if edits % 5 == 0:  # every fifth tick
                rule = {"subject": f"user:carol{edits // 10}@example.com", "namespace": "bench", "role": "view"}
                method = session.post if edits % 10 == 0 else session.delete
                async with method(f"{self.base}/api/policies", json=rule, headers=self.origin) as resp:
                    await resp.read()
                    if resp.status == 200:
                        self.current.policy_edits += 1
                    else:
                        self.current.error(f"policy edit {resp.status}")
            await self.pause(self.args.api_every)

    async def pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            pass

    # --- the run ---------------------------------------------------------------------------------------------

    async def run(self, gateway_pid: int, redis_url: str) -> tuple[float, float, list[Sample]]:
        """(peak req/s, the rate held, samples)."""
        alice = await signed_in(self.base, ALICE)
        users = [await signed_in(self.base, f"load{i}@example.com") for i in range(self.args.users)]
        redis = aioredis.Redis.from_url(redis_url)
        samples: list[Sample] = []
        try:
            async with alice.get(f"{self.base}{JUPYTER_PREFIX}lab", headers=NAVIGATE) as resp:
                await resp.read()
            jar = alice.cookie_jar.filter_cookies(URL(f"{self.base}{JUPYTER_PREFIX}"))
            xsrf = jar["_xsrf"].value if "_xsrf" in jar else ""
            started = time.monotonic()  # the first row includes the peak run (its side traffic counts)
            tasks = [
                *(asyncio.create_task(self.kernel(alice, xsrf)) for _ in range(self.args.kernels)),
                asyncio.create_task(self.sign_ins()),
                asyncio.create_task(self.api(alice)),
            ]
            peak = await self.http_peak(users, self.args.peak_seconds)  # with the rest of the mix running
            rate = self.args.rate or peak * self.args.load
            tasks.append(asyncio.create_task(self.http_load(users, rate)))
            end = started + self.args.minutes * 60
            while time.monotonic() < end:
                await asyncio.sleep(min(self.args.interval, max(end - time.monotonic(), 0)))
                interval, self.current = self.current, Interval()
                used = int((await redis.info("memory"))["used_memory"])
                sample = Sample(time.monotonic() - started, interval, rss_bytes(gateway_pid), fds(gateway_pid), used)
                samples.append(sample)
                print(row(sample), flush=True)
                for task in tasks:
                    if task.done() and task.exception() is not None:
                        raise RuntimeError("a traffic task failed") from task.exception()
            self.stopping.set()
            await asyncio.gather(*tasks)
        finally:
            for session in (alice, *users):
                await session.close()
            await redis.aclose()
        return peak, rate, samples


async def execute(ws: aiohttp.ClientWebSocketResponse, code: str) -> str:
    """Run `code` on the kernel (Jupyter's v1 WebSocket framing); the text it printed."""
    msg_id = uuid.uuid4().hex
    header = {
        "msg_id": msg_id,
        "msg_type": "execute_request",
        "username": "soak",
        "session": msg_id,
        "version": "5.3",
        "date": datetime.now(UTC).isoformat(),
    }
    content = {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False}
    sections = [b"shell", *(json.dumps(part).encode() for part in (header, {}, {}, content))]
    offsets = [8 * (len(sections) + 2)]
    for section in sections:
        offsets.append(offsets[-1] + len(section))
    await ws.send_bytes(
        b"".join([len(offsets).to_bytes(8, "little"), *(o.to_bytes(8, "little") for o in offsets)]) + b"".join(sections)
    )
    while True:
        msg = await ws.receive(timeout=30)
        if msg.type != aiohttp.WSMsgType.BINARY:
            raise RuntimeError(f"kernel channel: {msg.type!r}")
        frame: bytes = msg.data
        count = int.from_bytes(frame[:8], "little")
        bounds = [int.from_bytes(frame[8 * (i + 1) : 8 * (i + 2)], "little") for i in range(count)]
        parts = [frame[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
        reply_header, parent = json.loads(parts[1]), json.loads(parts[2])
        if parent.get("msg_id") == msg_id and reply_header["msg_type"] == "stream":
            text: str = json.loads(parts[4])["text"]
            return text
        if parent.get("msg_id") == msg_id and reply_header["msg_type"] == "error":
            raise RuntimeError("the cell failed")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)]


HEADER = (
    "| t s | HTTP ok | errors | HTTP p50 ms | HTTP p99 ms | cells | cell p50 ms | sign-ins | API | policy edits "
    "| RSS MiB | fds | Redis MiB |\n| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
    "| ---: | ---: |"
)


def row(sample: Sample) -> str:
    i = sample.interval
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(i.errors.items())) or "0"
    cell = statistics.median(i.kernel) * 1000 if i.kernel else 0.0
    return (
        f"| {sample.elapsed_s:.0f} | {len(i.http):,} | {errors} | {percentile(i.http, 0.5) * 1000:.1f} | "
        f"{percentile(i.http, 0.99) * 1000:.1f} | {len(i.kernel)} | {cell:.0f} | {i.sign_ins} | {i.api} | "
        f"{i.policy_edits} | {sample.rss / 2**20:.1f} | {sample.fds} | {sample.redis_bytes / 2**20:.2f} |"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to hold the load (default 10)")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds per report row (default 30)")
    parser.add_argument("--warmup-rows", type=int, default=1, help="rows before RSS growth is measured (default 1)")
    parser.add_argument("--load", type=float, default=0.8, help="fraction of the measured peak to hold (0.8)")
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s to hold instead (skips --load)")
    parser.add_argument("--peak-seconds", type=float, default=10.0, help="closed-loop run that finds the peak")
    parser.add_argument("--users", type=int, default=8, help="signed-in users the HTTP load is spread over (8)")
    parser.add_argument("--kernels", type=int, default=2, help="kernels running a cell a second (default 2)")
    parser.add_argument("--sign-in-every", type=float, default=5.0, help="seconds between sign-ins (default 5)")
    parser.add_argument("--api-every", type=float, default=2.0, help="seconds between API reads (default 2)")
    parser.add_argument("--note", default="", help="a line for the report")
    parser.add_argument("--out", type=Path, help="also write the report (markdown) here")
    return parser.parse_args(argv)


def gateway_complaints(log: Path) -> Counter[str]:
    """The gateway's own account of what went wrong: its lines at WARNING or above and its 5xx refusals
    (logged at INFO), counted by logger and message with the numbers taken out, so a report can say why."""
    found: Counter[str] = Counter()
    for text in log.read_text(errors="replace").splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            continue
        message = str(line.get("message", ""))
        if line.get("level") in ("WARNING", "ERROR", "CRITICAL") or " refused: 5" in message:
            found[f"{line.get('level')}, {line.get('logger')}: {re.sub(r'[0-9]+', 'N', message)[:200]}"] += 1
    return found


def report(args: argparse.Namespace, peak: float, rate: float, samples: list[Sample], verify: str, ok: bool) -> str:
    total_errors = sum(sum(s.interval.errors.values()) for s in samples)
    after = samples[min(args.warmup_rows, len(samples) - 1)]
    growth = (samples[-1].rss - after.rss) / after.rss
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line), "?")
    lines = [
        "# Soak",
        "",
        f"{datetime.now(UTC).isoformat(timespec='seconds')} · {os.cpu_count()} x {cpu} · Python "
        f"{platform.python_version()} · load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}",
        "",
        *([f"Note: {args.note}", ""] if args.note else []),
        f"{args.minutes:g} minutes; peak (32 closed-loop clients, {args.peak_seconds:g} s, with the rest of the mix "
        f"running) {peak:,.0f} req/s, held {rate:,.0f} req/s of 1 KiB GETs over {args.users} signed-in users; "
        f"{args.kernels} kernels running a cell a second; a sign-in through "
        f"oidc-provider every {args.sign_in_every:g} s; an API read every {args.api_every:g} s and a policy edit "
        f"every {5 * args.api_every:g} s.",
        "",
        HEADER,
        *(row(s) for s in samples),
        "",
        "| check | measured | met |",
        "| --- | ---: | --- |",
        f"| errors (must be 0) | {total_errors} | {'yes' if total_errors == 0 else 'NO'} |",
        f"| RSS growth after warm-up (< 10 %) | {growth * 100:+.1f} % | {'yes' if growth < 0.10 else 'NO'} |",
        f"| open fds, after warm-up and last row (flat: within 10 %) | {after.fds} -> {samples[-1].fds} | "
        f"{'yes' if samples[-1].fds <= after.fds * 1.1 else 'NO'} |",
        f"| Redis memory, first and last row | {samples[0].redis_bytes / 2**20:.2f} -> "
        f"{samples[-1].redis_bytes / 2**20:.2f} MiB | |",
        f"| audit chain verifies (`python -m gateway audit verify`) | {verify} | {'yes' if ok else 'NO'} |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    redis = ensure_command("redis-server", "redis-server")
    ports = {name: free_port() for name in ("upstream", "redis", "jupyter", "gateway")}
    base = f"http://127.0.0.1:{ports['gateway']}"
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gateway-soak-")))
        jwks, _ = make_credentials(workdir, ports["upstream"])
        start_upstream(stack, ports["upstream"], jwks)
        start_redis(stack, redis, ports["redis"])
        start_jupyter(stack, workdir, ports["jupyter"])
        idp = NodeIdP(
            redirect_uris=[f"{base}/oauth2/callback"],
            post_logout_redirect_uris=[f"{base}/"],
            users=load_users(args.users),
        )
        idp.start()
        stack.callback(idp.stop)
        policy = workdir / "policy.csv"
        policy.write_text(POLICY)
        env = {
            "GATEWAY_OIDC_ISSUER": idp.issuer,
            "GATEWAY_OIDC_CLIENT_ID": idp.client_id,
            "GATEWAY_OIDC_CLIENT_SECRET": idp.client_secret,
            "GATEWAY_POLICY_FILE": str(policy),
            "GATEWAY_BOOTSTRAP_ADMINS": ALICE,
        }
        gateway = ExitStack()  # stopped before the audit check, so that its last events are on disk
        stack.enter_context(gateway)
        pid = start_gateway(gateway, workdir, ports, "soak-cookie-secret-" + "x" * 32, "INFO", None, extra_env=env)
        if not wait_proxying(f"{base}/readyz", {}, 60, body=None):
            raise SystemExit((workdir / "gateway.log").read_text()[-3000:])
        redis_url = f"redis://127.0.0.1:{ports['redis']}/0"
        soak = Soak(base, args)
        peak, rate, samples = asyncio.run(soak.run(pid, redis_url))
        gateway.close()
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "audit", "verify", str(workdir / "audit-gateway")],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        verify = " ".join((done.stdout + done.stderr).split())[:200]
        noted = gateway_complaints(workdir / "gateway.log")
    text = report(args, peak, rate, samples, verify, done.returncode == 0)
    if noted:
        text += (
            "\nWhat the gateway logged at WARNING or above, and its 5xx refusals (count, level, logger: message):\n\n"
        )
        text += "".join(f"- {count} x {what}\n" for what, count in noted.most_common(15))
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
