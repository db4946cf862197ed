"""Faults, one at a time, under light steady traffic: what users saw, how long recovery took, events lost.

One `python -m gateway serve` (Redis sessions with an append-only file, a policy file, audit on a small tmpfs,
INFO access log) in front of the bench upstream, signing users in through the real OpenID provider of
tests/oidc. Throughout: 1 KiB GETs at `--rate` per second with a signed-in session, a sign-in through the
provider every 2 s, and an audited policy grant every second. The faults, each for `--fault-seconds`:

- redis: redis-server stopped, then started again on the same port (its append-only file keeps the sessions);
- provider: the OpenID provider stopped, then started again on the same port;
- upstream: the notebook upstream killed (-9), then started again;
- audit-full: the audit directory's filesystem filled, then space freed (needs root: it is a tmpfs mount);
- gateway-kill: the gateway killed (-9) mid-traffic, then started again (as a Deployment would).

For each: the status counts users saw during the fault and until recovery, the recovery time (from the
moment the fault ends to the first whole second with only successes), and events lost: policy grants
acknowledged (200) whose audit event is not in the audit files at the end. Ends with `audit verify`.
Usage: `PYTHONPATH=. .venv/bin/python bench/faults.py [--fault-seconds 60] [--only redis,upstream]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from proxy_bench import (
    PREFIX,
    ROOT,
    ensure_command,
    free_port,
    make_credentials,
    running,
    start_gateway,
    start_upstream,
    wait_for_port,
    wait_proxying,
)
from soak import POLICY, signed_in

from tests.fakes.node_idp import ALICE, BOB, NodeIdP

FAULTS = ("redis", "provider", "upstream", "audit-full", "gateway-kill")
AUDIT_FS_BYTES = 64 * 2**20


@dataclass
class Seen:
    """Outcomes per whole second (monotonic), and the policy grants the gateway acknowledged."""

    seconds: dict[int, Counter[str]] = field(default_factory=dict)
    acknowledged: list[str] = field(default_factory=list)  # subjects

    def add(self, what: str) -> None:
        self.seconds.setdefault(int(time.monotonic()), Counter())[what] += 1

    def between(self, start: float, end: float) -> Counter[str]:
        total: Counter[str] = Counter()
        for second, counts in self.seconds.items():
            if start <= second < end:
                total.update(counts)
        return total


class Setup:
    """The processes, restartable one by one."""

    def __init__(self, stack: ExitStack, workdir: Path, args: argparse.Namespace) -> None:
        self.stack, self.workdir, self.args = stack, workdir, args
        self.ports = {name: free_port() for name in ("upstream", "redis", "gateway")}
        self.base = f"http://127.0.0.1:{self.ports['gateway']}"
        self.redis_binary = ensure_command("redis-server", "redis-server")
        self.jwks, _ = make_credentials(workdir, self.ports["upstream"])
        self.audit_dir = workdir / "audit"
        self.audit_dir.mkdir()
        self.mounted = False
        self.procs: dict[str, int] = {}
        self.idp: NodeIdP | None = None
        self.generation = 0

    def start_all(self) -> None:
        if os.geteuid() == 0:  # a filesystem of its own, so that filling it harms nothing else
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={AUDIT_FS_BYTES}", "tmpfs", str(self.audit_dir)], check=True
            )
            self.mounted = True
            self.stack.callback(subprocess.run, ["umount", "-l", str(self.audit_dir)], check=False)
        self.procs["upstream"] = start_upstream(self.stack, self.ports["upstream"], self.jwks)
        self.start_redis()
        self.start_idp(port=0)
        self.workdir.joinpath("policy.csv").write_text(POLICY)
        self.start_gateway()

    def start_redis(self) -> None:
        data = self.workdir / "redis"
        data.mkdir(exist_ok=True)
        args = [self.redis_binary, "--port", str(self.ports["redis"]), "--bind", "127.0.0.1", "--dir", str(data)]
        args += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
        proc = self.stack.enter_context(running(args))
        wait_for_port(self.ports["redis"], proc)
        self.procs["redis"] = proc.pid

    def start_idp(self, port: int) -> None:
        secret = self.idp.client_secret if self.idp else None
        self.idp = NodeIdP(
            redirect_uris=[f"{self.base}/oauth2/callback"],
            post_logout_redirect_uris=[f"{self.base}/"],
            client_secret=secret,
            port=port,
        )
        self.idp.start()
        self.stack.callback(self.idp.stop)

    def start_gateway(self) -> None:
        assert self.idp is not None
        self.generation += 1
        name = f"gateway-{self.generation}"
        env = {
            "GATEWAY_OIDC_ISSUER": self.idp.issuer,
            "GATEWAY_OIDC_CLIENT_ID": self.idp.client_id,
            "GATEWAY_OIDC_CLIENT_SECRET": self.idp.client_secret,
            "GATEWAY_POLICY_FILE": str(self.workdir / "policy.csv"),
            "GATEWAY_BOOTSTRAP_ADMINS": ALICE,
            "GATEWAY_AUDIT_DIR": str(self.audit_dir),  # the same directory across restarts
            "GATEWAY_PORT": str(self.ports["gateway"]),
        }
        ports = {**self.ports, name: self.ports["gateway"]}
        secret = "faults-cookie-secret-" + "k" * 32
        self.procs["gateway"] = start_gateway(
            self.stack, self.workdir, ports, secret, "INFO", None, extra_env=env, name=name
        )
        if not wait_proxying(f"{self.base}/readyz", {}, 60, body=None):
            raise SystemExit((self.workdir / f"{name}.log").read_text()[-3000:])

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        os.kill(self.procs[name], sig)
        try:
            os.waitpid(self.procs[name], 0)
        except ChildProcessError:
            pass

    def fill_audit(self) -> None:
        """Fill the audit filesystem to the last byte (unbuffered: nothing left to fail on close)."""
        fd = os.open(self.audit_dir / "filler", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            for size in (2**16, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * size)
                except OSError:
                    pass
        finally:
            os.close(fd)

    def faults(self) -> dict[str, tuple[Callable[[], None], Callable[[], None]]]:
        """Each fault's (apply, restore)."""
        assert self.idp is not None
        idp_port = self.idp.port
        return {
            "redis": (lambda: self.kill("redis", signal.SIGTERM), self.start_redis),
            "provider": (lambda: self.idp.stop() if self.idp else None, lambda: self.start_idp(idp_port)),
            "upstream": (
                lambda: self.kill("upstream"),
                lambda: self.procs.__setitem__(
                    "upstream", start_upstream(self.stack, self.ports["upstream"], self.jwks)
                ),
            ),
            "audit-full": (self.fill_audit, lambda: (self.audit_dir / "filler").unlink()),
            "gateway-kill": (lambda: self.kill("gateway"), self.start_gateway),
        }


class Traffic:
    def __init__(self, base: str) -> None:
        self.base = base
        self.seen = Seen()
        self.stopping = asyncio.Event()
        self.grants = 0
        self.fault = "baseline"

    async def every(self, seconds: float, action: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Start `action` every `seconds` without waiting for it (a stuck request must not slow the others)."""
        pending: set[asyncio.Task[None]] = set()
        while not self.stopping.is_set():
            started = time.monotonic()
            task = asyncio.create_task(action())
            pending.add(task)
            task.add_done_callback(pending.discard)
            try:
                await asyncio.wait_for(self.stopping.wait(), max(seconds - (time.monotonic() - started), 0))
            except TimeoutError:
                pass
        await asyncio.gather(*pending, return_exceptions=True)

    async def get(self, session: aiohttp.ClientSession) -> None:
        try:
            async with session.get(f"{self.base}{PREFIX}", timeout=aiohttp.ClientTimeout(total=10)) as resp:
                await resp.read()
                self.seen.add(f"GET {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.seen.add(f"GET {type(exc).__name__}")

    async def sign_in_once(self) -> None:
        try:
            session = await asyncio.wait_for(signed_in(self.base, BOB), 15)
            await session.close()
            self.seen.add("sign-in ok")
        except Exception as exc:
            self.seen.add(f"sign-in failed ({type(exc).__name__})")

    async def grant(self, session: aiohttp.ClientSession) -> None:
        self.grants += 1
        subject = f"user:{self.fault}-{self.grants}@example.com"
        rule = {"subject": subject, "namespace": "bench", "role": "view"}
        try:
            async with session.post(
                f"{self.base}/api/policies",
                json=rule,
                headers={"Origin": self.base},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp:
                await resp.read()
                self.seen.add(f"grant {resp.status}")
                if resp.status == 200:
                    self.seen.acknowledged.append(subject)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.seen.add(f"grant {type(exc).__name__}")


def recovered_at(seen: Seen, after: float, limit_s: float) -> float | None:
    """The start of the first whole second after `after` in which every request succeeded."""
    for second in sorted(seen.seconds):
        if second < after or second > after + limit_s:
            continue
        counts = seen.seconds[second]
        bad = [k for k in counts if not (k.endswith(" 200") or k == "sign-in ok")]
        if counts and not bad:
            return float(second)
    return None


async def run_faults(setup: Setup, args: argparse.Namespace) -> list[dict[str, object]]:
    traffic = Traffic(setup.base)
    alice = await signed_in(traffic.base, ALICE)
    tasks = [
        asyncio.create_task(traffic.every(1 / args.rate, lambda: traffic.get(alice))),
        asyncio.create_task(traffic.every(2.0, traffic.sign_in_once)),
        asyncio.create_task(traffic.every(1.0, lambda: traffic.grant(alice))),
    ]
    results: list[dict[str, object]] = []
    faults = setup.faults()
    try:
        for name in args.only.split(","):
            apply, restore = faults[name]
            traffic.fault = f"{name}-before"
            await asyncio.sleep(args.settle)
            traffic.fault = name
            started = time.monotonic()
            await asyncio.to_thread(apply)
            await asyncio.sleep(args.fault_seconds)
            traffic.fault = f"{name}-after"
            restoring = time.monotonic()
            await asyncio.to_thread(restore)
            restored = time.monotonic()
            await asyncio.sleep(args.recovery_seconds)
            back = recovered_at(traffic.seen, restored, args.recovery_seconds)
            results.append(
                {
                    "fault": name,
                    "during": traffic.seen.between(started, restoring),
                    "after": traffic.seen.between(restoring, back if back is not None else time.monotonic()),
                    "restore_s": restored - restoring,
                    "recovery_s": None if back is None else max(back - restored, 0.0),
                }
            )
            print(f"{name}: recovered in {results[-1]['recovery_s']} s after restoring", flush=True)
    finally:
        traffic.stopping.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await alice.close()
    for result in results:
        name = str(result["fault"])
        acked = [s for s in traffic.seen.acknowledged if s.split(":", 1)[1].startswith(f"{name}-")]
        result["acknowledged"] = acked
    return results


def events_lost(audit_dir: Path, subjects: list[str]) -> int:
    text = "\n".join(p.read_text(errors="replace") for p in audit_dir.rglob("*") if p.is_file() and p.name != "filler")
    return sum(1 for subject in subjects if subject not in text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fault-seconds", type=float, default=60.0, help="how long each fault lasts (60)")
    parser.add_argument("--recovery-seconds", type=float, default=20.0, help="watched after each fault (20)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of normal traffic before each fault")
    parser.add_argument("--rate", type=float, default=20.0, help="GETs per second (default 20)")
    parser.add_argument("--only", default=",".join(FAULTS), help=f"comma-separated subset of {','.join(FAULTS)}")
    parser.add_argument("--note", default="", help="a line for the report")
    parser.add_argument("--out", type=Path, help="also write the report (markdown) here")
    args = parser.parse_args(argv)
    if unknown := set(args.only.split(",")) - set(FAULTS):
        parser.error(f"unknown fault(s): {', '.join(sorted(unknown))}")
    return args


def counts(counter: object) -> str:
    assert isinstance(counter, Counter)
    return ", ".join(f"{k}: {v}" for k, v in sorted(counter.items())) or "–"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gateway-faults-")))
        setup = Setup(stack, workdir, args)
        setup.start_all()
        if "audit-full" in args.only and not setup.mounted:
            raise SystemExit("audit-full needs root (a tmpfs mount); run with --only and the others")
        results = asyncio.run(run_faults(setup, args))
        setup.kill("gateway", signal.SIGTERM)  # a clean stop: its last events on disk
        for result in results:
            acked = result["acknowledged"]
            assert isinstance(acked, list)
            result["lost"] = events_lost(setup.audit_dir, acked)
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "audit", "verify", str(setup.audit_dir)],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        verify = " ".join((done.stdout + done.stderr).split())[:300]
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line), "?")
    lines = [
        "# Faults",
        "",
        f"{datetime.now(UTC).isoformat(timespec='seconds')} · {os.cpu_count()} x {cpu} · Python "
        f"{platform.python_version()} · load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}",
        "",
        *([f"Note: {args.note}", ""] if args.note else []),
        f"Each fault {args.fault_seconds:g} s; traffic: {args.rate:g} GETs/s with a signed-in session, a sign-in "
        "through oidc-provider every 2 s, an audited policy grant every second. Recovery: from the end of the "
        "fault (the restart done) to the first whole second in which everything succeeded.",
        "",
        "| fault | users saw during the fault | until recovered | restart took | recovery | grants "
        "acknowledged | events lost |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        recovery = result["recovery_s"]
        acked = result["acknowledged"]
        assert isinstance(acked, list)
        lines.append(
            f"| {result['fault']} | {counts(result['during'])} | {counts(result['after'])} | "
            f"{result['restore_s']:.1f} s | "
            + (f"{recovery:.0f} s" if isinstance(recovery, float) else f"not within {args.recovery_seconds:g} s")
            + f" | {len(acked)} | {result['lost']} |"
        )
    lines += ["", f"`python -m gateway audit verify` (exit {done.returncode}): {verify}"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
