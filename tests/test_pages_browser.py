"""The pages in a real browser (Debian's chromium, driven by Playwright) against a real gateway,
real Jupyter servers (the local backend) and the development sign-in provider."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect

from gateway.cookies import SESSION_COOKIE
from tests.fakes.kube_api import FakeKubeAPI
from tests.fakes.kube_controller import KubeController

from .browser import (
    JUPYTER_START_S,
    DevGateway,
    browser_page,
    dev_gateway_running,
    expect_path,
    form_ready,
    run_in_jupyterlab,
    screenshot,
    server_row,
    sign_in,
    write_policy,
)

WAIT_MS = JUPYTER_START_S * 1000
# The namespace a dev gateway gives alice@example.com at her first sign-in (named as Kubeflow names profiles).
ALICE_NS = "kubeflow-alice-example-com"


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    async with browser_page() as opened:
        yield opened


@pytest.fixture
def dev_gateway(tmp_path: Path) -> Iterator[DevGateway]:
    """`notebook-gateway dev` in a child process, as a person runs it."""
    with dev_gateway_running(tmp_path) as gateway:
        yield gateway


async def test_the_users_guide_end_to_end(page: Page, dev_gateway: DevGateway, tmp_path: Path) -> None:
    await page.goto(dev_gateway.url("/"))
    await screenshot(page, "sign-in", tmp_path)
    await sign_in(page, "alice@example.com")
    await page.get_by_role("button", name="NEW SERVER").click()
    await form_ready(page)
    await page.get_by_label("Name").fill("analysis")
    await screenshot(page, "new-server", tmp_path, full_page=True)
    await page.get_by_role("button", name="LAUNCH").click()
    row = server_row(page, "analysis")
    await expect(row.get_by_role("img", name="Starting")).to_be_visible()
    await expect(row.get_by_role("img", name="Running")).to_be_visible(timeout=WAIT_MS)
    await screenshot(page, "notebook-servers", tmp_path)
    async with page.context.expect_page() as opened:
        await row.get_by_role("button", name="CONNECT").click()
    jupyter = await opened.value
    await expect(await run_in_jupyterlab(jupyter, "print(6*7)")).to_have_text("42", timeout=WAIT_MS)
    await screenshot(jupyter, "connect", tmp_path)
    await jupyter.close()  # back to the list
    await row.get_by_role("button", name="STOP").click()
    await expect(row.get_by_role("img", name="Stopped")).to_be_visible(timeout=WAIT_MS)
    await row.get_by_role("button", name="START").click()
    await expect(row.get_by_role("img", name="Running")).to_be_visible(timeout=WAIT_MS)
    await row.get_by_role("button", name="DELETE").click()
    await page.get_by_role("dialog").get_by_role("button", name="DELETE").click()
    await expect(row).to_have_count(0, timeout=WAIT_MS)
    await expect(page.get_by_text(f"No notebook servers in {ALICE_NS} yet.")).to_be_visible()


async def test_a_bad_name_is_shown_beside_the_field_and_creates_nothing(page: Page, dev_gateway: DevGateway) -> None:
    await page.goto(dev_gateway.url("/notebooks/new"))
    await sign_in(page, "alice@example.com")
    await form_ready(page)
    name = page.get_by_label("Name", exact=True)
    await name.fill("My Server")
    await expect(name).to_have_attribute("aria-invalid", "true")
    await expect(name).to_have_accessible_description(re.compile("No spaces: use '-' between words"))
    await page.get_by_role("button", name="LAUNCH").click()
    await expect_path(page, "/notebooks/new")
    await expect(page.locator("#name-error")).to_have_text("No spaces: use '-' between words.")
    listed = await page.request.get(dev_gateway.url(f"/api/namespaces/{ALICE_NS}/notebooks"))
    assert (await listed.json())["notebooks"] == []


async def test_an_error_from_the_api_is_shown_beside_its_field(page: Page, dev_gateway: DevGateway) -> None:
    await page.goto(dev_gateway.url("/notebooks/new"))
    await sign_in(page, "alice@example.com")
    await form_ready(page)
    await page.get_by_label("Name", exact=True).fill("good-name")
    memory = page.get_by_label("Memory", exact=True)
    await memory.fill("lots")
    await page.get_by_role("button", name="LAUNCH").click()
    await expect(memory).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#memory-error")).to_contain_text("Memory")
    await expect(page.get_by_role("alert").first).to_contain_text("correct the highlighted field")
    assert '"error"' not in await page.locator("main").inner_text()  # never raw JSON
    listed = await page.request.get(dev_gateway.url(f"/api/namespaces/{ALICE_NS}/notebooks"))
    assert (await listed.json())["notebooks"] == []


async def test_a_namespace_without_access_is_not_offered(
    page: Page, gateway_factory: Callable[..., Any], tmp_path: Path
) -> None:
    policy = write_policy(tmp_path, "user:alice@example.com, team-a, edit", "user:bob@example.com, bob, admin")
    client = await gateway_factory(user=None, backend="local", local_dir=tmp_path, policy_file=policy)
    await page.goto(str(client.make_url("/")))
    await sign_in(page, "bob@example.com")
    await expect(page.get_by_label("Namespace").locator("option")).to_have_text(["bob (admin)"])
    await page.goto(str(client.make_url("/notebooks?ns=team-a")))
    await expect(page.get_by_role("alert")).to_contain_text("You have no access to the namespace 'team-a'")


async def test_the_namespace_chosen_last_is_remembered(
    page: Page, gateway_factory: Callable[..., Any], tmp_path: Path
) -> None:
    policy = write_policy(tmp_path, "user:alice@example.com, alice, admin", "user:alice@example.com, team-a, edit")
    client = await gateway_factory(user=None, backend="local", local_dir=tmp_path, policy_file=policy)
    await page.goto(str(client.make_url("/")))
    await sign_in(page, "alice@example.com")
    selector = page.get_by_label("Namespace")
    await expect(selector.locator("option")).to_have_text(["alice (admin)", "team-a (edit)"])
    await selector.select_option("team-a")
    await expect(page.get_by_role("heading", name="Servers in team-a")).to_be_visible()
    await page.goto(str(client.make_url("/")))
    await expect(selector).to_have_value("team-a")


async def test_an_ended_session_signs_in_again_and_returns_to_the_list(page: Page, dev_gateway: DevGateway) -> None:
    await page.goto(dev_gateway.url("/notebooks"))
    await sign_in(page, "alice@example.com")
    await expect(page.get_by_role("heading", name=f"Servers in {ALICE_NS}")).to_be_visible()
    await page.context.clear_cookies(name=SESSION_COOKIE)  # as if the session had expired
    await expect(page.get_by_label("Username")).to_be_visible(timeout=10_000)  # the next poll got a 401
    await sign_in(page, "alice@example.com")
    await expect_path(page, "/notebooks")
    await expect(page.get_by_role("heading", name=f"Servers in {ALICE_NS}")).to_be_visible()


async def test_the_pages_own_polling_is_marked_as_background_and_a_reload_is_not(
    page: Page, dev_gateway: DevGateway
) -> None:
    """The wiring of idle timeouts: the list's polling says it is nobody's doing (tests/test_session_idle.py shows
    what the gateway makes of that, on a clock it moves), a person's reload does not."""
    await page.goto(dev_gateway.url("/notebooks"))
    await sign_in(page, "alice@example.com")
    await expect(page.get_by_role("heading", name=f"Servers in {ALICE_NS}")).to_be_visible()
    async with page.expect_request(lambda r: f"/api/namespaces/{ALICE_NS}/notebooks" in r.url) as polled:
        pass  # the list polls every 2 s on its own
    assert (await polled.value).headers.get("x-gateway-background") == "1"
    async with page.expect_request(lambda r: r.url.endswith("/notebooks") and r.is_navigation_request()) as reload:
        await page.reload()
    assert "x-gateway-background" not in (await reload.value).headers


async def test_the_form_survives_signing_in_again(page: Page, dev_gateway: DevGateway) -> None:
    await page.goto(dev_gateway.url("/notebooks/new"))
    await sign_in(page, "alice@example.com")
    await form_ready(page)
    await page.get_by_label("Name", exact=True).fill("kept")
    await page.get_by_label("CPU", exact=True).fill("0.25")
    await page.context.clear_cookies(name=SESSION_COOKIE)
    await page.get_by_role("button", name="LAUNCH").click()  # 401: off to sign in, the form saved
    await sign_in(page, "alice@example.com")
    await expect(page.get_by_label("Name", exact=True)).to_have_value("kept")
    await expect(page.get_by_label("CPU", exact=True)).to_have_value("0.25")
    await page.get_by_role("button", name="LAUNCH").click()
    await expect(server_row(page, "kept")).to_be_visible()


async def test_sign_out_ends_the_session(page: Page, dev_gateway: DevGateway) -> None:
    await page.goto(dev_gateway.url("/"))
    await sign_in(page, "alice@example.com")
    await expect(page.get_by_text("alice@example.com")).to_be_visible()
    await page.get_by_role("button", name="SIGN OUT").click()
    await expect(page.get_by_label("Username")).to_be_visible()  # the provider's form: signed out
    response = await page.request.get(dev_gateway.url(f"/api/namespaces/{ALICE_NS}/notebooks"))
    assert response.status == 401


async def test_a_namespace_admin_grants_and_revokes_access(page: Page, dev_gateway: DevGateway, tmp_path: Path) -> None:
    await page.goto(dev_gateway.url("/"))
    await sign_in(page, "alice@example.com")
    await page.get_by_role("link", name="Access").click()
    await expect(page.get_by_role("heading", name=f"Access to {ALICE_NS}")).to_be_visible()
    await page.get_by_label("User or group").fill("bob@example.com")
    await page.get_by_label("Role", exact=True).select_option("view")
    await page.get_by_role("button", name="GRANT").click()
    bob = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name="user:bob@example.com"))
    await expect(bob).to_contain_text("view")
    await screenshot(page, "access", tmp_path)
    await bob.get_by_role("button", name="REVOKE").click()
    await expect(bob).to_have_count(0)
    await page.get_by_label("User or group").fill("bob has spaces, and a comma")
    await page.get_by_role("button", name="GRANT").click()
    await expect(page.locator("#grant-who-error")).to_contain_text("subject must be")


async def test_a_cluster_admin_grants_and_checks_who_can_and_why(
    page: Page, dev_gateway: DevGateway, tmp_path: Path
) -> None:
    await page.goto(dev_gateway.url("/"))
    await sign_in(page, "alice@example.com")  # the first to sign in to a dev gateway: cluster-admin
    await page.get_by_role("link", name="Policies").click()
    grant = page.get_by_role("region", name="Grant a role")
    await grant.get_by_label("Subject").fill("group:ml-team")
    await grant.get_by_label("Namespace").fill("team-a")
    await grant.get_by_role("button", name="GRANT").click()
    await expect(page.get_by_role("rowheader", name="group:ml-team")).to_be_visible()
    check = page.get_by_role("region", name="Who can, and why")
    await check.get_by_label("User").fill("bob@example.com")
    await check.get_by_label("Groups").fill("ml-team")
    await check.get_by_label("Namespace").fill("team-a")
    await check.get_by_label("Action").select_option("connect")
    await check.get_by_role("button", name="CHECK").click()
    await expect(check.get_by_role("status")).to_contain_text("Allowed: bob@example.com may connect in team-a.")
    await expect(check.get_by_role("listitem")).to_contain_text(["allow group:ml-team edit in team-a"])
    await screenshot(page, "policies", tmp_path, full_page=True)
    await check.get_by_label("Groups").fill("")
    await check.get_by_role("button", name="CHECK").click()
    await expect(check.get_by_role("status")).to_contain_text("Denied")


async def test_an_auditor_follows_a_servers_history(page: Page, dev_gateway: DevGateway, tmp_path: Path) -> None:
    await page.goto(dev_gateway.url("/notebooks/new"))
    await sign_in(page, "alice@example.com")  # cluster-admin: may read the audit log
    await form_ready(page)
    await page.get_by_label("Name", exact=True).fill("traced")
    await page.get_by_role("button", name="LAUNCH").click()
    await server_row(page, "traced").get_by_role("link", name="History").click()
    await expect(page.get_by_label("Notebook")).to_have_value("traced")
    created = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name="notebook.create"))
    await expect(created).to_contain_text("alice@example.com")
    await expect(page.locator("#history")).to_contain_text("Created by alice@example.com")
    await screenshot(page, "audit", tmp_path)
    await created.get_by_role("link", name="alice@example.com").click()  # everything alice did
    await expect(page.get_by_label("User")).to_have_value("alice@example.com")
    await expect(page.get_by_role("rowheader", name="auth.login")).to_be_visible()
    async with page.expect_download() as download:
        await page.get_by_role("link", name="EXPORT CSV").click()
    assert "notebook.create" in (await (await download.value).path()).read_text()


async def test_the_audit_live_tail_shows_new_events(page: Page, dev_gateway: DevGateway) -> None:
    await page.goto(dev_gateway.url("/audit?action=notebook.*"))
    await sign_in(page, "alice@example.com")
    await expect(page.get_by_text("No event matches.")).to_be_visible()
    await page.get_by_label("Live tail").check()
    origin = {"Origin": dev_gateway.url("").rstrip("/")}
    refused = await page.request.post(
        dev_gateway.url(f"/api/namespaces/{ALICE_NS}/notebooks"), data={"name": "Not A Name"}, headers=origin
    )
    assert refused.status == 400
    failed = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name="notebook.create"))
    await expect(failed).to_contain_text("failed")  # arrived without reloading the page
    await expect(failed).to_contain_text("is not a DNS-1123 label")


async def test_the_pages_work_from_the_keyboard(page: Page, dev_gateway: DevGateway) -> None:
    await page.goto(dev_gateway.url("/notebooks/new"))
    await sign_in(page, "alice@example.com")
    await form_ready(page)
    await expect(page.get_by_label("Name", exact=True)).to_be_focused()
    await page.keyboard.type("by-keyboard")
    await page.keyboard.press("Enter")  # submits the form: LAUNCH
    delete = server_row(page, "by-keyboard").get_by_role("button", name="DELETE")
    await delete.focus()
    async with page.expect_response(lambda response: f"/api/namespaces/{ALICE_NS}/notebooks" in response.url):
        pass  # the next poll refreshes the list...
    await expect(delete).to_be_focused()  # ...in place: the focus stays where it was
    await page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    await expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(delete).to_be_focused()
    await expect(server_row(page, "by-keyboard")).to_have_count(1)  # Escape deleted nothing


async def test_a_narrow_window_needs_no_sideways_scrolling(page: Page, dev_gateway: DevGateway) -> None:
    await page.set_viewport_size({"width": 360, "height": 740})  # a phone, or a window at a screen's edge
    await page.goto(dev_gateway.url("/notebooks/new"))
    await sign_in(page, "alice@example.com")
    await form_ready(page)
    overflow = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    assert await page.evaluate(overflow) == 0
    await page.get_by_label("Name", exact=True).fill("narrow")
    await page.get_by_role("button", name="LAUNCH").click()
    await expect(server_row(page, "narrow").get_by_role("button", name="DELETE")).to_be_visible()
    assert await page.evaluate(overflow) == 0
    await expect(page.get_by_role("button", name="SIGN OUT")).to_be_in_viewport()


async def test_a_namespace_admin_adds_a_configuration_and_a_new_server_uses_it(
    page: Page, kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")
    with dev_gateway_running(tmp_path, backend="kubernetes", kubeconfig=str(kubeconfig), profiles="gateway") as gateway:
        await page.goto(gateway.url("/"))
        await sign_in(page, "alice@example.com")
        await page.get_by_role("link", name="Configurations").click()
        await page.get_by_label("Name").fill("object-store")
        await page.get_by_label("Description").fill("Team object store")
        await page.get_by_label("Mount Secrets").fill("store-creds:/etc/store")
        await page.get_by_role("button", name="CREATE").click()
        await expect(page.get_by_role("cell", name="Secret store-creds at /etc/store")).to_be_visible()
        await page.goto(gateway.url(f"/notebooks/new?ns={ALICE_NS}"))
        await form_ready(page)
        await page.get_by_label("Name", exact=True).fill("nb1")
        await page.get_by_label("Team object store").check()
        await page.get_by_role("button", name="LAUNCH").click()
        await expect_path(page, "/notebooks")
    notebook = kube_api.get("notebooks", ALICE_NS, "nb1")
    assert notebook is not None and notebook["metadata"]["labels"]["object-store"] == "true"
    mounts = notebook["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert "/etc/store" in [mount["mountPath"] for mount in mounts]


async def test_deleting_a_server_can_take_the_volumes_made_with_it(
    page: Page, kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")
    with dev_gateway_running(tmp_path, backend="kubernetes", kubeconfig=str(kubeconfig), profiles="gateway") as gateway:
        await page.goto(gateway.url(f"/notebooks/new?ns={ALICE_NS}"))
        await sign_in(page, "alice@example.com")
        for name in ("kept", "scrapped"):
            await page.goto(gateway.url(f"/notebooks/new?ns={ALICE_NS}"))
            await form_ready(page)
            await page.get_by_label("Name", exact=True).fill(name)
            await page.get_by_role("button", name="LAUNCH").click()
            await expect(server_row(page, name)).to_be_visible()
        claims = {claim["metadata"]["name"] for claim in kube_api.objects("persistentvolumeclaims", ALICE_NS)}
        assert {claim for claim in claims if claim.startswith(("kept", "scrapped"))} == {
            "kept-workspace", "scrapped-workspace"
        }  # fmt: skip
        dialog = page.get_by_role("dialog")
        for name, with_volumes in (("kept", False), ("scrapped", True)):
            await server_row(page, name).get_by_role("button", name="DELETE").click()
            volumes = dialog.get_by_label("Also delete the volumes created with this server", exact=False)
            await expect(volumes).not_to_be_checked()  # never ticked for you
            if with_volumes:
                await volumes.check()
            await dialog.get_by_role("button", name="DELETE").click()
            await expect(server_row(page, name)).to_be_hidden()
        await expect(page.locator("#banner")).to_contain_text("Volumes deleted: scrapped-workspace")
    claims = {claim["metadata"]["name"] for claim in kube_api.objects("persistentvolumeclaims", ALICE_NS)}
    assert "kept-workspace" in claims and "scrapped-workspace" not in claims


async def test_a_cluster_admin_creates_and_deletes_a_profile(page: Page, kube_api: FakeKubeAPI, tmp_path: Path) -> None:
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")
    with dev_gateway_running(tmp_path, backend="kubernetes", kubeconfig=str(kubeconfig), profiles="gateway") as gateway:
        await page.goto(gateway.url("/"))
        await sign_in(page, "alice@example.com")  # the first to sign in to a dev gateway: cluster-admin
        await page.get_by_role("link", name="Profiles").click()
        await page.get_by_label("Name", exact=True).fill("Team A")
        await page.get_by_label("Owner").fill("bob@example.com")
        await page.get_by_role("button", name="CREATE").click()
        await expect(page.locator("#profile-name-error")).to_contain_text("DNS-1123 label")
        await expect(page.get_by_label("Name", exact=True)).to_have_attribute("aria-invalid", "true")
        assert "Team A" not in [ns["metadata"]["name"] for ns in kube_api.objects("namespaces", None)]
        await page.get_by_label("Name", exact=True).fill("team-a")
        await page.get_by_label("CPU").fill("4")
        await page.get_by_label("Memory").fill("8Gi")
        await page.get_by_role("button", name="CREATE").click()
        row = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name="team-a"))
        await expect(row).to_contain_text("bob@example.com")
        await expect(row).to_contain_text("memory 8Gi")
        await screenshot(page, "profiles", tmp_path, full_page=True)
        await row.get_by_role("button", name="DELETE").click()
        dialog = page.get_by_role("dialog")
        await dialog.get_by_label("Type the profile's name to confirm").fill("team-b")
        await dialog.get_by_role("button", name="DELETE").click()
        await expect(dialog.locator("#confirm-name-error")).to_contain_text("Type team-a exactly")
        await dialog.get_by_label("Type the profile's name to confirm").fill("team-a")
        await dialog.get_by_role("button", name="DELETE").click()
        await expect(row).to_have_count(0)
    assert kube_api.get("namespaces", "", "team-a") is None


async def test_a_servers_detail_page_shows_its_tabs(page: Page, kube_api: FakeKubeAPI, tmp_path: Path) -> None:
    hostile = "<img src=x onerror=alert(1)>"
    container = {"name": "nb1", "image": "ghcr.io/kubeflow/kubeflow/notebook-servers/jupyter-scipy:v1.10.0"}
    body = {"metadata": {"name": "nb1"}, "spec": {"template": {"spec": {"containers": [container]}}}}
    kube_api.create("notebooks", body, "alice")
    controller = KubeController(kube_api)
    controller.mark_ready("alice", "nb1")
    controller.warn("alice", "nb1", "BackOff", f"restarting {hostile}")
    kube_api.create("pods", {"metadata": {"name": "nb1-0"}, "spec": {"containers": [container]}}, "alice")
    kube_api.set_log("alice", "nb1-0", "nb1", f"Jupyter Server is running\n{hostile}\n")
    scripts_run: list[str] = []
    page.on("dialog", lambda dialog: scripts_run.append(dialog.message))
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")
    with dev_gateway_running(tmp_path, backend="kubernetes", kubeconfig=str(kubeconfig)) as gateway:
        await page.goto(gateway.url("/notebooks?ns=alice"))
        await sign_in(page, "alice@example.com")  # the first to sign in to a dev gateway: cluster-admin
        await server_row(page, "nb1").get_by_role("link", name="nb1").click()
        await expect(page).to_have_url(re.compile(r"^https?://[^/]+/notebooks/alice/nb1#overview$"))
        tabs = page.get_by_role("tablist", name="Server details")
        await expect(tabs.get_by_role("tab", name="OVERVIEW")).to_have_attribute("aria-selected", "true")
        await expect(page.get_by_role("tabpanel", name="OVERVIEW")).to_contain_text("jupyter-scipy:v1.10.0")
        await expect(page.locator("#logs")).to_be_hidden()
        await tabs.get_by_role("tab", name="EVENTS").click()
        await expect(page.locator("#events")).to_contain_text(f"restarting {hostile}")  # shown as text
        await tabs.get_by_role("tab", name="LOGS").click()
        await expect(page.locator("#overview")).to_be_hidden()
        await expect(page.locator("pre.log")).to_have_text(f"Jupyter Server is running\n{hostile}")
        await screenshot(page, "notebook-detail", tmp_path)
        await page.keyboard.press("ArrowRight")  # the tabs pattern: arrows move between tabs
        await expect(tabs.get_by_role("tab", name="YAML")).to_be_focused()
        await expect(page.locator("pre.yaml")).to_contain_text("name: nb1")
        await page.reload()  # the chosen tab is in the address, so a reload keeps it
        await expect(page.locator("pre.yaml")).to_be_visible()
        await expect(page.locator("#logs")).to_be_hidden()
    assert scripts_run == []  # the hostile log line and event never ran as markup
