"""A real OpenID provider (npm `oidc-provider`, run by node from tests/oidc/) and a scripted browser for it.

`NodeIdP` runs the provider on a free loopback port; `sign_in` and `sign_out` walk its pages like a browser.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.processes import end_process

OIDC_DIR = Path(__file__).resolve().parent.parent / "oidc"
ALICE, BOB = "alice@example.com", "bob@example.com"
PASSWORD = "password"
GROUPS: Mapping[str, tuple[str, ...]] = {ALICE: ("ml-team", "staff"), BOB: ("staff",)}


@dataclass(frozen=True, slots=True)
class NodeUser:
    """An account on the node provider; `sub` defaults to "id-<local part of the email>"."""

    password: str = PASSWORD
    groups: tuple[str, ...] = ()
    name: str | None = None
    sub: str | None = None

    def as_json(self) -> dict[str, object]:
        user: dict[str, object] = {"password": self.password, "groups": list(self.groups)}
        return user | {k: v for k, v in (("name", self.name), ("sub", self.sub)) if v is not None}


DEFAULT_USERS: Mapping[str, NodeUser] = {
    ALICE: NodeUser(groups=GROUPS[ALICE], name="Alice Example", sub="id-alice"),
    BOB: NodeUser(groups=GROUPS[BOB], name="Bob Example", sub="id-bob"),
}


class SignInFailed(AssertionError):
    """The scripted browser could not get through the provider's pages (wrong password, provider error...)."""


def require_node() -> None:
    """Skip the test when node is missing on a laptop; fail it in CI, where scripts/setup-system installs it."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if not missing:
        return
    reason = f"{' and '.join(missing)} not installed (scripts/setup-system installs them)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def ensure_installed() -> None:
    """`npm ci` in tests/oidc once, when node_modules is missing; a file lock keeps parallel runs apart."""
    if (OIDC_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
        return
    require_node()
    digest = hashlib.sha256(str(OIDC_DIR).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"notebook-gateway-npm-ci-{digest}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (OIDC_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
            return  # another process installed it while we waited
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=OIDC_DIR, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"npm ci in {OIDC_DIR} failed:\n{done.stdout}\n{done.stderr}")


class NodeIdP:
    """The `oidc-provider` process: one confidential client (and, with `cli_client_id`, a public native one
    with loopback redirects and the device flow), users alice and bob, PKCE required.

    `issuer` and `port` are known once `start()` returned; use it as a context manager or call `stop()`.
    """

    def __init__(
        self,
        *,
        redirect_uris: Sequence[str],
        post_logout_redirect_uris: Sequence[str] = (),
        client_id: str = "notebook-gateway",
        client_secret: str | None = None,
        cli_client_id: str | None = None,
        backchannel_logout_uri: str | None = None,
        id_token_ttl_s: int = 3600,
        access_token_ttl_s: int = 3600,
        users: Mapping[str, NodeUser] = DEFAULT_USERS,
        port: int = 0,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret or secrets.token_urlsafe(24)
        self.redirect_uris = tuple(redirect_uris)
        self.port = port
        self.issuer = ""
        self._env = {
            "PORT": str(port),
            "CLIENT_ID": client_id,
            "CLIENT_SECRET": self.client_secret,
            "REDIRECT_URIS": ",".join(redirect_uris),
            "POST_LOGOUT_REDIRECT_URIS": ",".join(post_logout_redirect_uris),
            "CLI_CLIENT_ID": cli_client_id or "",
            "BACKCHANNEL_LOGOUT_URI": backchannel_logout_uri or "",
            "ID_TOKEN_TTL_S": str(id_token_ttl_s),
            "ACCESS_TOKEN_TTL_S": str(access_token_ttl_s),
            "USERS": json.dumps({email: user.as_json() for email, user in users.items()}),
        }
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    def start(self, timeout_s: float = 30.0) -> None:
        """Start node and wait for its `READY <port>` line (the provider picks the port when `port` is 0)."""
        ensure_installed()
        require_node()
        fd, name = tempfile.mkstemp(prefix="node-idp-", suffix=".log")
        self._log_path = Path(name)
        with os.fdopen(fd, "wb") as log:  # the child keeps its own copy of the descriptor
            self._proc = subprocess.Popen(
                ["node", "provider.mjs"],
                cwd=OIDC_DIR,
                env={**os.environ, **self._env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while (ready := re.search(r"^READY (\d+)$", self.log, re.MULTILINE)) is None:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log_text = self.log
                self.stop()
                raise RuntimeError(f"oidc-provider did not start:\n{log_text}")
            time.sleep(0.05)
        self.port = int(ready.group(1))
        self.issuer = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._proc is not None:
            end_process(self._proc)
            self._proc = None
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    @property
    def log(self) -> str:
        """What node printed so far (warnings, server errors): handy in a failing test's message."""
        if self._log_path is None:
            return ""
        return self._log_path.read_text(errors="replace")

    def __enter__(self) -> NodeIdP:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


StartNodeIdP = Callable[..., NodeIdP]


@pytest.fixture
def node_idp() -> Iterator[StartNodeIdP]:
    """Factory: `node_idp(redirect_uris=[...], **NodeIdP options)` starts a provider; all stop after the test."""
    started: list[NodeIdP] = []

    def start(**options: Any) -> NodeIdP:
        idp = NodeIdP(**options)
        started.append(idp)
        idp.start()
        return idp

    yield start
    for idp in started:
        idp.stop()


# --- a scripted browser -------------------------------------------------------------------------------------------

REDIRECTS = frozenset({301, 302, 303, 307, 308})
# What a browser's top-level navigation says, so a relying party answers with redirects rather than a 401.
NAVIGATION_HEADERS = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8", "Sec-Fetch-Mode": "navigate"}
USERNAME_FIELDS = frozenset({"login", "username", "user", "email"})


@dataclass
class Form:
    action: str = ""
    method: str = "GET"
    fields: list[tuple[str, str, str]] = field(default_factory=list)  # (type, name, value)
    submit: tuple[str, str] | None = None  # the first named submit button, which a person would click


class FormParser(HTMLParser):
    """Collects the forms of a page: their inputs and their first named submit button."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self.in_form = False

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(action=a.get("action", ""), method=a.get("method", "GET").upper()))
            self.in_form = True
            return
        if not self.in_form or "name" not in a:
            return
        kind = a.get("type", "submit" if tag == "button" else "text").lower()
        if kind == "submit":
            if self.forms[-1].submit is None:
                self.forms[-1].submit = (a["name"], a.get("value", ""))
        elif tag in ("input", "textarea", "select"):
            self.forms[-1].fields.append((kind, a["name"], a.get("value", "")))


def fill(form: Form, username: str, password: str, extra: Mapping[str, str]) -> dict[str, str]:
    data: dict[str, str] = {}
    for kind, name, value in form.fields:
        if kind == "password":
            value = password
        elif name in USERNAME_FIELDS:
            value = username
        data[name] = extra.get(name, value)
    if form.submit is not None:
        data.setdefault(*form.submit)
    return data


async def browse(
    session: aiohttp.ClientSession,
    url: URL,
    *,
    stop: Callable[[URL], bool],
    fill_form: Callable[[Form], dict[str, str]],
    end_on_page: bool = False,
    max_steps: int = 20,
) -> URL:
    """Follow redirects and submit forms until a redirect target satisfies `stop`; return it, not followed.

    A page without a form is the end (its URL is returned) when `end_on_page`, else a failure.
    The same form twice in a row means the provider refused what was submitted.
    """
    method, data = "GET", None
    last_form: tuple[str, str] | None = None
    for _ in range(max_steps):
        async with session.request(method, url, data=data, headers=NAVIGATION_HEADERS, allow_redirects=False) as resp:
            body = await resp.text()
            location = resp.headers.get("Location")
        if resp.status in REDIRECTS and location is not None:
            target = url.join(URL(location))
            if stop(target):
                return target
            if resp.status not in (307, 308):
                method, data = "GET", None
            url = target
            continue
        if resp.status != 200:
            raise SignInFailed(f"{resp.status} from {url.with_query(None)}: {page_text(body)}")
        parser = FormParser()
        parser.feed(body)
        forms = [f for f in parser.forms if any(kind == "password" for kind, _, _ in f.fields)] or parser.forms
        if not forms:
            if end_on_page:
                return url
            raise SignInFailed(f"no form and no redirect at {url.with_query(None)}: {page_text(body)}")
        form = forms[0]
        action = url.join(URL(form.action)) if form.action else url
        if last_form == (str(action), form.method):
            raise SignInFailed(f"the provider showed its form again at {url.with_query(None)}: {page_text(body)}")
        last_form = (str(action), form.method)
        method, data, url = form.method, fill_form(form), action
        if method == "GET":
            url, data = url.with_query(data), None
    raise SignInFailed(f"still not back after {max_steps} steps, at {url.with_query(None)}")


def page_text(html: str) -> str:
    text = " ".join(re.sub(r"<[^>]+>", " ", html).split())[:500]
    if "cookie" in text:  # the usual cause: aiohttp's default jar ignores cookies set by 127.0.0.1
        text += " (does the ClientSession use aiohttp.CookieJar(unsafe=True)?)"
    return text


def is_authorization_response(url: URL) -> bool:
    """The provider's redirect back to the relying party: `state` with `code`, or with `error`."""
    return "state" in url.query and ("code" in url.query or "error" in url.query)


async def sign_in(
    session: aiohttp.ClientSession,
    start_url: str | URL,
    username: str,
    password: str,
    *,
    fields: Mapping[str, str] | None = None,
) -> URL:
    """Go from the relying party's start URL through the provider's pages and return the callback URL.

    The returned URL (with `code` and `state`, or `error`) is not requested, so the caller delivers it.
    `session` must keep cookies for 127.0.0.1: `aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))`
    (an aiohttp `TestClient.session` does). `fields` fills other form fields (e.g. the dev provider's "groups").
    """
    return await browse(
        session,
        URL(start_url),
        stop=is_authorization_response,
        fill_form=lambda form: fill(form, username, password, fields or {}),
    )


async def sign_out(session: aiohttp.ClientSession, end_session_url: str | URL) -> URL:
    """Go through the provider's sign-out confirmation; return where it sends the browser (not requested).

    That is the `post_logout_redirect_uri` (with `state` when one was given), or the provider's own
    "signed out" page when there is none.
    """
    origin = URL(end_session_url).origin()
    return await browse(
        session,
        URL(end_session_url),
        stop=lambda target: target.origin() != origin,
        fill_form=lambda form: fill(form, "", "", {}),
        end_on_page=True,
    )
