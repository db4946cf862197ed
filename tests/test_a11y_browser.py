"""Every page a signed-in user or admin reaches, in Chromium, in the light and the dark theme, checked
with axe-core (WCAG 2.1 A and AA rules; a serious or critical violation fails), and usable at 200% zoom:
no sideways scrolling, no content cut off, the sign-out button reachable. The gateway runs on the
Kubernetes backend (the fake API server) so that the pages show what they show in a cluster: a notebook
server with its detail page's tabs, a configuration, profiles. Screenshots of the dark theme go to
docs/images."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect

from gateway.backends.poddefaults import poddefault_object
from tests.fakes.kube_api import FakeKubeAPI
from tests.fakes.kube_controller import KubeController

from .browser import DevGateway, browser_page, dev_gateway_running, screenshot, sign_in
from .fakes.npm import npm_ci

NAMESPACE = "alice"
# Every page: the index (which lands on the list), the list, the NEW SERVER form, a server's detail page
# on each of its tabs, the admin pages and the error page (and, signed out, /welcome).
PAGES = [
    "/",
    f"/notebooks?ns={NAMESPACE}",
    f"/notebooks/new?ns={NAMESPACE}",
    f"/notebooks/{NAMESPACE}/nb1#overview",
    f"/notebooks/{NAMESPACE}/nb1#events",
    f"/notebooks/{NAMESPACE}/nb1#logs",
    f"/notebooks/{NAMESPACE}/nb1#yaml",
    f"/access?ns={NAMESPACE}",
    f"/configurations?ns={NAMESPACE}",
    "/profiles",
    "/policies",
    "/audit",
    "/no-such-page",
]
SCHEMES = ["light", "dark"]
NewPage = Callable[..., Awaitable[Page]]


@pytest.fixture(scope="module")
def axe_script() -> Path:
    return npm_ci("a11y", "axe-core") / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture
async def new_page() -> AsyncIterator[NewPage]:
    """Pages whose context lets the test inject axe-core (the gateway's Content-Security-Policy rightly
    refuses scripts it did not serve), at a window size and pixel density of the test's choosing."""
    async with browser_page() as opened:
        browser = opened.context.browser
        assert browser is not None
        errors: list[str] = []
        contexts = []

        async def make(width: int = 1280, height: int = 800, scale: float = 1) -> Page:
            context = await browser.new_context(
                viewport={"width": width, "height": height}, device_scale_factor=scale, bypass_csp=True
            )
            contexts.append(context)
            context.set_default_timeout(20_000)
            made = await context.new_page()
            made.on("pageerror", lambda error: errors.append(str(error)))
            return made

        yield make
        for context in contexts:
            await context.close()
        assert not errors, f"scripts failed on the page: {errors}"


@pytest.fixture
async def page(new_page: NewPage) -> Page:
    return await new_page()


@pytest.fixture
def dev_gateway(kube_api: FakeKubeAPI, tmp_path: Path) -> Iterator[DevGateway]:
    """A dev gateway on the Kubernetes backend, provisioning profiles, with one running notebook server
    (a warning event, a pod with a log) and one configuration in the namespace `alice`."""
    container = {"name": "nb1", "image": "ghcr.io/kubeflow/kubeflow/notebook-servers/jupyter-scipy:v1.10.0"}
    body = {"metadata": {"name": "nb1"}, "spec": {"template": {"spec": {"containers": [container]}}}}
    kube_api.create("notebooks", body, NAMESPACE)
    controller = KubeController(kube_api)
    controller.mark_ready(NAMESPACE, "nb1")
    controller.warn(NAMESPACE, "nb1", "BackOff", "Back-off pulling image")
    kube_api.create("pods", {"metadata": {"name": "nb1-0"}, "spec": {"containers": [container]}}, NAMESPACE)
    kube_api.set_log(NAMESPACE, "nb1-0", "nb1", "Jupyter Server is running at http://nb1:8888/\n")
    store = {"name": "object-store", "desc": "Team object store", "envFromSecrets": ["store-keys"]}
    kube_api.create("poddefaults", poddefault_object(NAMESPACE, store), NAMESPACE)
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")
    with dev_gateway_running(tmp_path, backend="kubernetes", kubeconfig=str(kubeconfig), profiles="gateway") as gateway:
        yield gateway


async def axe_violations(page: Page, axe_script: Path) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations of the WCAG 2.1 A/AA rules on the page as it is."""
    await page.add_script_tag(path=str(axe_script))
    result = await page.evaluate(
        """async () => {
             const tags = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];
             const found = await axe.run(document, {runOnly: {type: "tag", values: tags}});
             return found.violations.filter(v => v.impact === "serious" || v.impact === "critical")
               .map(v => ({id: v.id, help: v.help, nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))}));
           }"""
    )
    assert isinstance(result, list)
    return result


async def settled(page: Page) -> None:
    """The page's scripts have drawn what they fetch (lists, the audit chart)."""
    await page.wait_for_load_state("networkidle")
    await expect(page.get_by_role("heading", level=1)).to_be_visible()


async def test_every_page_passes_axe_in_both_themes(page: Page, dev_gateway: DevGateway, axe_script: Path) -> None:
    await page.goto(dev_gateway.url("/welcome"))
    problems: dict[str, Any] = {}
    for scheme in SCHEMES:
        await page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
        problems[f"{scheme} /welcome"] = await axe_violations(page, axe_script)
    await page.goto(dev_gateway.url("/notebooks"))
    await sign_in(page, "alice@example.com")  # cluster-admin in dev: every page is hers to see
    await settled(page)
    for path in PAGES:
        for scheme in SCHEMES:
            await page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
            await visit(page, dev_gateway, path)
            problems[f"{scheme} {path}"] = await axe_violations(page, axe_script)
    found = {where: violations for where, violations in problems.items() if violations}
    assert not found, json.dumps(found, indent=1)


async def visit(page: Page, dev_gateway: DevGateway, path: str) -> None:
    """Open `path` afresh (a tab named by the address is drawn by the page's script) and wait for it."""
    await page.goto("about:blank")
    await page.goto(dev_gateway.url(path))
    await settled(page)
    if path == "/":
        await expect(page).to_have_url(dev_gateway.url("/notebooks"))
    if "#" in path:
        await expect(page.get_by_role("tab", name=path.rpartition("#")[2].upper())).to_have_attribute(
            "aria-selected", "true"
        )
    if path.startswith("/notebooks?"):
        await expect(page.get_by_role("rowheader", name="nb1")).to_be_visible()
    if path.startswith("/configurations"):
        await expect(page.get_by_text("Team object store")).to_be_visible()


async def test_the_dark_theme_follows_the_system_setting(page: Page, dev_gateway: DevGateway, tmp_path: Path) -> None:
    await page.goto(dev_gateway.url("/notebooks/new"))
    await sign_in(page, "alice@example.com")
    await settled(page)
    background = "getComputedStyle(document.body).backgroundColor"
    await page.emulate_media(color_scheme="light")
    assert await page.evaluate(background) == "rgb(246, 247, 249)"
    await page.emulate_media(color_scheme="dark")
    assert await page.evaluate(background) == "rgb(18, 22, 31)"  # no reload: it follows the setting live
    field = "getComputedStyle(document.querySelector('input')).backgroundColor"
    assert await page.evaluate(field) == "rgb(15, 19, 27)"  # form fields too, not white boxes
    await screenshot(page, "dark-new-server", tmp_path, full_page=True)
    await page.goto(dev_gateway.url("/audit"))
    await settled(page)
    await expect(page.get_by_role("img", name="Events per hour")).to_be_visible()
    await screenshot(page, "dark-audit", tmp_path)


# What is cut off or pushed sideways at this width: every visible element that crosses the window's left or
# right edge, or whose own content is wider than it while it hides the rest (overflow hidden or clip). Inside
# a box that scrolls sideways on its own (a log, the YAML, a wide table) that is allowed: WCAG 1.4.10 exempts
# content that needs two dimensions, and nothing is lost. Entirely off-screen elements (the skip link until
# it is focused) and the 1-pixel text for screen readers (.visually-hidden) are not content cut off.
CUT_OFF = """() => {
  const width = document.documentElement.clientWidth;
  const name = el => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
    (el.className && typeof el.className === "string" ? "." + el.className.trim().split(/\\s+/).join(".") : "");
  const scrollsAlone = el => {
    for (let up = el.parentElement; up; up = up.parentElement) {
      if (["auto", "scroll"].includes(getComputedStyle(up).overflowX)) return true;
    }
    return false;
  };
  const found = [];
  for (const el of document.body.querySelectorAll("*")) {
    if (!el.checkVisibility({visibilityProperty: true})) continue;
    const box = el.getBoundingClientRect();
    if (box.width <= 1 || box.height <= 1 || box.right <= 0 || scrollsAlone(el)) continue;  // 1px: .visually-hidden
    if (box.right > width + 1 || box.left < -1) found.push(`${name(el)} spans ${box.left}..${box.right}`);
    const overflow = getComputedStyle(el).overflowX;
    if (["hidden", "clip"].includes(overflow) && el.scrollWidth > el.clientWidth + 1) {
      found.push(`${name(el)} hides ${el.scrollWidth - el.clientWidth}px of its content`);
    }
  }
  return found;
}"""


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_every_page_is_usable_at_200_percent_zoom(
    new_page: NewPage, dev_gateway: DevGateway, scheme: str
) -> None:
    # A 1280-pixel window at 200% zoom: pages laid out in 640 CSS pixels, drawn with two device pixels to each.
    page = await new_page(640, 400, scale=2)
    assert await page.evaluate("devicePixelRatio") == 2
    await page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
    overflow = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    problems: dict[str, Any] = {}
    await visit(page, dev_gateway, "/welcome")
    problems["/welcome"] = await page.evaluate(CUT_OFF)
    await page.goto(dev_gateway.url("/notebooks"))
    await sign_in(page, "alice@example.com")
    await settled(page)
    for path in PAGES:
        await visit(page, dev_gateway, path)
        assert await page.evaluate(overflow) == 0, f"{path} scrolls sideways at 200% zoom"
        problems[path] = await page.evaluate(CUT_OFF)
        sign_out = page.get_by_role("button", name="SIGN OUT")
        if path != "/no-such-page":
            await sign_out.focus()  # reachable from the keyboard, and scrolled to when focused
            await expect(sign_out).to_be_in_viewport()
    found = {path: cut for path, cut in problems.items() if cut}
    assert not found, json.dumps(found, indent=1)
    # The check itself: a heading too wide for the window, and a box hiding what does not fit, are caught.
    await page.add_style_tag(content="h1 { width: 900px } .account { overflow: hidden; width: 20px }")
    caught = " ".join(await page.evaluate(CUT_OFF))
    assert "h1 spans" in caught and "div.account hides" in caught
