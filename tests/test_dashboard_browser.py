"""The gateway's pages inside Kubeflow's central dashboard (GATEWAY_DASHBOARD_ORIGIN), in a real browser:
the dashboard's origin frames them and switches their namespace with its messages, as its
public/library.js protocol goes ({type: "iframe-connected"} up, {type: "parent-connected"} and
{type: "namespace-selected", value} down); any other origin can neither frame them nor switch them.

The three origins are 127.0.0.1 on three ports: one site (so the framed page gets its SameSite=Lax
session cookie, as a dashboard on the gateway's host does), three origins.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import ConsoleMessage, Page, expect

from .browser import browser_page, sign_in, write_policy

Factory = Callable[..., Any]

# The dashboard's side, as main-page.js does it: answer an app's `iframe-connected` with
# `parent-connected` and the selected namespace (`?select=`; none: say nothing), posted to the app's origin.
DASHBOARD_PAGE = """<!doctype html><title>Dashboard</title>
<p id="connected">0</p>
<iframe id="app" src="{app}" width="1000" height="600"></iframe>
<script>
const gateway = "{gateway}";
const selected = new URLSearchParams(location.search).get("select");
window.addEventListener("message", (event) => {{
  if (event.origin !== gateway || !event.data || event.data.type !== "iframe-connected") return;
  const counter = document.getElementById("connected");
  counter.textContent = String(Number(counter.textContent) + 1);
  if (!selected) return;
  const app = document.getElementById("app").contentWindow;
  app.postMessage({{type: "parent-connected", value: null}}, gateway);
  app.postMessage({{type: "namespace-selected", value: selected}}, gateway);
}});
</script>"""
OTHER_PAGE = """<!doctype html><title>Elsewhere</title>
<iframe id="app" src="{app}" width="1000" height="600"></iframe>"""


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    async with browser_page() as opened:
        yield opened


async def site(aiohttp_server: Any, template: str) -> tuple[str, dict[str, str]]:
    """A page server on 127.0.0.1; returns its origin and the values its page is filled with."""
    values: dict[str, str] = {}

    async def serve(request: web.Request) -> web.Response:
        return web.Response(text=template.format(**values), content_type="text/html")

    app = web.Application()
    app.router.add_get("/", serve)
    server = await aiohttp_server(app)
    return str(server.make_url("/")).rstrip("/"), values


async def framed_gateway(
    gateway_factory: Factory, aiohttp_server: Any, tmp_path: Path, page: Page
) -> tuple[str, str, dict[str, str]]:
    """A signed-in browser, a gateway that the dashboard's origin may frame, and the dashboard."""
    dashboard, values = await site(aiohttp_server, DASHBOARD_PAGE)
    policy = write_policy(tmp_path, "user:alice@example.com, alice, admin", "user:alice@example.com, team-a, edit")
    client = await gateway_factory(
        user=None, backend="local", local_dir=tmp_path, policy_file=policy, dashboard_origin=dashboard
    )
    gateway = str(client.make_url("/")).rstrip("/")
    values |= {"gateway": gateway, "app": f"{gateway}/notebooks?ns=alice"}
    await page.goto(f"{gateway}/notebooks")
    await sign_in(page, "alice@example.com")
    return gateway, dashboard, values


async def test_the_dashboard_frames_the_pages_and_switches_their_namespace(
    page: Page, gateway_factory: Factory, aiohttp_server: Any, tmp_path: Path
) -> None:
    _, dashboard, _ = await framed_gateway(gateway_factory, aiohttp_server, tmp_path, page)
    await page.goto(f"{dashboard}/?select=team-a")
    app = page.frame_locator("#app")
    await expect(app.get_by_role("heading", name="Servers in team-a")).to_be_visible()
    await expect(app.get_by_label("Namespace")).to_have_value("team-a")
    # Connected once in alice, once more after the switch; the second message asked for what it shows.
    await expect(page.locator("#connected")).to_have_text("2")


async def test_a_namespace_message_from_another_origin_is_ignored(
    page: Page, gateway_factory: Factory, aiohttp_server: Any, tmp_path: Path
) -> None:
    _, dashboard, _ = await framed_gateway(gateway_factory, aiohttp_server, tmp_path, page)
    elsewhere, _ = await site(aiohttp_server, "<!doctype html><title>Elsewhere</title>")
    await page.goto(elsewhere)
    async with page.context.expect_page() as opened:  # a page elsewhere opens the dashboard, silent, in a popup
        await page.evaluate("url => { window.popup = window.open(url); }", f"{dashboard}/?select=")
    popup = await opened.value
    await expect(popup.locator("#connected")).to_have_text("1")
    frame = popup.frames[1]
    # Our own listener in the framed page, added after the page's: when it hears the message, the page's
    # handler has already run, so a switch it made would show in the selector at once.
    await frame.evaluate(
        "() => { window.heard = new Promise(resolve => addEventListener('message', e => resolve([e.origin, "
        "document.querySelector('select[name=ns]').value]), {once: true})); }"
    )
    await page.evaluate("() => window.popup.frames[0].postMessage({type: 'namespace-selected', value: 'team-a'}, '*')")
    assert await frame.evaluate("() => window.heard") == [elsewhere, "alice"]
    await expect(frame.get_by_role("heading", name="Servers in alice")).to_be_visible()


async def test_no_other_origin_may_frame_the_pages(
    page: Page, gateway_factory: Factory, aiohttp_server: Any, tmp_path: Path
) -> None:
    gateway, dashboard, _ = await framed_gateway(gateway_factory, aiohttp_server, tmp_path, page)
    elsewhere, values = await site(aiohttp_server, OTHER_PAGE)
    values["app"] = f"{gateway}/notebooks"
    refusals: list[str] = []

    def heard(message: ConsoleMessage) -> None:
        if "frame-ancestors" in message.text:
            refusals.append(message.text)

    page.on("console", heard)
    async with page.expect_console_message(lambda message: "frame-ancestors" in message.text):
        await page.goto(elsewhere)
    assert "blocked" in refusals[0] and f"frame-ancestors {dashboard}" in refusals[0]
    await expect(page.frame_locator("#app").get_by_role("heading", name="Servers in alice")).to_have_count(0)
