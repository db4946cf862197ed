"""The Audit page in Chromium: details as labelled fields, times in the reader's zone with UTC on
hover, the activity chart with denials at a glance, and the streamed exports."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from .browser import DevGateway, browser_page, dev_gateway_running, screenshot, sign_in

ALICE_NS = "kubeflow-alice-example-com"


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    async with browser_page() as opened:
        yield opened


@pytest.fixture
def dev_gateway(tmp_path: Path) -> Iterator[DevGateway]:
    with dev_gateway_running(tmp_path) as gateway:
        yield gateway


async def bob_is_refused(page: Page, dev_gateway: DevGateway, times: int) -> None:
    """Bob, in a browser of his own, asks for alice's servers `times` times: 403 each."""
    assert page.context.browser is not None
    context = await page.context.browser.new_context()
    bob = await context.new_page()
    await bob.goto(dev_gateway.url("/notebooks"))
    await sign_in(bob, "bob@example.com")
    await expect(bob.get_by_role("heading", level=1)).to_be_visible()
    for _ in range(times):
        answer = await bob.request.get(dev_gateway.url(f"/api/namespaces/{ALICE_NS}/notebooks"))
        assert answer.status == 403
    await context.close()


async def test_an_auditor_sees_labelled_details_local_times_and_the_denials_at_a_glance(
    page: Page, dev_gateway: DevGateway, tmp_path: Path
) -> None:
    await page.goto(dev_gateway.url("/notebooks"))
    await sign_in(page, "alice@example.com")  # cluster-admin in dev: may read the audit log
    await expect(page.get_by_role("heading", level=1)).to_be_visible()
    await bob_is_refused(page, dev_gateway, 4)
    await page.emulate_media(color_scheme="light")
    await page.goto(dev_gateway.url("/audit?since=2h"))

    refused = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name="access.denied")).first
    await expect(refused).to_contain_text("bob@example.com")
    # Details are labelled fields, not JSON.
    details = refused.locator("dl.details")
    await expect(details.locator("dt", has_text="Path")).to_be_visible()
    await expect(details.locator("dd", has_text=f"/api/namespaces/{ALICE_NS}/notebooks")).to_be_visible()
    await expect(refused).not_to_contain_text('{"')
    # The time is the reader's, with the exact UTC instant kept and shown on hover.
    moment = refused.locator("time")
    iso = await moment.get_attribute("datetime")
    assert iso is not None and iso.endswith("Z")
    assert (await moment.get_attribute("title") or "").endswith(" UTC")
    local = await page.evaluate(
        """iso => new Date(iso).toLocaleString(undefined, {year: "numeric", month: "2-digit", day: "2-digit",
           hour: "2-digit", minute: "2-digit", second: "2-digit"})""",
        iso,
    )
    await expect(moment).to_have_text(local)

    # The chart: one column per hour, this hour's denials drawn below the axis, in red.
    chart = page.get_by_role("img", name="Events per hour")
    await expect(chart).to_be_visible()
    denied = chart.locator("rect.denied")
    await expect(denied).to_have_count(1)
    colour = await denied.evaluate("node => getComputedStyle(node).fill")
    assert colour == "rgb(179, 38, 30)"  # --bad
    height = float(await denied.get_attribute("height") or 0)
    assert height >= 3
    await expect(page.locator("#activity-summary")).to_contain_text("4 denied")
    hour = chart.locator("g.hour[data-denied='4'] > title")
    await expect(hour).to_contain_text("access.denied: 4 denied")
    await screenshot(page, "audit-activity", tmp_path, full_page=True)

    # The exports stream every matching event; the ECS one is ready for a SIEM.
    for name, suffix in (("EXPORT JSON LINES", "audit.jsonl"), ("EXPORT ECS", "audit-ecs.jsonl")):
        link = page.get_by_role("link", name=name)
        assert (await link.get_attribute("href") or "").startswith("/api/audit/export?")
        async with page.expect_download() as download:
            await link.click()
        assert (await download.value).suggested_filename == suffix
        lines = [json.loads(line) for line in (await (await download.value).path()).read_text().splitlines()]
        if name == "EXPORT ECS":
            refusals = [doc for doc in lines if doc["event"]["action"] == "access.denied"]
            assert len(refusals) == 4 and all(doc["event"]["outcome"] == "failure" for doc in refusals)
        else:
            assert sum(1 for event in lines if event["action"] == "access.denied") == 4


async def test_a_filter_narrows_the_chart_too(page: Page, dev_gateway: DevGateway) -> None:
    await page.goto(dev_gateway.url("/notebooks"))
    await sign_in(page, "alice@example.com")
    await expect(page.get_by_role("heading", level=1)).to_be_visible()
    await bob_is_refused(page, dev_gateway, 2)
    await page.goto(dev_gateway.url("/audit?outcome=allowed"))
    chart = page.get_by_role("img", name="Events per hour")
    await expect(chart.locator("rect.allowed").first).to_be_visible()
    await expect(chart.locator("rect.denied")).to_have_count(0)
    await expect(page.locator("#activity-summary")).to_contain_text("0 denied")


async def test_nested_details_are_labelled_fields_shown_as_text(page: Page, dev_gateway: DevGateway) -> None:
    """An `audit.read` event keeps the filters of the read, an object inside `details`; the reader chose
    them, so a hostile one must come out as text, in a field labelled by its key, not as JSON or markup."""
    hostile = '<img src=x onerror=alert(1)>"}, {"'
    scripts_run: list[str] = []
    page.on("dialog", lambda dialog: scripts_run.append(dialog.message))
    await page.goto(dev_gateway.url("/notebooks"))
    await sign_in(page, "alice@example.com")  # cluster-admin in dev: may read the audit log
    await expect(page.get_by_role("heading", level=1)).to_be_visible()
    answer = await page.request.get(dev_gateway.url("/api/audit"), params={"text": hostile, "since": "2h"})
    assert answer.status == 200
    await page.goto(dev_gateway.url("/audit?action=audit.read"))
    await page.get_by_label("Hide my own audit reads").uncheck()  # the read is alice's own

    read = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name="audit.read")).filter(has_text=hostile)
    await expect(read).to_have_count(1)
    outer = read.locator("td.about > dl.details")
    filters = outer.locator(":scope > dd").filter(has=page.locator("dl.details"))
    await expect(filters).to_have_count(1)
    # The field's label is its key, and the object's own fields are labelled in turn, in a nested list.
    await expect(outer.locator(":scope > dt").nth(0)).to_have_text("Filters")
    inner = filters.locator(":scope > dl.details")
    await expect(inner.locator(":scope > dt")).to_have_text(["Since", "Text"])
    await expect(inner.locator(":scope > dd").nth(1)).to_have_text(hostile)  # the value, whole, as text
    await expect(read).not_to_contain_text('{"text"')  # not compact JSON any more
    await expect(page.locator("#events img")).to_have_count(0)
    assert scripts_run == []
