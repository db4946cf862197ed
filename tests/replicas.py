"""Three `python -m gateway serve` processes behind a real nginx (round-robin on loopback), sharing one Redis, one
policy file and a real OpenID provider: the set-up every "many replicas" claim is tested on (tests/test_replicas.py).

Each replica has its own port (tests may go straight to one) and its own audit directory; nginx's URL is the public
URL all of them are configured with, so a sign-in started on one may come back to another.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import RedisServer, unused_port, wait_for_port
from .fakes.nginx import nginx_binary, start_nginx
from .fakes.node_idp import ALICE, NodeIdP

REPLICAS = 3
LOGIN_FAILURES_MAX = 3

NGINX_HTTP = """
    access_log {dir}/access.log;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    upstream gateways {{
        # Round-robin; a replica that refuses a connection is skipped for the rest of the run. No keep-alive
        # connections: one left idle to a replica killed that instant could take a POST nginx may not resend,
        # and a load balancer's timing is not what the kill test is about.
        {servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://gateways;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffering off;
            proxy_read_timeout 3600s;
        }}
    }}
"""


@dataclass
class Replica:
    index: int
    port: int
    audit_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Fleet:
    """The processes of one run. `url` is nginx (the public URL); `replicas[i].url` reaches one replica directly."""

    def __init__(self, directory: Path, upstream_port: int) -> None:
        self.directory = directory
        self.upstream_port = upstream_port
        self.port = unused_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.redis = RedisServer()
        self.idp = NodeIdP(redirect_uris=[f"{self.url}/oauth2/callback"], post_logout_redirect_uris=[f"{self.url}/"])
        self.policy_file = directory / "policy.csv"
        self.routes_file = directory / "routes.toml"
        self.replicas = [
            Replica(i, unused_port(), directory / f"audit-{i}", directory / f"gateway-{i}.log") for i in range(REPLICAS)
        ]
        self.nginx: subprocess.Popen[bytes] | None = None
        self._upstream: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._start_upstream()
        self.redis.start()
        self.idp.start()
        upstream = f"http://127.0.0.1:{self.upstream_port}"
        routes = [("alice", "nb1"), ("team", "nb")]
        self.routes_file.write_text(
            "".join(f'[[route]]\nnamespace = "{ns}"\nname = "{name}"\nurl = "{upstream}"\n\n' for ns, name in routes)
        )
        for replica in self.replicas:
            self.start_replica(replica.index)
        self._start_nginx()

    def _start_upstream(self) -> None:
        # The fake notebook in a process of its own, so it outlives each test's event loop.
        code = (
            "import sys; from aiohttp import web; from tests.fakes.upstream import make_app; "
            "web.run_app(make_app(), host='127.0.0.1', port=int(sys.argv[1]), print=None)"
        )
        self._upstream = subprocess.Popen(
            [sys.executable, "-c", code, str(self.upstream_port)], stderr=subprocess.DEVNULL
        )
        wait_for_port(self.upstream_port, proc=self._upstream)

    def environment(self, replica: Replica) -> dict[str, str]:
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(replica.port),
            "GATEWAY_PUBLIC_URL": self.url,
            "GATEWAY_OIDC_ISSUER": self.idp.issuer,
            "GATEWAY_OIDC_CLIENT_ID": self.idp.client_id,
            "GATEWAY_OIDC_CLIENT_SECRET": self.idp.client_secret,
            "GATEWAY_COOKIE_SECRET": "replicas-share-this-cookie-secret-0123456789",
            "GATEWAY_REDIS_URL": self.redis.url,
            "GATEWAY_POLICY_FILE": str(self.policy_file),
            "GATEWAY_BOOTSTRAP_ADMINS": ALICE,
            "GATEWAY_BACKEND": "static",
            "GATEWAY_ROUTES_FILE": str(self.routes_file),
            "GATEWAY_AUDIT_DIR": str(replica.audit_dir),
            "GATEWAY_AUDIT_STDOUT": "false",
            "GATEWAY_TRUSTED_PROXIES": "127.0.0.1/32",
            "GATEWAY_LOGIN_FAILURES_MAX": str(LOGIN_FAILURES_MAX),
            "GATEWAY_LOG_FORMAT": "text",
            "GATEWAY_SHUTDOWN_GRACE_S": "1",
            # Notebooks on the gateway's host: this harness is about replicas (notebook origins have their own tests).
            "GATEWAY_NOTEBOOK_ORIGINS": "single",
        }

    def start_replica(self, index: int) -> None:
        replica = self.replicas[index]
        with replica.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            replica.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve"],
                env=self.environment(replica),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
            )
        try:
            wait_for_port(replica.port, proc=replica.proc)
            with urllib.request.urlopen(f"{replica.url}/readyz", timeout=10) as ready:
                assert ready.status == 200
        except Exception as exc:
            raise RuntimeError(f"replica {index} did not start:\n{replica.log_path.read_text()}") from exc

    def kill(self, index: int) -> None:
        """`kill -9`: no drain, no goodbye; whatever it was serving is cut."""
        proc = self.replicas[index].proc
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def _start_nginx(self) -> None:
        conf_dir = self.directory / "nginx"
        servers = "\n        ".join(f"server 127.0.0.1:{r.port} max_fails=1 fail_timeout=60s;" for r in self.replicas)
        http = NGINX_HTTP.format(dir=conf_dir, port=self.port, servers=servers)
        self.nginx = start_nginx(conf_dir, self.port, http, worker_connections=256)

    def stop(self) -> None:
        procs = [self.nginx, *(r.proc for r in self.replicas), self._upstream]
        for proc in procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in procs:
            if proc is not None:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.idp.stop()
        self.redis.stop()


def require_tools() -> None:
    nginx_binary()
    missing = [tool for tool in ("redis-server", "node") if shutil.which(tool) is None]
    if missing:
        reason = f"{' and '.join(missing)} missing (scripts/setup-system installs them)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One fleet for a test module: starting it takes a few seconds, so tests share it and keep out of each
    other's way (their own users' sessions, namespaces and client addresses)."""
    require_tools()
    running = Fleet(tmp_path_factory.mktemp("fleet"), unused_port())
    try:
        running.start()
        yield running
    finally:
        running.stop()
