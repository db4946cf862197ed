"""The gateway against a direct connection and nginx, side by side in one run on loopback.

HTTP: wrk, 1 KiB GETs at 50 connections -> req/s, p50, p99 and the server's CPU per request.
WebSocket: an aiohttp client doing echo round trips over a few connections -> messages/s.
Usage: `.venv/bin/python bench/proxy_bench.py [--duration 10] [--rounds 3]` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import pstats
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import jwt
import redis.asyncio as aioredis
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.cookies import SESSION_COOKIE, CookieSigner
from gateway.identity import Identity
from gateway.sessions import Expiry, RedisSessionStore, Session, new_session_id

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PREFIX = "/notebook/bench/nb/"
BODY = b"x" * 1024  # what bench/upstream.py answers
TARGETS = ("direct", "gateway", "nginx")
CLIENT_ID = "notebook-gateway"
WS_MODES = ("ping-pong", "streaming")
AUTH_LABELS = {"cookie": "a session cookie (Redis)", "bearer": "a bearer JWT (RS256)"}
# Sent on every request to every target; `main` adds the bearer token.
HEADERS: dict[str, str] = {}
# The targets for the gateway (not tests: they depend on the machine).
MIN_HTTP_RATIO, MAX_CPU_US_PER_REQUEST, MIN_WS_RATIO = 0.40, 200.0, 0.85
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# wrk prints its human summary to stdout; this line is what we parse (latencies in microseconds).
WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %.1f %.1f %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.connect + e.read + e.write + e.timeout, e.status))
end
"""

NGINX_CONF = """
daemon off;
worker_processes 1;  # one process, like the gateway
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {dir}/access.log;  # the gateway writes an access line too
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    map $http_upgrade $connection_upgrade {{ default upgrade; "" ""; }}
    upstream notebook {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://notebook;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 3600s;
        }}
    }}
}}
"""


@dataclass
class HttpRun:
    target: str
    requests: int
    duration_s: float
    rps: float
    p50_us: float
    p99_us: float
    socket_errors: int
    non_2xx: int
    cpu_us_per_request: float


@dataclass
class WsRun:
    target: str
    mode: str  # "ping-pong": one message in flight per connection; "streaming": a window of them
    messages: int
    duration_s: float
    messages_per_s: float
    p50_us: float
    p99_us: float
    cpu_us_per_message: float


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout_s}s")


@contextmanager
def running(
    args: list[str], *, env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a process, yield it, and stop it (SIGTERM, then SIGKILL) on the way out."""
    out = log.open("wb") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(args, env=env, stdout=out, stderr=out, cwd=ROOT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log is not None and not isinstance(out, int):
            out.close()


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (nginx's worker, for instance)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text().split():
            pids.extend(process_tree(int(child)))
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants, from /proc/<pid>/stat."""
    total = 0
    for each in process_tree(pid):
        # The command name (field 2) may hold spaces, so split after its closing parenthesis.
        fields = Path(f"/proc/{each}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)
    return total / CLOCK_TICKS


def ensure_command(command: str, package: str) -> str:
    """The path of `command`, installing its Debian package first when it is missing."""
    found = shutil.which(command) or shutil.which(command, path="/usr/sbin:/sbin")
    if found:
        return found
    print(f"{command} is missing: apt-get install -y {package}", flush=True)
    for _ in range(20):  # another apt may hold the dpkg lock for a few minutes
        done = subprocess.run(["apt-get", "install", "-y", package], capture_output=True, text=True)
        if done.returncode == 0:
            break
        if "lock" not in done.stderr:
            raise SystemExit(f"apt-get install {package} failed:\n{done.stderr}")
        time.sleep(15)
    found = shutil.which(command) or shutil.which(command, path="/usr/sbin:/sbin")
    if not found:
        raise SystemExit(f"{command} is still missing after installing {package}")
    return found


def make_credentials(workdir: Path, upstream_port: int) -> tuple[Path, str]:
    """A key set for the upstream to publish and a bearer token signed with it, sent on every
    request to every target: `serve` identifies each request, and the cost of that is measured."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid="bench", alg="RS256", use="sig")
    jwks = workdir / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    now = int(time.time())
    claims = {
        "iss": f"http://127.0.0.1:{upstream_port}/idp",
        "aud": CLIENT_ID,
        "sub": "bench",
        "email": "bench@example.com",
        "groups": [],
        "iat": now,
        "exp": now + 4 * 3600,
    }
    return jwks, jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench"})


async def make_session(redis_url: str, cookie_secret: str) -> str:
    """A signed-in browser's session cookie, stored with the gateway's own classes (so its format
    stays the gateway's): the path JupyterLab's requests and WebSockets take."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        now = time.time()
        session = Session(new_session_id(), Identity("bench@example.com"), created_at=now, last_seen=now)
        await RedisSessionStore(client, Expiry(idle_s=8 * 3600, max_age_s=24 * 3600)).save(session)
    finally:
        await client.aclose()
    return f"{SESSION_COOKIE}={CookieSigner(cookie_secret).sign(session.id)}"


def start_redis(stack: ExitStack, redis: str, port: int) -> None:
    args = [redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    wait_for_port(port, stack.enter_context(running(args)))


def start_upstream(stack: ExitStack, port: int, jwks: Path) -> int:
    args = [sys.executable, str(HERE / "upstream.py"), "--port", str(port), "--jwks", str(jwks)]
    return stack.enter_context(running(args)).pid


def start_gateway(
    stack: ExitStack,
    workdir: Path,
    ports: dict[str, int],
    cookie_secret: str,
    log_level: str,
    profile: Path | None,
) -> int:
    port, upstream_port = ports["gateway"], ports["upstream"]
    routes = workdir / "routes.toml"
    routes.write_text(f'[[route]]\nnamespace = "bench"\nname = "nb"\nurl = "http://127.0.0.1:{upstream_port}"\n')
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
        "GATEWAY_BACKEND": "static",
        "GATEWAY_ROUTES_FILE": str(routes),
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "GATEWAY_LOG_LEVEL": log_level,
        "GATEWAY_LOG_FORMAT": "json",
        # What `serve` requires: a provider (the upstream's /idp), secrets, and Redis for sessions.
        "GATEWAY_OIDC_ISSUER": f"http://127.0.0.1:{upstream_port}/idp",
        "GATEWAY_OIDC_CLIENT_ID": CLIENT_ID,
        "GATEWAY_OIDC_CLIENT_SECRET": "bench-client-secret",
        "GATEWAY_COOKIE_SECRET": cookie_secret,
        "GATEWAY_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "GATEWAY_SESSION_STORE": "redis",
        "GATEWAY_REDIS_URL": f"redis://127.0.0.1:{ports['redis']}/0",
        # Authorization is on: the bench user may connect to /notebook/bench/nb/ (a cached decision per request).
        "GATEWAY_BOOTSTRAP_ADMINS": "bench@example.com",
        # The run's own audit log: not the tree's .dev/audit, which a dev gateway there may be writing.
        "GATEWAY_AUDIT_DIR": str(workdir / "audit"),
        # The benchmark reaches the notebook at the gateway's own address (no wildcard DNS on a bench machine).
        "GATEWAY_NOTEBOOK_ORIGINS": "single",
    }
    args = [sys.executable, "-m", "gateway", "serve"]
    if profile is not None:  # cProfile writes its stats when SIGTERM ends the server
        args[1:1] = ["-m", "cProfile", "-o", str(profile)]
    return stack.enter_context(running(args, env=env, log=workdir / "gateway.log")).pid


def start_nginx(stack: ExitStack, workdir: Path, nginx: str, port: int, upstream_port: int) -> int:
    conf_dir = workdir / "nginx"
    conf_dir.mkdir()
    conf = conf_dir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=conf_dir, port=port, upstream_port=upstream_port))
    args = [nginx, "-p", str(conf_dir), "-c", str(conf), "-e", str(conf_dir / "error.log")]
    return stack.enter_context(running(args, log=conf_dir / "stderr.log")).pid


async def fetch_body(url: str, headers: dict[str, str]) -> bytes | None:
    try:
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
            return await resp.read() if resp.status == 200 else None
    except aiohttp.ClientError:
        return None


def wait_proxying(url: str, headers: dict[str, str], timeout_s: float) -> bool:
    """True once a GET through the proxy returns the upstream's body (the gateway may still be in progress)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if asyncio.run(fetch_body(url, headers)) == BODY:
            return True
        time.sleep(1)
    return False


# --- load ----------------------------------------------------------------------------------------


def run_wrk(wrk: str, script: Path, url: str, *, duration_s: float, connections: int, threads: int) -> list[str]:
    args = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s", "-s", str(script), url]
    args[1:1] = [item for name, value in HEADERS.items() for item in ("-H", f"{name}: {value}")]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    line = next(line for line in done.stdout.splitlines() if line.startswith("BENCH "))
    return line.split()[1:]


def measure_http(target: str, pid: int, url: str, args: argparse.Namespace, wrk: str, script: Path) -> HttpRun:
    run_wrk(wrk, script, url, duration_s=args.warmup, connections=args.connections, threads=args.threads)
    cpu_before = cpu_seconds(pid)
    fields = run_wrk(wrk, script, url, duration_s=args.duration, connections=args.connections, threads=args.threads)
    cpu_s = cpu_seconds(pid) - cpu_before
    requests, duration_us = int(fields[0]), int(fields[1])
    return HttpRun(
        target=target,
        requests=requests,
        duration_s=duration_us / 1e6,
        rps=requests / (duration_us / 1e6),
        p50_us=float(fields[2]),
        p99_us=float(fields[3]),
        socket_errors=int(fields[4]),
        non_2xx=int(fields[5]),
        cpu_us_per_request=cpu_s * 1e6 / max(requests, 1),
    )


async def ws_echoes(url: str, connections: int, messages: int, size: int, window: int) -> tuple[float, list[float]]:
    """Elapsed seconds for `messages` echoes on each of `connections` sockets with up to `window`
    messages in flight per socket, and (for a window of 1) every round-trip time."""
    payload = "m" * size
    rtts: list[float] = []

    def check(msg: aiohttp.WSMessage) -> None:
        if msg.type != aiohttp.WSMsgType.TEXT or msg.data != payload:
            raise RuntimeError(f"bad echo from {url}: {msg.type!r}")

    async def ping_pong(ws: aiohttp.ClientWebSocketResponse) -> None:
        for _ in range(messages):
            sent = time.perf_counter()
            await ws.send_str(payload)
            check(await ws.receive())
            rtts.append(time.perf_counter() - sent)

    async def streaming(ws: aiohttp.ClientWebSocketResponse) -> None:
        in_flight = asyncio.Semaphore(window)

        async def send() -> None:
            for _ in range(messages):
                await in_flight.acquire()
                await ws.send_str(payload)

        sender = asyncio.create_task(send())
        for _ in range(messages):
            check(await ws.receive())
            in_flight.release()
        await sender

    drive = ping_pong if window == 1 else streaming
    async with aiohttp.ClientSession() as session:
        sockets = [await session.ws_connect(url, headers=HEADERS) for _ in range(connections)]
        started = time.perf_counter()
        await asyncio.gather(*(drive(ws) for ws in sockets))
        elapsed = time.perf_counter() - started
        for ws in sockets:
            await ws.close()
    return elapsed, rtts


def measure_ws(target: str, mode: str, pid: int, url: str, args: argparse.Namespace) -> WsRun:
    window = 1 if mode == "ping-pong" else args.ws_window
    conns, size = args.ws_connections, args.ws_size
    asyncio.run(ws_echoes(url, conns, max(args.ws_messages // 10, 1), size, window))  # warm-up
    cpu_before = cpu_seconds(pid)
    elapsed, rtts = asyncio.run(ws_echoes(url, conns, args.ws_messages, size, window))
    cpu_s = cpu_seconds(pid) - cpu_before
    count = conns * args.ws_messages
    rtts.sort()
    return WsRun(
        target=target,
        mode=mode,
        messages=count,
        duration_s=elapsed,
        messages_per_s=count / elapsed,
        p50_us=rtts[len(rtts) // 2] * 1e6 if rtts else 0.0,
        p99_us=rtts[int(len(rtts) * 0.99)] * 1e6 if rtts else 0.0,
        cpu_us_per_message=cpu_s * 1e6 / count,
    )


# --- report --------------------------------------------------------------------------------------


def median_http(runs: list[HttpRun]) -> HttpRun:
    """The per-field median of several rounds for one target."""
    return HttpRun(
        target=runs[0].target,
        requests=int(statistics.median(r.requests for r in runs)),
        duration_s=statistics.median(r.duration_s for r in runs),
        rps=statistics.median(r.rps for r in runs),
        p50_us=statistics.median(r.p50_us for r in runs),
        p99_us=statistics.median(r.p99_us for r in runs),
        socket_errors=sum(r.socket_errors for r in runs),
        non_2xx=sum(r.non_2xx for r in runs),
        cpu_us_per_request=statistics.median(r.cpu_us_per_request for r in runs),
    )


def median_ws(runs: list[WsRun]) -> WsRun:
    return WsRun(
        target=runs[0].target,
        mode=runs[0].mode,
        messages=int(statistics.median(r.messages for r in runs)),
        duration_s=statistics.median(r.duration_s for r in runs),
        messages_per_s=statistics.median(r.messages_per_s for r in runs),
        p50_us=statistics.median(r.p50_us for r in runs),
        p99_us=statistics.median(r.p99_us for r in runs),
        cpu_us_per_message=statistics.median(r.cpu_us_per_message for r in runs),
    )


def environment(nginx: str | None) -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    nginx_version = ""
    if nginx:
        nginx_version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": f"{os.cpu_count()} x {cpu}",
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "nginx": nginx_version,
    }


def render(
    http: dict[str, HttpRun], ws: dict[tuple[str, str], WsRun], env: dict[str, str], args: argparse.Namespace
) -> str:
    direct = http["direct"]
    lines = [
        "# Proxy benchmark",
        "",
        f"{env['date']} · {env['cpu']} · Python {env['python']} · aiohttp {env['aiohttp']} · {env['nginx']}",
        "",
        f"HTTP: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, 1 KiB GETs, median of "
        f"{args.rounds} round(s); gateway log level {args.gateway_log_level}; every request identified by "
        f"{AUTH_LABELS[args.auth]}. CPU is the serving process's (upstream for direct, gateway alone, "
        "nginx worker) user+system time per request.",
        "",
        "| target | req/s | ratio | p50 ms | p50 ratio | p99 ms | p99 ratio | CPU µs/req | errors | non-2xx |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in http.values():
        lines.append(
            f"| {run.target} | {run.rps:,.0f} | {run.rps / direct.rps:.2f} | {run.p50_us / 1000:.2f} | "
            f"{run.p50_us / direct.p50_us:.2f} | {run.p99_us / 1000:.2f} | {run.p99_us / direct.p99_us:.2f} | "
            f"{run.cpu_us_per_request:.0f} | {run.socket_errors} | {run.non_2xx} |"
        )
    lines += [
        "",
        f"WebSocket echo: {args.ws_connections} connections x {args.ws_messages} messages of {args.ws_size} "
        f"bytes (aiohttp client); ping-pong waits for each echo (latency-bound), streaming keeps up to "
        f"{args.ws_window} in flight per connection (relay capacity).",
        "",
        "| target | mode | messages/s | ratio | RTT p50 µs | RTT p99 µs | CPU µs/msg |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (mode, _), wrun in ws.items():
        ratio = wrun.messages_per_s / ws[mode, "direct"].messages_per_s
        rtt = f"{wrun.p50_us:.0f} | {wrun.p99_us:.0f}" if wrun.p50_us else "– | –"
        lines.append(
            f"| {wrun.target} | {mode} | {wrun.messages_per_s:,.0f} | {ratio:.2f} | {rtt} | "
            f"{wrun.cpu_us_per_message:.0f} |"
        )
    gateway = http.get("gateway")
    if gateway:
        http_ratio = gateway.rps / direct.rps
        checks = [
            ("HTTP throughput >= 0.40 of direct", http_ratio, http_ratio >= MIN_HTTP_RATIO),
            (
                "gateway CPU <= 200 µs per request",
                gateway.cpu_us_per_request,
                gateway.cpu_us_per_request <= MAX_CPU_US_PER_REQUEST,
            ),
        ]
        for mode in WS_MODES:
            ws_ratio = ws[mode, "gateway"].messages_per_s / ws[mode, "direct"].messages_per_s
            checks.append((f"WebSocket {mode} messages/s >= 0.85 of direct", ws_ratio, ws_ratio >= MIN_WS_RATIO))
        lines += ["", "| target | measured | met |", "| --- | ---: | --- |"]
        lines += [f"| {name} | {value:.2f} | {'yes' if ok else 'NO'} |" for name, value, ok in checks]
    return "\n".join(lines) + "\n"


# --- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk before each run (default 2)")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections (default 50)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: leave cores to servers)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything, report medians (default 1)")
    parser.add_argument("--ws-connections", type=int, default=4, help="WebSocket connections (default 4)")
    parser.add_argument("--ws-messages", type=int, default=5000, help="round trips per connection (default 5000)")
    parser.add_argument("--ws-window", type=int, default=32, help="messages in flight when streaming (default 32)")
    parser.add_argument("--ws-size", type=int, default=64, help="bytes per WebSocket message (default 64)")
    parser.add_argument(
        "--auth",
        choices=("cookie", "bearer"),
        default="cookie",
        help="how requests identify themselves: a session cookie (browsers; default) or a bearer JWT (API clients)",
    )
    parser.add_argument("--gateway-log-level", default="INFO", help="INFO writes an access line per request")
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help="comma-separated subset of direct,gateway,nginx (direct always runs)",
    )
    parser.add_argument(
        "--gateway-profile", type=Path, help="run the gateway under cProfile and write its stats here (slower)"
    )
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the gateway to proxy")
    parser.add_argument("--out", type=Path, default=HERE / "results.md", help="markdown report (and .json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    targets = {"direct", *args.targets.split(",")}
    if unknown := targets - set(TARGETS):
        raise SystemExit(f"unknown target(s): {', '.join(sorted(unknown))}")
    wrk = ensure_command("wrk", "wrk")
    nginx = ensure_command("nginx", "nginx-light") if "nginx" in targets else None
    redis = ensure_command("redis-server", "redis-server") if "gateway" in targets else None
    ports = {name: free_port() for name in ("upstream", "redis", *TARGETS[1:])}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gateway-bench-")))
        script = workdir / "report.lua"
        script.write_text(WRK_REPORT)
        jwks, token = make_credentials(workdir, ports["upstream"])
        pids = {"direct": start_upstream(stack, ports["upstream"], jwks)}
        if redis:
            cookie_secret = secrets.token_urlsafe(48)
            start_redis(stack, redis, ports["redis"])
            if args.auth == "cookie":
                HEADERS["Cookie"] = asyncio.run(make_session(f"redis://127.0.0.1:{ports['redis']}/0", cookie_secret))
                HEADERS["Origin"] = f"http://127.0.0.1:{ports['gateway']}"  # WebSockets must come from our pages
            else:
                HEADERS["Authorization"] = f"Bearer {token}"
            pids["gateway"] = start_gateway(
                stack, workdir, ports, cookie_secret, args.gateway_log_level, args.gateway_profile
            )
        if nginx:
            pids["nginx"] = start_nginx(stack, workdir, nginx, ports["nginx"], ports["upstream"])
        origins = {"direct": f"127.0.0.1:{ports['upstream']}"}
        origins.update({name: f"127.0.0.1:{ports[name]}" for name in TARGETS[1:] if name in pids})
        for name, origin in origins.items():
            if not wait_proxying(f"http://{origin}{PREFIX}", HEADERS, args.wait):
                print(f"{name} at {origin} does not return the upstream's body; see {workdir}", file=sys.stderr)
                if name == "gateway":
                    print((workdir / "gateway.log").read_text()[-3000:], file=sys.stderr)
                return 1
        print("pids: " + ", ".join(f"{name} {pid}" for name, pid in pids.items()), flush=True)  # for py-spy
        http_runs: dict[str, list[HttpRun]] = {name: [] for name in origins}
        ws_runs: dict[tuple[str, str], list[WsRun]] = {(mode, name): [] for mode in WS_MODES for name in origins}
        for round_no in range(1, args.rounds + 1):
            for name, origin in origins.items():
                run = measure_http(name, pids[name], f"http://{origin}{PREFIX}", args, wrk, script)
                print(
                    f"round {round_no} http {name}: {run.rps:,.0f} req/s, {run.cpu_us_per_request:.0f} µs CPU/req",
                    flush=True,
                )
                http_runs[name].append(run)
            for mode, name in ws_runs:
                wrun = measure_ws(name, mode, pids[name], f"ws://{origins[name]}{PREFIX}ws", args)
                print(f"round {round_no} ws {mode} {name}: {wrun.messages_per_s:,.0f} msg/s", flush=True)
                ws_runs[mode, name].append(wrun)
        http = {name: median_http(runs) for name, runs in http_runs.items()}
        ws = {key: median_ws(runs) for key, runs in ws_runs.items()}
    env = environment(nginx)
    report = render(http, ws, env, args)
    print(report)
    args.out.write_text(report)
    raw = {
        "environment": env,
        "args": {k: str(v) for k, v in vars(args).items()},
        "http": {name: [asdict(r) for r in runs] for name, runs in http_runs.items()},
        "websocket": {f"{mode} {name}": [asdict(r) for r in runs] for (mode, name), runs in ws_runs.items()},
    }
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=2) + "\n")
    if args.gateway_profile is not None and args.gateway_profile.exists():
        pstats.Stats(str(args.gateway_profile)).sort_stats("tottime").print_stats(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
