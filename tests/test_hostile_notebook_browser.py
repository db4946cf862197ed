"""A hostile notebook in a real browser: its page tries, as whoever opens it, everything a notebook's
code could do with the visitor's gateway session. Opened by a cluster-admin, every attempt fails and
the admin's session still works; opened by its owner, it does what a notebook may (its own server).

The gateway runs in this process (static backend, development sign-in); Chromium resolves the
`*.localhost` notebook hosts to loopback by itself, as it does for `dev`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Page

from gateway import keys
from gateway.app import create_app
from gateway.errors import Forbidden
from gateway.identity import Identity
from tests.browser import browser_page, sign_in, write_policy
from tests.conftest import make_settings, unused_port
from tests.fakes.upstream import FakeUpstream

EVIL = "/notebook/mallory/evil/"
OTHER = "/notebook/ops/other/"

# Each attempt resolves to a short string; "ok:..." means the page got what it was after.
HOSTILE_SCRIPT = """
const cfg = JSON.parse(document.getElementById("cfg").textContent);
const results = {};
async function attempt(name, fn) {
  try { results[name] = await fn(); } catch (e) { results[name] = "failed: " + e.name; }
}
const read = async (url, init) => {
  const r = await fetch(url, {credentials: "include", ...init});
  const text = await r.text();
  return r.ok ? "ok:" + text.slice(0, 200) : "failed: status " + r.status;
};
(async () => {
  await attempt("read_policies", () => read(cfg.gateway + "/api/policies"));
  await attempt("read_policies_here", () => read("/api/policies"));
  await attempt("grant_cluster_admin", async () => {
    const body = JSON.stringify({subject: "user:mallory@example.com", namespace: "*", role: "cluster-admin"});
    // text/plain: a "simple" request, sent without a CORS preflight; its answer is opaque.
    await fetch(cfg.gateway + "/api/policies", {method: "POST", credentials: "include", mode: "no-cors",
                                                headers: {"Content-Type": "text/plain"}, body});
    return "sent";
  });
  await attempt("grant_cluster_admin_here", () => read("/api/policies", {method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({subject: "user:mallory@example.com", namespace: "*", role: "cluster-admin"})}));
  await attempt("read_notebooks_page", () => read(cfg.gateway + "/notebooks"));
  await attempt("read_notebooks_page_here", () => read("/notebooks"));
  await attempt("read_other_notebook", () => read(cfg.other + cfg.otherPath + "echo"));
  await attempt("read_other_notebook_here", () => read(cfg.otherPath + "echo"));
  await attempt("service_worker_at_root", async () => {
    const reg = await navigator.serviceWorker.register(cfg.evilPath + "sw.js", {scope: "/"});
    return "ok:" + reg.scope;
  });
  await attempt("service_worker_own_prefix", async () => {
    const reg = await navigator.serviceWorker.register(cfg.evilPath + "sw.js", {scope: cfg.evilPath});
    return "ok:" + reg.scope;
  });
  await attempt("cookies", async () => "seen:" + document.cookie);
  await attempt("websocket_other_notebook", () => new Promise((resolve) => {
    const ws = new WebSocket(cfg.other.replace("http", "ws") + cfg.otherPath + "ws");
    ws.onopen = () => { ws.close(); resolve("ok:open"); };
    ws.onerror = () => resolve("failed: error");
  }));
  await attempt("own_notebook", () => read(cfg.evilPath + "data"));
  window.results = results;
})();
"""


def hostile_upstream(config: dict[str, str]) -> web.Application:
    """The "notebook" its owner controls: a page with the script above, a service worker that asks
    for the whole origin, and some data of its own."""

    async def serve(request: web.Request) -> web.StreamResponse:
        rest = request.path.removeprefix(EVIL)
        if rest == "sw.js":
            return web.Response(
                text="self.addEventListener('fetch', () => {});",
                content_type="application/javascript",
                headers={"Service-Worker-Allowed": "/"},
            )
        if rest == "data":
            return web.json_response({"owner": "mallory"})
        page = (
            f'<!doctype html><title>evil</title><script type="application/json" id="cfg">{json.dumps(config)}</script>'
            f"<script>{HOSTILE_SCRIPT}</script>"
        )
        return web.Response(text=page, content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", serve)
    return app


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    async with browser_page() as opened:
        yield opened


@pytest.fixture
async def gateway(aiohttp_server: Any, tmp_path: Path) -> web.Application:
    return await start_gateway(aiohttp_server, tmp_path, "isolated")


async def start_gateway(aiohttp_server: Any, tmp_path: Path, mode: str) -> web.Application:
    port = unused_port()
    base = f"http://127.0.0.1:{port}"
    other = await FakeUpstream.start(aiohttp_server)
    app_config = {
        "gateway": base,
        "other": f"http://other--ops.localhost:{port}" if mode == "isolated" else base,
        "otherPath": OTHER,
        "evilPath": EVIL,
    }
    evil = await aiohttp_server(hostile_upstream(app_config))
    routes = tmp_path / "routes.toml"
    routes.write_text(
        f'[[route]]\nnamespace = "mallory"\nname = "evil"\nurl = "{str(evil.make_url("/")).rstrip("/")}"\n\n'
        f'[[route]]\nnamespace = "ops"\nname = "other"\nurl = "{other.url}"\n'
    )
    policy = write_policy(tmp_path / "policies", "user:mallory@example.com, mallory, admin")
    settings = make_settings(
        public_url=base,
        dev_provider=True,
        routes_file=routes,
        policy_file=policy,
        bootstrap_admins=("admin@example.com",),
        auto_profile=False,
        notebook_origins=mode,
        notebook_domain="localhost" if mode == "isolated" else None,
    )
    app = create_app(settings)
    await aiohttp_server(app, port=port)
    return app


def base(app: web.Application) -> str:
    return app[keys.SETTINGS].base_url


async def open_hostile_page(page: Page, app: web.Application, user: str) -> dict[str, str]:
    await page.goto(base(app) + "/")
    await sign_in(page, user)
    await page.wait_for_url(f"{base(app)}/**")
    if user == "admin@example.com":
        await page.goto(base(app) + OTHER + "echo")  # the admin holds a credential for another notebook too
    await page.goto(base(app) + EVIL)
    if app[keys.ORIGINS].isolated:
        assert page.url == f"http://evil--mallory.localhost:{base(app).rsplit(':', 1)[1]}{EVIL}"
    await page.wait_for_function("window.results !== undefined", timeout=20_000)
    results: dict[str, str] = await page.evaluate("window.results")
    print(json.dumps(results, indent=1))  # shown when a test fails: what each attempt ran into
    return results


async def test_a_cluster_admin_opening_a_hostile_notebook_gives_it_nothing(
    page: Page, gateway: web.Application
) -> None:
    before = gateway[keys.POLICIES].doc.rules
    results = await open_hostile_page(page, gateway, "admin@example.com")
    # What the notebook may do on its own origin (its own data, a worker scoped to its own prefix) is no attack.
    mine = ("own_notebook", "service_worker_own_prefix", "cookies")
    attacks = {name: value for name, value in results.items() if name not in mine}
    assert len(attacks) == 10, results
    succeeded = {name: value for name, value in attacks.items() if value.startswith("ok:")}
    assert not succeeded, succeeded
    assert "notebook_gateway" not in results["cookies"]  # neither the session nor a credential is readable
    assert gateway[keys.POLICIES].doc.rules == before  # the policy is unchanged
    with pytest.raises(Forbidden):
        gateway[keys.AUTHZ].require(Identity("mallory@example.com"), "ops", "connect", "other")
    # The admin's session still works on the gateway's host.
    response = await page.request.get(base(gateway) + "/oauth2/userinfo")
    assert response.status == 200 and (await response.json())["user"] == "admin@example.com"


async def test_the_owner_opening_the_same_page_gets_what_a_notebook_may(page: Page, gateway: web.Application) -> None:
    results = await open_hostile_page(page, gateway, "mallory@example.com")
    assert results["own_notebook"] == 'ok:{"owner": "mallory"}'
    assert results["service_worker_own_prefix"].startswith("ok:")  # inside its own prefix, on its own origin
    assert not results["service_worker_at_root"].startswith("ok:")
    assert not results["read_policies"].startswith("ok:")  # the gateway's API is not the notebook's to read


async def test_in_single_origin_mode_the_same_page_acts_as_the_admin(
    page: Page, aiohttp_server: Any, tmp_path: Path
) -> None:
    """What docs/security.md says single-origin mode cannot stop, shown: the page is the admin. What
    it still stops: a service worker for the origin (or any from a notebook)."""
    gateway = await start_gateway(aiohttp_server, tmp_path, "single")
    results = await open_hostile_page(page, gateway, "admin@example.com")
    assert results["grant_cluster_admin_here"].startswith("ok:")
    assert results["read_notebooks_page_here"].startswith("ok:")
    assert any(rule.subject == "user:mallory@example.com" and rule.role == "cluster-admin"
               for rule in gateway[keys.POLICIES].doc.rules)  # fmt: skip
    assert not results["service_worker_at_root"].startswith("ok:")
    assert not results["service_worker_own_prefix"].startswith("ok:")
