"""A Redis master, one replica and three sentinels (`redis-server --sentinel`), all real processes on loopback,
for the failover tests: the set-up oauth2-proxy users run Redis in, small enough for a laptop."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from .conftest import unused_port, wait_for_port

MASTER_NAME = "gatewaymaster"


class SentinelSet:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.master_port, self.replica_port = unused_port(), unused_port()
        self.sentinel_ports = [unused_port() for _ in range(3)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def sentinels(self) -> str:
        """The value of GATEWAY_REDIS_SENTINELS."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def start(self) -> None:
        self._server("master", self.master_port)
        self._server("replica", self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port))
        for index, port in enumerate(self.sentinel_ports):
            config = self.directory / f"sentinel-{index}.conf"  # sentinels rewrite their own file: one each
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                f"sentinel failover-timeout {MASTER_NAME} 5000\n"
            )
            self._start(f"sentinel-{index}", port, [str(config), "--sentinel"])
        self.wait_replicated()

    def _server(self, name: str, port: int, *extra: str) -> None:
        args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *extra]
        self._start(name, port, args)

    def _start(self, name: str, port: int, args: list[str]) -> None:
        with (self.directory / f"{name}.log").open("wb") as log:  # the child keeps its own copy of the descriptor
            self.procs[name] = subprocess.Popen(["redis-server", *args], stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(port, proc=self.procs[name])

    def master(self) -> tuple[str, int]:
        """Where the sentinels say the master is now."""
        with redis.Redis(port=self.sentinel_ports[0], socket_timeout=2) as sentinel:
            host, port = sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)
            return str(host), int(port)

    def wait_replicated(self, timeout_s: float = 20.0) -> None:
        """Until the replica holds everything the master has written (WAIT), and the sentinels know of it."""
        deadline = time.monotonic() + timeout_s
        with redis.Redis(port=self.master_port, socket_timeout=5) as master:
            while time.monotonic() < deadline:
                if master.execute_command("WAIT", 1, 1000) >= 1 and self._sentinels_see_the_replica():
                    return
                time.sleep(0.1)
        raise AssertionError("the replica or the sentinels did not catch up")

    def _sentinels_see_the_replica(self) -> bool:
        for port in self.sentinel_ports:
            with redis.Redis(port=port, socket_timeout=2) as sentinel:
                if not sentinel.sentinel_slaves(MASTER_NAME):
                    return False
        return True

    def kill(self, name: str) -> None:
        self.procs[name].kill()
        self.procs[name].wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (scripts/setup-system installs it)")
    redis_set = SentinelSet(tmp_path)
    try:
        redis_set.start()
        yield redis_set
    finally:
        redis_set.stop()
