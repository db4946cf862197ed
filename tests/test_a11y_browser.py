"""Every page in Chromium, in the light and the dark theme, checked with axe-core (WCAG 2.1 A and
AA rules; a serious or critical violation fails), and usable at 200% zoom: no sideways scrolling,
the sign-out button reachable. Screenshots of the dark theme go to docs/images."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect

from .browser import DevGateway, browser_page, dev_gateway_running, screenshot, sign_in
from .fakes.npm import npm_ci

PAGES = ["/notebooks", "/notebooks/new", "/access", "/configurations", "/policies", "/audit", "/no-such-page"]
SCHEMES = ["light", "dark"]


@pytest.fixture(scope="module")
def axe_script() -> Path:
    return npm_ci("a11y", "axe-core") / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    """A page whose context lets the test inject axe-core: the gateway's Content-Security-Policy
    rightly refuses scripts it did not serve."""
    async with browser_page() as opened:
        assert opened.context.browser is not None
        context = await opened.context.browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
        context.set_default_timeout(20_000)
        checked = await context.new_page()
        errors: list[str] = []
        checked.on("pageerror", lambda error: errors.append(str(error)))
        yield checked
        await context.close()
        assert not errors, f"scripts failed on the page: {errors}"


@pytest.fixture
def dev_gateway(tmp_path: Path) -> Iterator[DevGateway]:
    with dev_gateway_running(tmp_path) as gateway:
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
            await page.goto(dev_gateway.url(path))
            await settled(page)
            problems[f"{scheme} {path}"] = await axe_violations(page, axe_script)
    found = {where: violations for where, violations in problems.items() if violations}
    assert not found, json.dumps(found, indent=1)


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


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_every_page_is_usable_at_200_percent_zoom(page: Page, dev_gateway: DevGateway, scheme: str) -> None:
    # A 1280-pixel window at 200% zoom lays pages out in 640 CSS pixels, at twice the size.
    await page.set_viewport_size({"width": 640, "height": 400})
    await page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
    await page.goto(dev_gateway.url("/notebooks"))
    await sign_in(page, "alice@example.com")
    await settled(page)
    overflow = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    for path in PAGES:
        await page.goto(dev_gateway.url(path))
        await settled(page)
        assert await page.evaluate(overflow) == 0, f"{path} scrolls sideways at 200% zoom"
        sign_out = page.get_by_role("button", name="SIGN OUT")
        if path != "/no-such-page":
            await sign_out.focus()  # reachable from the keyboard, and scrolled to when focused
            await expect(sign_out).to_be_in_viewport()
