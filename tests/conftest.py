"""Shared fixtures: free ports, settings, the gateway under test, and real Jupyter servers."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway import keys
from gateway.app import create_app
from gateway.authz.rules import PolicyDoc, Rule, make_rule
from gateway.authz.stores import FilePolicyStore, MemoryPolicyStore
from gateway.backends.local import jupyter_command
from gateway.config import Settings
from gateway.cookies import SESSION_COOKIE
from tests.fakes.kube_api import (  # noqa: F401  (fixtures for every module)
    fake_kube_backend,
    fake_kube_client,
    fake_kubeconfig,
    kube_api,
)
from tests.fakes.node_idp import (
    node_idp,  # noqa: F401  (a fixture for every module)
    sign_in,
)
from tests.fakes.upstream import FakeUpstream
from tests.openapi_check import ResponseChecker
from tests.origins import OriginClient
from tests.processes import end_process

Client = TestClient[web.Request, web.Application]

# Every audit event the run makes is checked against the published schema at the end of the run.
pytest_plugins = ["tests.audit_schema"]


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 30.0, proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout_s}s")


# Each app gets an audit directory of its own (one writer per directory), removed at exit.
_AUDIT_ROOT = tempfile.mkdtemp(prefix="gateway-test-audit-")
atexit.register(shutil.rmtree, _AUDIT_ROOT, True)


def make_settings(**overrides: Any) -> Settings:
    """Settings for a test: explicit values, with the environment's GATEWAY_* variables ignored."""
    audit_dir = Path(tempfile.mkdtemp(dir=_AUDIT_ROOT))
    # Single-origin unless a test asks otherwise: a test that cares runs in both (`notebook_origins` below).
    values: dict[str, Any] = {
        "backend": "static",
        "log_format": "text",
        "audit_dir": audit_dir,
        "notebook_origins": "single",
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
async def upstream(aiohttp_server: Any) -> FakeUpstream:
    """The fake notebook server (echoes requests, streams, relays WebSocket frames) on loopback."""
    return await FakeUpstream.start(aiohttp_server)


@pytest.fixture
def routes_file(tmp_path: Path) -> Callable[[dict[tuple[str, str], str]], Path]:
    """Writes a static backend routes file: {(namespace, name): url}."""
    path = tmp_path / "routes.toml"

    def write(routes: dict[tuple[str, str], str]) -> Path:
        lines = []
        for (namespace, name), url in routes.items():
            lines += ["[[route]]", f'namespace = "{namespace}"', f'name = "{name}"', f'url = "{url}"', ""]
        path.write_text("\n".join(lines))
        return path

    return write


BROWSER_HEADERS = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}


async def sign_in_dev(client: Client, username: str, groups: str = "") -> None:
    """Sign in through the gateway's built-in development provider, as a browser would."""
    callback = await sign_in(
        client.session, client.make_url("/oauth2/start"), username, "any password", fields={"groups": groups}
    )
    async with client.session.get(callback, allow_redirects=False, headers=BROWSER_HEADERS) as resp:
        assert resp.status == 302, await resp.text()


def session_headers(client: Client) -> dict[str, str]:
    """A signed-in test client's session cookie and Origin, for requests made without its cookie jar."""
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))[SESSION_COOKIE].value
    return {"Cookie": f"{SESSION_COOKIE}={cookie}", "Origin": str(client.make_url("/").origin())}


@pytest.fixture
def notebook_origins() -> str:
    """How `gateway_factory` serves notebooks; a module runs in both modes by importing
    `tests.origins.in_both_origin_modes`, which overrides this. Isolated uses `*.localhost` names, as `dev` does."""
    return "single"


@pytest.fixture
def aiohttp_client_cls() -> type[TestClient[Any, Any]]:
    return OriginClient  # sends notebook paths to the notebook's own origin when the app isolates them


@pytest.fixture
async def gateway_factory(aiohttp_client: Callable[..., Any], notebook_origins: str) -> Callable[..., Any]:
    """Builds the real app (cleanup contexts and all) for some settings and returns a client that
    has signed in (through the development provider) as `user`, or not at all with `user=None`.
    Unless `owns_namespace=False` (or self-service is off), `user` owns the namespace named by
    their name's first part (`alice`), where the tests' notebooks are. The client sends our own
    Origin, as the gateway's pages would."""

    async def build(
        *,
        user: str | None = "alice@example.com",
        groups: str = "",
        configure: Callable[[web.Application], None] | None = None,
        owns_namespace: bool = True,
        **overrides: Any,
    ) -> Client:
        port = unused_port()
        public = f"http://127.0.0.1:{port}"
        if notebook_origins == "isolated":
            overrides = {"notebook_origins": "isolated", "notebook_domain": "localhost", **overrides}
        app = create_app(make_settings(public_url=public, dev_provider=True, **overrides))
        if user is not None and owns_namespace and overrides.get("auto_profile") is not False:
            give_own_namespace(app, user)  # what self-service gave the tests' users before it checked claims
        if configure is not None:
            configure(app)  # e.g. swap in a recording audit log before the app starts
        client: Client = await aiohttp_client(app, server_kwargs={"port": port}, headers={"Origin": public})
        if user is not None:
            await sign_in_dev(client, user, groups)
        return client

    return build


def own_namespace_rule(user: str) -> Rule:
    """`user` as admin of the namespace named by their name's first part (alice@example.com: `alice`),
    where the tests' notebooks live: as if a cluster-admin had made their profile."""
    return make_rule(f"user:{user}", user.split("@", 1)[0].lower(), "admin")


def give_own_namespace(app: web.Application, user: str) -> None:
    """Before the app starts: `own_namespace_rule(user)` in its policy store (a memory store, or a
    policy file not written yet), so that sign-in finds the user's namespace and makes none."""
    manager, rule = app[keys.POLICIES], own_namespace_rule(user)
    if isinstance(manager.store, MemoryPolicyStore):
        manager.store = MemoryPolicyStore(PolicyDoc.of_rules([rule]))
    elif isinstance(manager.store, FilePolicyStore) and not manager.store.path.exists():
        manager.store.path.parent.mkdir(parents=True, exist_ok=True)
        manager.store.path.write_text(PolicyDoc.of_rules([rule]).text)


class JupyterServer:
    """A real `jupyter_server` process serving under `/notebook/<namespace>/<name>/`."""

    def __init__(self, namespace: str, name: str, root_dir: Path) -> None:
        self.namespace, self.name = namespace, name
        self.port = unused_port()
        self.prefix = f"/notebook/{namespace}/{name}/"
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "JUPYTER_PLATFORM_DIRS": "1", "JUPYTER_RUNTIME_DIR": str(root_dir / ".runtime")}
        self.proc = subprocess.Popen(
            jupyter_command(base_url=self.prefix, port=self.port, root_dir=root_dir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )

    def wait_ready(self) -> None:
        wait_for_port(self.port, timeout_s=60, proc=self.proc)

    def stop(self) -> None:
        end_process(self.proc)


@pytest.fixture(scope="session")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """One real Jupyter server for the whole run, at /notebook/alice/nb1/ (started once: it is slow)."""
    server = JupyterServer("alice", "nb1", tmp_path_factory.mktemp("jupyter"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


async def wait_until(predicate: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.05) -> None:
    """Poll `predicate` (sync or async) until it returns truthy; fail the test on timeout."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(interval_s)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client for talking to servers directly (not through the gateway)."""
    async with aiohttp.ClientSession() as session:
        yield session


class RedisServer:
    """A real redis-server on a free loopback port, which a test may stop and start again."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self.port = unused_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.data_dir = data_dir  # with a directory, data survives a stop and start (append-only file)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        persistence = ["--appendonly", "no", "--save", ""]
        if self.data_dir is not None:
            persistence = ["--appendonly", "yes", "--appendfsync", "always", "--save", "", "--dir", str(self.data_dir)]
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", *persistence],
            stdout=subprocess.DEVNULL,
        )
        wait_for_port(self.port, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            end_process(self.proc)
            self.proc = None


def _redis_server(data_dir: Path | None = None) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (scripts/setup-system installs it)")
        pytest.skip("redis-server is not installed")
    server = RedisServer(data_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One Redis for the whole run; tests use distinct key prefixes or flush what they wrote."""
    yield from _redis_server()


@pytest.fixture
def own_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, which the test may stop and restart; its data survives that."""
    yield from _redis_server(tmp_path)


@pytest.fixture
def openapi_checked(monkeypatch: pytest.MonkeyPatch) -> Iterator[ResponseChecker]:
    """Every gateway `gateway_factory` builds in the test checks its JSON API answers against
    /api/openapi.json (tests/openapi_check.py); a module opts in with `pytestmark`. The test fails on
    any answer the document does not describe."""
    checker, original = ResponseChecker(), create_app

    def checked_app(settings: Settings) -> web.Application:
        app = original(settings)
        app.middlewares.insert(0, checker.middleware)  # outermost: it sees errors as clients get them
        return app

    monkeypatch.setattr(sys.modules[__name__], "create_app", checked_app)
    yield checker
    assert not checker.mismatches, "answers that /api/openapi.json does not describe:\n" + "\n".join(checker.mismatches)
