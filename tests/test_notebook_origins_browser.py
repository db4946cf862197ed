"""A real JupyterLab on its own origin, in Chromium, through `notebook-gateway dev` as a newcomer runs
it: CONNECT from the Notebook Servers page, a kernel, an upload, a terminal; then sign-out on the
gateway's host ends the notebook origin's credential too."""

from __future__ import annotations

import json
import re
from pathlib import Path

from playwright.async_api import Page, expect

from .browser import JUPYTER_START_S, DevGateway, form_ready, run_in_jupyterlab, server_row, sign_in
from .test_pages_browser import ALICE_NS, dev_gateway, page  # noqa: F401  (fixtures: a browser page, `notebook-gateway dev`)

WAIT_MS = JUPYTER_START_S * 1000


async def test_jupyterlab_on_its_own_origin(page: Page, dev_gateway: DevGateway, tmp_path: Path) -> None:  # noqa: F811
    """CONNECT -> JupyterLab on its own origin (lab--<alice's namespace>.localhost): a kernel prints 42, an upload
    lands, a terminal runs."""
    await page.goto(dev_gateway.url("/"))
    await sign_in(page, "alice@example.com")
    await page.get_by_role("button", name="NEW SERVER").click()
    await form_ready(page)
    await page.get_by_label("Name").fill("lab")
    await page.get_by_role("button", name="LAUNCH").click()
    row = server_row(page, "lab")
    await expect(row.get_by_role("img", name="Running")).to_be_visible(timeout=WAIT_MS)
    async with page.context.expect_page() as opened:
        await row.get_by_role("button", name="CONNECT").click()
    jupyter = await opened.value
    own_origin = f"http://lab--{ALICE_NS}.localhost:{dev_gateway.port}"
    await expect(jupyter).to_have_url(
        re.compile(rf"^{re.escape(own_origin)}/notebook/{ALICE_NS}/lab/"), timeout=WAIT_MS
    )

    await expect(await run_in_jupyterlab(jupyter, "print(6*7)")).to_have_text("42", timeout=WAIT_MS)

    notebook = tmp_path / "uploaded.ipynb"
    kernel = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    cell = {"cell_type": "markdown", "id": "u1", "metadata": {}, "source": "uploaded through its own origin"}
    content = {"cells": [cell], "metadata": {"kernelspec": kernel}, "nbformat": 4, "nbformat_minor": 5}
    notebook.write_text(json.dumps(content))
    async with jupyter.expect_file_chooser() as chooser:
        await jupyter.locator('[title="Upload Files"]').first.click()
    await (await chooser.value).set_files(notebook)
    uploaded = jupyter.locator(".jp-DirListing-itemText", has_text="uploaded.ipynb")
    await expect(uploaded).to_be_visible(timeout=WAIT_MS)
    stored = list((dev_gateway.directory / ".dev/notebooks").rglob("uploaded.ipynb"))
    assert [json.loads(path.read_text())["cells"][0]["source"] for path in stored] == [cell["source"]]

    await jupyter.locator('[title="New Launcher"]').first.click()
    await jupyter.locator(".jp-LauncherCard", has_text="Terminal").last.click()
    terminal = jupyter.locator(".jp-Terminal").last
    await expect(terminal.locator(".xterm-screen")).to_be_visible(timeout=WAIT_MS)
    await terminal.locator(".xterm-helper-textarea").focus()
    # The terminal draws on a canvas: what it ran shows in the workspace instead.
    await jupyter.keyboard.type("echo origin-$((6*7)) > from-terminal.txt\n")
    workspace = dev_gateway.directory / ".dev/notebooks"
    await expect(jupyter.locator(".jp-DirListing-itemText", has_text="from-terminal.txt")).to_be_visible(
        timeout=WAIT_MS
    )
    [written] = workspace.rglob("from-terminal.txt")
    assert written.read_text() == "origin-42\n"

    # Signing out on the gateway's host ends the notebook origin's credential: the next load there
    # goes back round the handshake, which now finds no session and asks to sign in.
    await page.get_by_role("button", name="SIGN OUT").click()
    await jupyter.goto(f"{own_origin}/notebook/{ALICE_NS}/lab/lab")
    await expect(jupyter.get_by_label("Username")).to_be_visible()
    assert jupyter.url.startswith(dev_gateway.url("/dev-idp/"))
