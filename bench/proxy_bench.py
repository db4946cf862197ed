"""The gateway against a direct connection, nginx, configurable-http-proxy and a bare aiohttp proxy,
side by side in one run on loopback.

HTTP: wrk, 1 KiB GETs at 50 connections -> req/s, p50, p99 and the proxy's CPU per request; the same
at 1 connection -> the latency each proxy adds. WebSocket: an aiohttp client doing echo round trips
over a few connections -> messages/s and CPU per round trip. Jupyter: wrk on a real jupyter-server's
`api/status`. Idle RSS of every proxy. Optionally the gateway with 1, 2, ... worker processes.
Usage: `.venv/bin/python bench/proxy_bench.py [--duration 10] [--rounds 3]` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import pstats
import resource
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

from gateway.backends.local import jupyter_command
from gateway.cookies import SESSION_COOKIE, CookieSigner
from gateway.identity import Identity
from gateway.sessions import Expiry, RedisSessionStore, Session, new_session_id

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PREFIX = "/notebook/bench/nb/"
JUPYTER_PREFIX = "/notebook/bench/jupyter/"  # a real jupyter-server's base_url
BODY = b"x" * 1024  # what bench/upstream.py answers
TARGETS = ("direct", "gateway", "nginx", "chp", "bare")
LABELS = {
    "direct": "direct",
    "gateway": "gateway",
    "nginx": "nginx",
    "chp": "configurable-http-proxy",
    "bare": "bare aiohttp proxy",
}
CHP = HERE / "node_modules" / ".bin" / "configurable-http-proxy"  # pinned by bench/package-lock.json
CLIENT_ID = "notebook-gateway"
WS_MODES = ("ping-pong", "streaming")
AUTH_LABELS = {"cookie": "a session cookie (Redis)", "bearer": "a bearer JWT (RS256)"}
# Sent on every request to every target; `main` adds the session cookie or the bearer token.
HEADERS: dict[str, str] = {}
# Added to WebSocket handshakes only (the gateway wants WebSockets from its own pages; jupyter-server
# refuses cross-origin API requests, so HTTP requests carry none).
WS_HEADERS: dict[str, str] = {}
# Issue 15's absolute targets for the gateway (not tests: they depend on the machine). The others are
# ratios against the bare proxy and configurable-http-proxy measured in the same run (see `targets`).
MAX_ADDED_P50_US, MIN_JUPYTER_RATIO, MAX_JUPYTER_P99_RATIO, MAX_IDLE_RSS_MIB = 250.0, 0.97, 1.1, 70.0
MOONSHOT_CPU_VS_BARE = 0.6
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
    upstream jupyter {{ server 127.0.0.1:{jupyter_port}; keepalive 64; }}
    proxy_http_version 1.1;
    proxy_set_header Host $host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $connection_upgrade;
    proxy_read_timeout 3600s;
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://notebook; }}
        location {jupyter_prefix} {{ proxy_pass http://jupyter; }}
    }}
}}
"""


@dataclass
class HttpRun:
    target: str
    connections: int
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


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its descendants (VmRSS of /proc/<pid>/status)."""
    total = 0
    for each in process_tree(pid):
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024  # kB
    return total


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
    *,
    extra_env: dict[str, str] | None = None,
    extra_routes: str = "",
    name: str = "gateway",
) -> int:
    """`python -m gateway serve` as production runs it, at ports[name]; routes to the upstream (and to
    Jupyter when ports has "jupyter"), plus `extra_routes` (TOML); `extra_env` last (e.g. workers)."""
    port, upstream_port = ports[name], ports["upstream"]
    routes = workdir / f"routes-{name}.toml"
    text = f'[[route]]\nnamespace = "bench"\nname = "nb"\nurl = "http://127.0.0.1:{upstream_port}"\n'
    if "jupyter" in ports:
        text += f'[[route]]\nnamespace = "bench"\nname = "jupyter"\nurl = "http://127.0.0.1:{ports["jupyter"]}"\n'
    routes.write_text(text + extra_routes)
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
        "GATEWAY_AUDIT_DIR": str(workdir / f"audit-{name}"),
        # The benchmark reaches the notebook at the gateway's own address (no wildcard DNS on a bench machine).
        "GATEWAY_NOTEBOOK_ORIGINS": "single",
        **(extra_env or {}),
    }
    args = [sys.executable, "-m", "gateway", "serve"]
    if profile is not None:  # cProfile writes its stats when SIGTERM ends the server
        args[1:1] = ["-m", "cProfile", "-o", str(profile)]
    return stack.enter_context(running(args, env=env, log=workdir / f"{name}.log")).pid


def start_nginx(stack: ExitStack, workdir: Path, nginx: str, ports: dict[str, int]) -> int:
    conf_dir = workdir / "nginx"
    conf_dir.mkdir()
    conf = conf_dir / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            dir=conf_dir,
            port=ports["nginx"],
            upstream_port=ports["upstream"],
            jupyter_port=ports.get("jupyter", ports["upstream"]),
            jupyter_prefix=JUPYTER_PREFIX,
        )
    )
    args = [nginx, "-p", str(conf_dir), "-c", str(conf), "-e", str(conf_dir / "error.log")]
    return stack.enter_context(running(args, log=conf_dir / "stderr.log")).pid


def ensure_chp() -> Path:
    """configurable-http-proxy as bench/package-lock.json pins it, installed into bench/node_modules."""
    if not CHP.exists():
        npm = ensure_command("npm", "npm")
        print("configurable-http-proxy is missing: npm ci in bench/", flush=True)
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True, capture_output=True)
    return CHP


async def add_chp_routes(api_port: int, token: str, routes: dict[str, int]) -> None:
    """Routes added through CHP's REST API, as JupyterHub adds a user's server."""
    async with aiohttp.ClientSession(headers={"Authorization": f"token {token}"}) as session:
        for prefix, port in routes.items():
            url = f"http://127.0.0.1:{api_port}/api/routes{prefix.rstrip('/')}"
            async with session.post(url, json={"target": f"http://127.0.0.1:{port}"}) as resp:
                if resp.status != 201:
                    raise RuntimeError(f"configurable-http-proxy refused {prefix}: {resp.status}")


def start_chp(stack: ExitStack, workdir: Path, ports: dict[str, int]) -> int:
    """configurable-http-proxy as JupyterHub runs it (its default log level), routes set through its API."""
    token = secrets.token_urlsafe(24)
    env = {**os.environ, "CONFIGPROXY_AUTH_TOKEN": token}
    args = [str(ensure_chp()), "--ip", "127.0.0.1", "--port", str(ports["chp"])]
    args += ["--api-ip", "127.0.0.1", "--api-port", str(ports["chp-api"])]
    proc = stack.enter_context(running(args, env=env, log=workdir / "chp.log"))
    wait_for_port(ports["chp-api"], proc)
    routes = {PREFIX: ports["upstream"]}
    if "jupyter" in ports:
        routes[JUPYTER_PREFIX] = ports["jupyter"]
    asyncio.run(add_chp_routes(ports["chp-api"], token, routes))
    return proc.pid


def start_bare(stack: ExitStack, workdir: Path, ports: dict[str, int]) -> int:
    args = [sys.executable, str(HERE / "bare_proxy.py"), str(ports["bare"])]
    args.append(f"{PREFIX}=http://127.0.0.1:{ports['upstream']}")
    if "jupyter" in ports:
        args.append(f"{JUPYTER_PREFIX}=http://127.0.0.1:{ports['jupyter']}")
    return stack.enter_context(running(args, log=workdir / "bare.log")).pid


def start_jupyter(stack: ExitStack, workdir: Path, port: int) -> int:
    """A real jupyter-server (no token, as Kubeflow's images run it) under JUPYTER_PREFIX."""
    root = workdir / "jupyter"
    root.mkdir()
    env = {**os.environ, "JUPYTER_PLATFORM_DIRS": "1", "JUPYTER_RUNTIME_DIR": str(root / ".runtime")}
    command = jupyter_command(base_url=JUPYTER_PREFIX, port=port, root_dir=root)
    proc = stack.enter_context(running(command, env=env, log=workdir / "jupyter.log"))
    wait_for_port(port, proc, timeout_s=120)
    return proc.pid


async def fetch_body(url: str, headers: dict[str, str]) -> bytes | None:
    try:
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
            return await resp.read() if resp.status == 200 else None
    except aiohttp.ClientError:
        return None


def wait_proxying(url: str, headers: dict[str, str], timeout_s: float, body: bytes | None = BODY) -> bool:
    """True once a GET through the proxy returns `body` (None: any 200); the proxy may still be starting."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = asyncio.run(fetch_body(url, headers))
        if got is not None and (body is None or got == body):
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


def measure_http(
    target: str,
    pid: int,
    url: str,
    args: argparse.Namespace,
    wrk: str,
    script: Path,
    *,
    connections: int | None = None,
    duration_s: float | None = None,
) -> HttpRun:
    """A warm-up, then a measured wrk run; the CPU is that of `pid` and its descendants meanwhile."""
    conns = connections or args.connections
    duration = duration_s or args.duration
    run_wrk(wrk, script, url, duration_s=args.warmup, connections=conns, threads=args.threads)
    cpu_before = cpu_seconds(pid)
    fields = run_wrk(wrk, script, url, duration_s=duration, connections=conns, threads=args.threads)
    cpu_s = cpu_seconds(pid) - cpu_before
    requests, duration_us = int(fields[0]), int(fields[1])
    return HttpRun(
        target=target,
        connections=conns,
        requests=requests,
        duration_s=duration_us / 1e6,
        rps=requests / (duration_us / 1e6),
        p50_us=float(fields[2]),
        p99_us=float(fields[3]),
        socket_errors=int(fields[4]),
        non_2xx=int(fields[5]),
        cpu_us_per_request=cpu_s * 1e6 / max(requests, 1),
    )


def idle_cpu_share(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """CPU seconds per second each process tree spends with no traffic (timers, reloads, housekeeping): at one
    connection this is shared by few requests, so it shows in the CPU per request there."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    return {name: (cpu_seconds(pid) - before[name]) / elapsed for name, pid in pids.items()}


def children_cpu_seconds() -> float:
    """CPU of this process's waited-for children: wrk runs (the servers are waited for only at the end)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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
        sockets = [await session.ws_connect(url, headers={**HEADERS, **WS_HEADERS}) for _ in range(connections)]
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


@dataclass
class WorkersRun:
    """The gateway with `workers` processes on one port, and where the machine's cores went meanwhile."""

    workers: int
    processes: int  # seen in the gateway's process tree: 1 means the option had no effect
    rps: float
    p50_us: float
    p99_us: float
    cpu_us_per_request: float  # all the gateway's processes
    gateway_cores: float  # CPU seconds per second of the measured run
    upstream_cores: float
    wrk_cores: float
    idle_rss: int


def median_http(runs: list[HttpRun]) -> HttpRun:
    """The per-field median of several rounds for one target."""
    return HttpRun(
        target=runs[0].target,
        connections=runs[0].connections,
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
    chp_package = HERE / "node_modules" / "configurable-http-proxy" / "package.json"
    chp_version = json.loads(chp_package.read_text())["version"] if chp_package.exists() else "?"
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": f"{os.cpu_count()} x {cpu}",
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "nginx": nginx_version,
        "chp": f"configurable-http-proxy {chp_version} (Node {node_version()})",
        "bare_loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio (uvloop not installed)",
        "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def node_version() -> str:
    node = shutil.which("node")
    return subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip() if node else "?"


def mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"


def verdict(ok: bool | None) -> str:
    return "n/a (reference not run)" if ok is None else "yes" if ok else "NO"


def targets(
    http: dict[str, HttpRun],
    lat: dict[str, HttpRun],
    ws: dict[tuple[str, str], WsRun],
    jupyter: dict[str, HttpRun],
    rss: dict[str, int],
) -> list[tuple[str, str, str]]:
    """Issue 15's targets for the gateway: (target, measured, met). Ratios against the bare aiohttp proxy
    and configurable-http-proxy measured in the same run; absolute limits only where the issue sets one."""
    gw = http.get("gateway")
    if gw is None:
        return []
    bare, chp = http.get("bare"), http.get("chp")
    rows: list[tuple[str, str, str]] = []

    cpu = gw.cpu_us_per_request
    rows.append(
        (
            "HTTP: CPU per request <= the bare proxy's" + (f" ({bare.cpu_us_per_request:.0f} µs)" if bare else ""),
            f"{cpu:.0f} µs",
            verdict(cpu <= bare.cpu_us_per_request if bare else None),
        )
    )
    rows.append(
        (
            "HTTP: throughput >= configurable-http-proxy's" + (f" ({chp.rps:,.0f} req/s)" if chp else ""),
            f"{gw.rps:,.0f} req/s",
            verdict(gw.rps >= chp.rps if chp else None),
        )
    )
    rows.append(
        (
            f"Moonshot: CPU per request <= {MOONSHOT_CPU_VS_BARE} x the bare proxy's"
            + (f" ({MOONSHOT_CPU_VS_BARE * bare.cpu_us_per_request:.0f} µs)" if bare else ""),
            f"{cpu:.0f} µs",
            verdict(cpu <= MOONSHOT_CPU_VS_BARE * bare.cpu_us_per_request if bare else None),
        )
    )
    if "gateway" in lat:
        added = lat["gateway"].p50_us - lat["direct"].p50_us
        rows.append(
            (
                f"1 connection: p50 added <= +{MAX_ADDED_P50_US / 1000:.2f} ms",
                f"{added / 1000:+.3f} ms",
                verdict(added <= MAX_ADDED_P50_US),
            )
        )
        bare_lat = lat.get("bare")
        rows.append(
            (
                "1 connection: p99 <= the bare proxy's" + (f" ({bare_lat.p99_us / 1000:.2f} ms)" if bare_lat else ""),
                f"{lat['gateway'].p99_us / 1000:.2f} ms",
                verdict(lat["gateway"].p99_us <= bare_lat.p99_us if bare_lat else None),
            )
        )
    if ("ping-pong", "gateway") in ws:
        gw_ws, chp_ws = ws["ping-pong", "gateway"], ws.get(("ping-pong", "chp"))
        rows.append(
            (
                "WebSocket: round trips/s >= configurable-http-proxy's"
                + (f" ({chp_ws.messages_per_s:,.0f}/s)" if chp_ws else ""),
                f"{gw_ws.messages_per_s:,.0f}/s",
                verdict(gw_ws.messages_per_s >= chp_ws.messages_per_s if chp_ws else None),
            )
        )
        rows.append(
            (
                "WebSocket: CPU per round trip <= configurable-http-proxy's"
                + (f" ({chp_ws.cpu_us_per_message:.0f} µs)" if chp_ws else ""),
                f"{gw_ws.cpu_us_per_message:.0f} µs",
                verdict(gw_ws.cpu_us_per_message <= chp_ws.cpu_us_per_message if chp_ws else None),
            )
        )
    if "gateway" in jupyter:
        ratio = jupyter["gateway"].rps / jupyter["direct"].rps
        p99_ratio = jupyter["gateway"].p99_us / jupyter["direct"].p99_us
        rows.append(
            (
                f"Jupyter api/status: req/s >= {MIN_JUPYTER_RATIO} of direct",
                f"{ratio:.2f}",
                verdict(ratio >= MIN_JUPYTER_RATIO),
            )
        )
        rows.append(
            (
                f"Jupyter api/status: p99 <= {MAX_JUPYTER_P99_RATIO} x direct's",
                f"{p99_ratio:.2f} x",
                verdict(p99_ratio <= MAX_JUPYTER_P99_RATIO),
            )
        )
    if "gateway" in rss:
        rows.append(
            (
                f"Idle RSS <= {MAX_IDLE_RSS_MIB:.0f} MiB",
                mib(rss["gateway"]),
                verdict(rss["gateway"] <= MAX_IDLE_RSS_MIB * 2**20),
            )
        )
    return rows


def render(
    http: dict[str, HttpRun],
    lat: dict[str, HttpRun],
    ws: dict[tuple[str, str], WsRun],
    jupyter: dict[str, HttpRun],
    rss: dict[str, int],
    idle_cpu: dict[str, float],
    workers: list[WorkersRun],
    env: dict[str, str],
    args: argparse.Namespace,
) -> str:
    direct = http["direct"]
    lines = [
        "# Proxy benchmark",
        "",
        f"{env['date']} · {env['cpu']} · load average at start {env['load']} · Python {env['python']} · "
        f"aiohttp {env['aiohttp']} · {env['nginx']} · {env['chp']} · bare proxy on {env['bare_loop']}",
        "",
    ]
    if args.note:
        lines += [f"Note: {args.note}", ""]
    lines += [
        f"Every request identified by {AUTH_LABELS[args.auth]} (the others pass it through); gateway log level "
        f"{args.gateway_log_level}" + (f", gateway environment {args.gateway_env}" if args.gateway_env else "") + ". "
        f"Median of {args.rounds} round(s). CPU is the serving process tree's user+system time (upstream for "
        "direct; nginx master and worker; node for configurable-http-proxy).",
        "",
        "## Summary (issue 15's columns)",
        "",
        f"req/s at {args.connections} connections; p50 added = p50 at 1 connection minus direct's; WebSocket "
        "= ping-pong echoes (one in flight per connection); idle RSS after start-up and a few requests; idle CPU "
        f"= CPU time per second over {args.idle_seconds:g} s without traffic.",
        "",
        "| | req/s ÷ direct | proxy CPU µs/request | p50 added at 1 connection | p99 at 1 connection "
        "| WebSocket echo ÷ direct | CPU µs/round trip | idle RSS | idle CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, run in http.items():
        one = lat.get(name)
        added = f"{(one.p50_us - lat['direct'].p50_us) / 1000:+.2f} ms" if one else "–"
        p99 = f"{one.p99_us / 1000:.2f} ms" if one else "–"
        pong = ws.get(("ping-pong", name))
        echo = f"{pong.messages_per_s / ws['ping-pong', 'direct'].messages_per_s:.2f}" if pong else "–"
        echo_cpu = f"{pong.cpu_us_per_message:.0f}" if pong else "–"
        label = LABELS[name] + (" (upstream)" if name == "direct" else "")
        lines.append(
            f"| {label} | {run.rps / direct.rps:.2f} | {run.cpu_us_per_request:.0f} | {added} | {p99} | {echo} | "
            f"{echo_cpu} | {mib(rss[name])} | {idle_cpu[name] * 1000:.1f} ms/s |"
        )
    lines += [
        "",
        f"## HTTP: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, 1 KiB GETs",
        "",
        "| target | req/s | ratio | p50 ms | p50 ratio | p99 ms | p99 ratio | CPU µs/req | errors | non-2xx |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, run in http.items():
        lines.append(
            f"| {LABELS[name]} | {run.rps:,.0f} | {run.rps / direct.rps:.2f} | {run.p50_us / 1000:.2f} | "
            f"{run.p50_us / direct.p50_us:.2f} | {run.p99_us / 1000:.2f} | {run.p99_us / direct.p99_us:.2f} | "
            f"{run.cpu_us_per_request:.0f} | {run.socket_errors} | {run.non_2xx} |"
        )
    if lat:
        lines += [
            "",
            f"## HTTP at one connection: wrk -t1 -c1 -d{args.latency_duration:g}s (what one user's requests wait)",
            "",
            "| target | req/s | p50 ms | p50 added ms | p99 ms | CPU µs/req | errors | non-2xx |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, run in lat.items():
            lines.append(
                f"| {LABELS[name]} | {run.rps:,.0f} | {run.p50_us / 1000:.3f} | "
                f"{(run.p50_us - lat['direct'].p50_us) / 1000:+.3f} | {run.p99_us / 1000:.3f} | "
                f"{run.cpu_us_per_request:.0f} | {run.socket_errors} | {run.non_2xx} |"
            )
    lines += [
        "",
        f"## WebSocket echo: {args.ws_connections} connections x {args.ws_messages} messages of {args.ws_size} bytes",
        "",
        "aiohttp client; ping-pong waits for each echo (latency-bound), streaming keeps up to "
        f"{args.ws_window} in flight per connection (relay capacity).",
        "",
        "| target | mode | messages/s | ratio | RTT p50 µs | RTT p99 µs | CPU µs/msg |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (mode, _), wrun in ws.items():
        ratio = wrun.messages_per_s / ws[mode, "direct"].messages_per_s
        rtt = f"{wrun.p50_us:.0f} | {wrun.p99_us:.0f}" if wrun.p50_us else "– | –"
        lines.append(
            f"| {LABELS[wrun.target]} | {mode} | {wrun.messages_per_s:,.0f} | {ratio:.2f} | {rtt} | "
            f"{wrun.cpu_us_per_message:.0f} |"
        )
    if jupyter:
        jd = jupyter["direct"]
        lines += [
            "",
            f"## Jupyter: wrk -t{args.threads} -c{args.jupyter_connections} -d{args.duration:g}s on a real "
            f"jupyter-server's {JUPYTER_PREFIX}api/status",
            "",
            "CPU is the proxy's per request (for direct: jupyter-server's).",
            "",
            "| target | req/s | ratio | p50 ms | p99 ms | p99 ratio | CPU µs/req | errors | non-2xx |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, run in jupyter.items():
            lines.append(
                f"| {LABELS[name]} | {run.rps:,.0f} | {run.rps / jd.rps:.2f} | {run.p50_us / 1000:.2f} | "
                f"{run.p99_us / 1000:.2f} | {run.p99_us / jd.p99_us:.2f} | {run.cpu_us_per_request:.0f} | "
                f"{run.socket_errors} | {run.non_2xx} |"
            )
    if workers:
        lines += workers_report(workers, args)
    rows = targets(http, lat, ws, jupyter, rss)
    if rows:
        lines += [
            "",
            "## Issue 15's targets for the gateway",
            "",
            "| target | measured | met |",
            "| --- | ---: | --- |",
        ]
        lines += [f"| {text} | {measured} | {met} |" for text, measured, met in rows]
    return "\n".join(lines) + "\n"


def workers_report(workers: list[WorkersRun], args: argparse.Namespace) -> list[str]:
    cores = os.cpu_count() or 1
    lines = [
        "",
        f"## Gateway workers ({args.workers_env}=N): wrk -t{args.threads} -c{args.connections} "
        f"-d{args.duration:g}s, 1 KiB GETs",
        "",
        f"Cores busy = CPU seconds per second of the run, of {cores}.",
        "",
        "| workers | processes | req/s | p50 ms | p99 ms | gateway CPU µs/req | cores: gateway | upstream | wrk "
        "| idle RSS |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in workers:
        lines.append(
            f"| {run.workers} | {run.processes} | {run.rps:,.0f} | {run.p50_us / 1000:.2f} | {run.p99_us / 1000:.2f} "
            f"| {run.cpu_us_per_request:.0f} | {run.gateway_cores:.2f} | {run.upstream_cores:.2f} | "
            f"{run.wrk_cores:.2f} | {mib(run.idle_rss)} |"
        )
    first, last = workers[0], workers[-1]
    if any(run.processes < run.workers for run in workers):
        lines += [
            "",
            f"The gateway did not start the asked number of processes: {args.workers_env} had no effect "
            f"(the gateway got {min(r.gateway_cores for r in workers):.2f}-{max(r.gateway_cores for r in workers):.2f}"
            f" of a core; wrk and the upstream {max(r.wrk_cores + r.upstream_cores for r in workers):.2f} at most; "
            "the rest of the machine went elsewhere).",
        ]
    elif last.workers > first.workers:
        busy = last.gateway_cores + last.upstream_cores + last.wrk_cores
        lines += [
            "",
            f"{last.workers} workers reach {last.rps / first.rps:.2f} x the req/s of {first.workers}. What this "
            f"hides: wrk and the upstream share the {cores} cores with the gateway ({busy:.2f} of {cores} busy with "
            f"{last.workers} workers: wrk {last.wrk_cores:.2f}, upstream {last.upstream_cores:.2f}), so a second "
            "worker only gets what they leave; other work on the machine takes its share too. On a machine "
            "with a core per worker plus cores for the load generator and the notebooks, req/s scales with "
            "workers until the upstream is the limit.",
        ]
    return lines


# --- main ----------------------------------------------------------------------------------------


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk before each run (default 2)")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections (default 50)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: leave cores to servers)")
    parser.add_argument(
        "--latency-duration", type=float, default=5.0, help="seconds of the 1-connection wrk run (0: skip it)"
    )
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="idle CPU measured over (default 5)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything, report medians (default 1)")
    parser.add_argument("--ws-connections", type=int, default=4, help="WebSocket connections (default 4)")
    parser.add_argument("--ws-messages", type=int, default=5000, help="round trips per connection (default 5000)")
    parser.add_argument("--ws-window", type=int, default=32, help="messages in flight when streaming (default 32)")
    parser.add_argument("--ws-size", type=int, default=64, help="bytes per WebSocket message (default 64)")
    parser.add_argument("--no-jupyter", dest="jupyter", action="store_false", help="skip the jupyter-server rows")
    parser.add_argument("--jupyter-connections", type=int, default=10, help="wrk connections on api/status")
    parser.add_argument(
        "--auth",
        choices=("cookie", "bearer"),
        default="cookie",
        help="how requests identify themselves: a session cookie (browsers; default) or a bearer JWT (API clients)",
    )
    parser.add_argument("--gateway-log-level", default="INFO", help="INFO writes an access line per request")
    parser.add_argument(
        "--gateway-env",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for every gateway started (repeatable), e.g. a setting a branch adds",
    )
    parser.add_argument(
        "--workers",
        default="",
        help="also measure the gateway with these worker counts, e.g. 1,2 (each a fresh gateway; needs --workers-env)",
    )
    parser.add_argument(
        "--workers-env", default="GATEWAY_WORKERS", help="the setting that asks the gateway for N worker processes"
    )
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma-separated subset of {','.join(TARGETS)} (direct always runs; chp = configurable-http-proxy)",
    )
    parser.add_argument(
        "--gateway-profile", type=Path, help="run the gateway under cProfile and write its stats here (slower)"
    )
    parser.add_argument("--note", default="", help="a line for the report (e.g. what else loaded the machine)")
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for a proxy to proxy")
    parser.add_argument("--out", type=Path, default=HERE / "results.md", help="markdown report (and .json)")
    return parser.parse_args(argv)


def measure_workers(
    count: int,
    args: argparse.Namespace,
    workdir: Path,
    ports: dict[str, int],
    cookie_secret: str,
    upstream_pid: int,
    wrk: str,
    script: Path,
) -> WorkersRun:
    """A fresh gateway asked for `count` worker processes, under the same wrk load as the main table."""
    name = f"gateway-w{count}"
    ports = {**ports, name: free_port()}
    env = {**dict(args.gateway_env), args.workers_env: str(count)}
    with ExitStack() as stack:
        pid = start_gateway(
            stack, workdir, ports, cookie_secret, args.gateway_log_level, None, extra_env=env, name=name
        )
        url = f"http://127.0.0.1:{ports[name]}{PREFIX}"
        if not wait_proxying(url, HEADERS, args.wait):
            raise SystemExit(f"{name} does not proxy:\n" + (workdir / f"{name}.log").read_text()[-3000:])
        time.sleep(2)  # every worker up
        processes, idle = len(process_tree(pid)), rss_bytes(pid)
        run_wrk(wrk, script, url, duration_s=args.warmup, connections=args.connections, threads=args.threads)
        cpu = (cpu_seconds(pid), cpu_seconds(upstream_pid), children_cpu_seconds(), time.monotonic())
        fields = run_wrk(wrk, script, url, duration_s=args.duration, connections=args.connections, threads=args.threads)
        wall = time.monotonic() - cpu[3]
        gateway_s, upstream_s = cpu_seconds(pid) - cpu[0], cpu_seconds(upstream_pid) - cpu[1]
        wrk_s = children_cpu_seconds() - cpu[2]
    requests, duration_us = int(fields[0]), int(fields[1])
    return WorkersRun(
        workers=count,
        processes=processes,
        rps=requests / (duration_us / 1e6),
        p50_us=float(fields[2]),
        p99_us=float(fields[3]),
        cpu_us_per_request=gateway_s * 1e6 / max(requests, 1),
        gateway_cores=gateway_s / wall,
        upstream_cores=upstream_s / wall,
        wrk_cores=wrk_s / wall,
        idle_rss=idle,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    targets_run = {"direct", *args.targets.split(",")}
    if unknown := targets_run - set(TARGETS):
        raise SystemExit(f"unknown target(s): {', '.join(sorted(unknown))}")
    worker_counts = [int(n) for n in args.workers.split(",") if n]
    wrk = ensure_command("wrk", "wrk")
    nginx = ensure_command("nginx", "nginx-light") if "nginx" in targets_run else None
    needs_redis = "gateway" in targets_run or worker_counts
    redis = ensure_command("redis-server", "redis-server") if needs_redis else None
    if "chp" in targets_run:
        ensure_chp()
    ports = {name: free_port() for name in ("upstream", "redis", "jupyter", "chp-api", *TARGETS[1:])}
    if not args.jupyter:
        del ports["jupyter"]
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gateway-bench-")))
        script = workdir / "report.lua"
        script.write_text(WRK_REPORT)
        jwks, token = make_credentials(workdir, ports["upstream"])
        pids = {"direct": start_upstream(stack, ports["upstream"], jwks)}
        jupyter_pid = start_jupyter(stack, workdir, ports["jupyter"]) if args.jupyter else 0
        cookie_secret = secrets.token_urlsafe(48)
        if redis:
            start_redis(stack, redis, ports["redis"])
            if args.auth == "cookie":
                HEADERS["Cookie"] = asyncio.run(make_session(f"redis://127.0.0.1:{ports['redis']}/0", cookie_secret))
                WS_HEADERS["Origin"] = f"http://127.0.0.1:{ports['gateway']}"  # WebSockets must come from our pages
            else:
                HEADERS["Authorization"] = f"Bearer {token}"
        if "gateway" in targets_run:
            pids["gateway"] = start_gateway(
                stack,
                workdir,
                ports,
                cookie_secret,
                args.gateway_log_level,
                args.gateway_profile,
                extra_env=dict(args.gateway_env),
            )
        if nginx:
            pids["nginx"] = start_nginx(stack, workdir, nginx, ports)
        if "chp" in targets_run:
            pids["chp"] = start_chp(stack, workdir, ports)
        if "bare" in targets_run:
            pids["bare"] = start_bare(stack, workdir, ports)
        origins = {name: f"127.0.0.1:{ports['upstream' if name == 'direct' else name]}" for name in pids}
        jupyter_origins = {**origins, "direct": f"127.0.0.1:{ports.get('jupyter')}"}
        for name, origin in origins.items():
            ready = wait_proxying(f"http://{origin}{PREFIX}", HEADERS, args.wait)
            if ready and args.jupyter:
                url = f"http://{jupyter_origins[name]}{JUPYTER_PREFIX}api/status"
                ready = wait_proxying(url, HEADERS, args.wait * 2, body=None)
            if not ready:
                print(f"{name} at {origin} does not proxy; see {workdir}", file=sys.stderr)
                log = workdir / f"{name}.log"
                if log.exists():
                    print(log.read_text()[-3000:], file=sys.stderr)
                return 1
        rss = {name: rss_bytes(pid) for name, pid in pids.items()}  # idle: started, a few requests served
        idle_cpu = idle_cpu_share(pids, args.idle_seconds)
        print("pids: " + ", ".join(f"{name} {pid}" for name, pid in pids.items()), flush=True)  # for py-spy
        http_runs: dict[str, list[HttpRun]] = {name: [] for name in origins}
        lat_runs: dict[str, list[HttpRun]] = {name: [] for name in origins} if args.latency_duration else {}
        jupyter_runs: dict[str, list[HttpRun]] = {name: [] for name in origins} if args.jupyter else {}
        ws_runs: dict[tuple[str, str], list[WsRun]] = {(mode, name): [] for mode in WS_MODES for name in origins}
        for round_no in range(1, args.rounds + 1):
            for name, origin in origins.items():
                run = measure_http(name, pids[name], f"http://{origin}{PREFIX}", args, wrk, script)
                print(
                    f"round {round_no} http {name}: {run.rps:,.0f} req/s, {run.cpu_us_per_request:.0f} µs CPU/req",
                    flush=True,
                )
                http_runs[name].append(run)
            for name in lat_runs:
                url = f"http://{origins[name]}{PREFIX}"
                run = measure_http(
                    name, pids[name], url, args, wrk, script, connections=1, duration_s=args.latency_duration
                )
                print(f"round {round_no} 1-connection {name}: p50 {run.p50_us:.0f} µs", flush=True)
                lat_runs[name].append(run)
            for mode, name in ws_runs:
                wrun = measure_ws(name, mode, pids[name], f"ws://{origins[name]}{PREFIX}ws", args)
                print(f"round {round_no} ws {mode} {name}: {wrun.messages_per_s:,.0f} msg/s", flush=True)
                ws_runs[mode, name].append(wrun)
            for name in jupyter_runs:
                pid = jupyter_pid if name == "direct" else pids[name]
                url = f"http://{jupyter_origins[name]}{JUPYTER_PREFIX}api/status"
                run = measure_http(name, pid, url, args, wrk, script, connections=args.jupyter_connections)
                print(f"round {round_no} jupyter {name}: {run.rps:,.0f} req/s", flush=True)
                jupyter_runs[name].append(run)
        http = {name: median_http(runs) for name, runs in http_runs.items()}
        lat = {name: median_http(runs) for name, runs in lat_runs.items()}
        jupyter = {name: median_http(runs) for name, runs in jupyter_runs.items()}
        ws = {key: median_ws(runs) for key, runs in ws_runs.items()}
        workers = []
        for count in worker_counts:
            wrun_ = measure_workers(count, args, workdir, ports, cookie_secret, pids["direct"], wrk, script)
            print(f"workers {count}: {wrun_.processes} processes, {wrun_.rps:,.0f} req/s", flush=True)
            workers.append(wrun_)
    env = environment(nginx)
    report = render(http, lat, ws, jupyter, rss, idle_cpu, workers, env, args)
    print(report)
    args.out.write_text(report)
    raw = {
        "environment": env,
        "args": {k: str(v) for k, v in vars(args).items()},
        "idle_rss": rss,
        "idle_cpu_s_per_s": idle_cpu,
        "http": {name: [asdict(r) for r in runs] for name, runs in http_runs.items()},
        "one_connection": {name: [asdict(r) for r in runs] for name, runs in lat_runs.items()},
        "jupyter": {name: [asdict(r) for r in runs] for name, runs in jupyter_runs.items()},
        "websocket": {f"{mode} {name}": [asdict(r) for r in runs] for (mode, name), runs in ws_runs.items()},
        "workers": [asdict(r) for r in workers],
    }
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=2) + "\n")
    if args.gateway_profile is not None and args.gateway_profile.exists():
        pstats.Stats(str(args.gateway_profile)).sort_stats("tottime").print_stats(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
