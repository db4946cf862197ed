"""Browser fixtures: Debian's chromium driven by Playwright (never a browser download), a real
`notebook-gateway dev` process, and the steps a person takes on the pages.

Screenshots go to the test's temporary directory; with NOTEBOOK_GATEWAY_SCREENSHOTS=docs/images they
replace the user's guide's pictures.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Locator, Page, async_playwright, expect

from .conftest import unused_port, wait_for_port
from .processes import end_process

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[1]
JUPYTER_START_S = 90.0  # two shared cores: Jupyter may take a while, but never forever
SIGN_IN_S = 20.0


def require_chromium() -> None:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing (scripts/setup-system installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")


@contextlib.asynccontextmanager
async def browser_page() -> AsyncIterator[Page]:
    """A page in a fresh browser profile (no cookies), in a laptop-sized window. Any uncaught script
    error on it fails the test."""
    require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            context.set_default_timeout(SIGN_IN_S * 1000)
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))  # an uncaught exception in a script
            yield page
            assert not errors, f"scripts failed on the page: {errors}"
        finally:
            await browser.close()


class DevGateway:
    """`python -m gateway dev` in a child process, as `scripts/dev` starts it. It runs in `directory`,
    so everything dev keeps under `.dev/` (notebooks, policies, audit log) is this gateway's own."""

    def __init__(self, directory: Path, **settings: str) -> None:
        self.port = unused_port()
        self.directory = directory
        # The developer's own GATEWAY_* variables must not change what the test runs.
        env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])  # this checkout
        env["GATEWAY_PORT"] = str(self.port)
        env |= {f"GATEWAY_{key.upper()}": value for key, value in settings.items()}
        with (directory / "gateway.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "dev"], cwd=directory, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_for_port(self.port, timeout_s=60, proc=self.proc)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        """SIGTERM, as Ctrl+C would: the gateway stops its Jupyter servers before it exits."""
        end_process(self.proc, timeout_s=30)


@contextlib.contextmanager
def dev_gateway_running(directory: Path, **settings: str) -> Iterator[DevGateway]:
    gateway = DevGateway(directory, **settings)
    try:
        yield gateway
    finally:
        gateway.stop()


# -- what a person does ----------------------------------------------------------------------------


async def sign_in(page: Page, username: str, groups: str = "") -> None:
    """Fill in the development provider's form, which accepts any username and password."""
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill("any password will do")
    if groups:
        await page.get_by_label("Groups").fill(groups)
    await page.get_by_role("button", name="Sign in").click()


async def form_ready(page: Page) -> None:
    """Wait for the NEW SERVER form's script, which enables LAUNCH once it listens to the fields."""
    await expect(page.get_by_role("button", name="LAUNCH")).to_be_enabled()


def server_row(page: Page, name: str) -> Locator:
    """The list's row for one notebook server (its name is the row's header cell)."""
    return page.get_by_role("row").filter(has=page.get_by_role("rowheader", name=name, exact=True))


async def run_in_jupyterlab(jupyter: Page, code: str) -> Locator:
    """Open a new Python notebook from JupyterLab's launcher, run `code` in its first cell once the
    kernel is idle, and return the cell's output area."""
    timeout_ms = JUPYTER_START_S * 1000
    await jupyter.locator('.jp-LauncherCard[data-category="Notebook"]').first.click(timeout=timeout_ms)
    idle = jupyter.get_by_role("button", name=re.compile(r"\| Idle$"))  # the status bar: kernel started
    await expect(idle).to_be_visible(timeout=timeout_ms)
    cell = jupyter.locator(".jp-Notebook .jp-CodeCell").first
    editor = cell.locator(".cm-content")
    # Typed keys reach the notebook's shortcuts, not the cell, while the editor is not ready: set
    # the text instead, and check it arrived before running it.
    await editor.fill(code)
    await expect(editor).to_have_text(code)
    await jupyter.get_by_role("button", name=re.compile("^Run this cell and advance")).click()
    return cell.locator(".jp-OutputArea-output")


async def screenshot(page: Page, name: str, directory: Path, *, full_page: bool = False) -> Path:
    """Save what the page shows as `<name>.png`, in NOTEBOOK_GATEWAY_SCREENSHOTS if set (the guide's pictures)."""
    kept = os.environ.get("NOTEBOOK_GATEWAY_SCREENSHOTS")
    path = (Path(kept) if kept else directory) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=path, full_page=full_page)
    return path


def write_policy(directory: Path, *rules: str) -> Path:
    """A policy file with these rules, each `subject, namespace, role` (e.g. `user:bob@example.com, bob, view`)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "policy.csv"
    lines = []
    for rule in rules:
        subject, namespace, role = (part.strip() for part in rule.split(","))
        lines.append(f"p, {subject}, {namespace}, *, {role}, allow\n")
    path.write_text("".join(lines))
    return path


async def expect_path(page: Page, path: str) -> None:
    """The page's URL has this path (any query), once navigation has settled."""
    await expect(page).to_have_url(re.compile(rf"^https?://[^/]+{re.escape(path)}(\?.*)?$"))
