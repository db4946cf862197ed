"""`ChainedFile`: rotation, restarts (clean and after a crash), one writer per directory, and a
directory that cannot be written, then can again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from gateway.audit.chain import Sealer
from gateway.audit.filesink import AuditDirBusy, ChainedFile
from gateway.audit.verify import verify

from .conftest import unused_port, wait_for_port, wait_until


def writer(directory: Path, rotate_bytes: int = 1 << 20) -> ChainedFile:
    file = ChainedFile(directory, Sealer(), rotate_bytes)
    file.open()
    return file


def event(n: int) -> dict[str, object]:
    return {"action": "auth.login", "actor": "alice", "details": {"n": n}}


def stored(directory: Path) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for path in sorted(directory.glob("audit-*.jsonl"))
        for line in path.read_bytes().split(b"\n")
        if line.startswith(b"{") and line.endswith(b"}")
    ]


def test_files_rotate_by_size_and_the_chain_runs_on(tmp_path: Path) -> None:
    file = writer(tmp_path, rotate_bytes=4096)
    for n in range(50):
        file.append(event(n))
    file.close()
    sizes = [path.stat().st_size for path in sorted(tmp_path.glob("audit-*.jsonl"))]
    assert len(sizes) > 2 and all(size <= 4096 for size in sizes)
    assert [r["seq"] for r in stored(tmp_path)] == list(range(1, 51))
    assert verify(tmp_path).ok


def test_a_restart_continues_the_chain_in_the_same_file(tmp_path: Path) -> None:
    first = writer(tmp_path)
    for n in range(3):
        first.append(event(n))
    first.close()
    second = writer(tmp_path)
    second.append(event(3))
    second.close()
    assert len(list(tmp_path.glob("audit-*.jsonl"))) == 1
    report = verify(tmp_path)
    assert report.ok and report.last_seq == 4


def test_after_a_crash_mid_write_the_chain_continues_in_a_new_file(tmp_path: Path) -> None:
    first = writer(tmp_path)
    for n in range(3):
        first.append(event(n))
    first.close()
    with open(tmp_path / "audit-00000001.jsonl", "ab") as torn:
        torn.write(b'{"action":"auth.lo')
    second = writer(tmp_path)
    second.append(event(3))
    second.close()
    assert (tmp_path / "audit-00000002.jsonl").exists()
    report = verify(tmp_path)
    assert report.ok and report.last_seq == 4 and report.notes[0].startswith("TORN: audit-00000001.jsonl line 4")


def test_a_second_writer_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    first = writer(tmp_path)
    with pytest.raises(AuditDirBusy):
        writer(tmp_path)
    first.close()
    writer(tmp_path).close()  # free again once the first has closed


def test_events_wait_while_the_directory_cannot_be_written_and_are_written_in_order_after(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    directory.write_text("a file where the directory should be")
    file = writer(directory)
    assert file.problem is not None and "cannot be written" in file.problem
    assert file.append(event(0)) is False and file.append(event(1)) is False
    directory.unlink()
    assert file.retry() is True and file.problem is None
    file.append(event(2))
    file.close()
    assert [r["details"] for r in stored(directory)] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert verify(directory).ok


def test_a_file_removed_behind_the_writers_back_is_replaced_and_nothing_after_is_lost(tmp_path: Path) -> None:
    file = writer(tmp_path)
    file.append(event(0))
    (tmp_path / "audit-00000001.jsonl").unlink()
    file.check()
    file.append(event(1))
    file.close()
    assert [r["seq"] for r in stored(tmp_path)] == [2]
    assert "begins at event 2" in verify(tmp_path).notes[0]


def start_gateway(cwd: Path, port: int, routes: Path, audit_dir: Path) -> subprocess.Popen[bytes]:
    """`notebook-gateway dev` in its own process, with a static backend and its audit files in `audit_dir`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")}
    env |= {"GATEWAY_BACKEND": "static", "GATEWAY_ROUTES_FILE": str(routes), "GATEWAY_AUDIT_DIR": str(audit_dir)}
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "dev", "--port", str(port)],
        cwd=cwd,  # dev keeps its other state under ./.dev
        # Every anonymous refusal audited (not sampled): they are this test's stream of events.
        env=env | {"GATEWAY_AUDIT_STDOUT": "false", "GATEWAY_AUDIT_ANONYMOUS_REFUSALS": "all"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_sigkill_during_a_burst_loses_no_acknowledged_event(
    tmp_path: Path, routes_file: Callable[[dict[tuple[str, str], str]], Path], http: aiohttp.ClientSession
) -> None:
    """A real gateway process, killed while 20 clients are getting refusals (each one audited before
    its answer is sent): every answered request's event is on disk and the chain verifies."""
    audit_dir, port = tmp_path / "audit", unused_port()
    gateway = start_gateway(tmp_path, port, routes_file({}), audit_dir)
    acknowledged: list[str] = []

    async def client() -> None:
        while True:
            async with http.get(f"http://127.0.0.1:{port}/api/namespaces/alice/notebooks") as resp:
                assert resp.status == 401
                acknowledged.append(resp.headers["X-Request-Id"])

    try:
        await asyncio.to_thread(wait_for_port, port, 60, gateway)
        clients = [asyncio.create_task(client()) for _ in range(20)]
        await wait_until(lambda: len(acknowledged) >= 500, timeout_s=60)
        gateway.send_signal(signal.SIGKILL)
        outcomes = await asyncio.gather(*clients, return_exceptions=True)
        # Each client ends when the gateway is gone, with a connection error and nothing else (a wrong status
        # before the kill would be an AssertionError here, not a silent end).
        assert all(isinstance(outcome, aiohttp.ClientConnectionError) for outcome in outcomes), outcomes
    finally:
        gateway.kill()
        gateway.wait()
    recorded = {record["request_id"] for record in stored(audit_dir) if record["action"] == "access.denied"}
    assert set(acknowledged) <= recorded
    assert verify(audit_dir).ok
