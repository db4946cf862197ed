"""`notebook-gateway login | token | notebooks` against a real OpenID provider (node `oidc-provider`) and a
real gateway: the browser flow on a loopback redirect, the device flow, refresh, and the stored file."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from gateway import keys
from gateway.auth.oidc import unverified_claims
from gateway.cli import login as login_cli
from gateway.cli import main, token_store
from tests import test_signin
from tests.browser import write_policy
from tests.conftest import Client, make_settings, unused_port
from tests.fakes.node_idp import (
    ALICE,
    NAVIGATION_HEADERS,
    PASSWORD,
    FormParser,
    NodeIdP,
    StartNodeIdP,
    browse,
    fill,
    sign_in,
)
from tests.test_api import leave_stopped_notebook
from tests.test_pages import guide_block
from tests.test_signin import StartGateway

start_gateway = test_signin.start_gateway  # the fixture: a gateway on a chosen port, alice owning `alice`
CLI_CLIENT = "notebook-gateway-cli"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


@pytest.fixture
async def gateway(node_idp: StartNodeIdP, start_gateway: StartGateway) -> tuple[Client, NodeIdP]:
    port = unused_port()
    idp = node_idp(redirect_uris=[f"http://127.0.0.1:{port}/oauth2/callback"], cli_client_id=CLI_CLIENT)
    client = await start_gateway(
        port,
        oidc_issuer=idp.issuer,
        oidc_client_id=idp.client_id,
        oidc_client_secret=idp.client_secret,
        cli_client_id=CLI_CLIENT,
    )
    return client, idp


def answers(text: str) -> list[dict[str, Any]]:
    """JSON documents printed back to back."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(text.rstrip()):
        document, at = decoder.raw_decode(text, at)
        found.append(document)
    return found


def url_of(client: Client) -> str:
    return str(client.make_url("/")).rstrip("/")


async def browser_login(client: Client, browser: aiohttp.ClientSession) -> token_store.StoredLogin:
    """Run `login` as a person would: open the printed address, sign in, and let the browser come back."""
    announced: asyncio.Queue[str] = asyncio.Queue()
    task = asyncio.create_task(login_cli.login(url_of(client), open_browser=False, announce=announced.put_nowait))
    text = await asyncio.wait_for(announced.get(), 30)
    address = URL(text.split()[-1])
    callback = await sign_in(browser, address, ALICE, PASSWORD)
    assert callback.host == "127.0.0.1" and callback.path == "/callback"
    async with browser.get(callback) as resp:
        assert resp.status == 200, await resp.text()
        assert "You are signed in" in await resp.text()
    return await asyncio.wait_for(task, 30)


async def notebooks_of(client: Client, token: str) -> Any:
    async with aiohttp.ClientSession() as http:
        resp = await http.get(
            client.make_url("/api/namespaces/alice/notebooks"), headers={"Authorization": f"Bearer {token}"}
        )
        return resp.status, await resp.json()


async def test_the_gateway_tells_the_cli_its_provider_and_public_client(gateway: tuple[Client, NodeIdP]) -> None:
    client, idp = gateway
    resp = await client.get("/.well-known/notebook-gateway")  # no session: the CLI has none yet
    assert resp.status == 200
    found = await resp.json()
    assert (found["issuer"].rstrip("/"), found["client_id"]) == (idp.issuer, CLI_CLIENT)
    assert "openid" in found["scopes"] and "offline_access" in found["scopes"]


async def test_without_a_cli_client_login_says_what_the_operators_must_set(
    node_idp: StartNodeIdP, start_gateway: StartGateway
) -> None:
    port = unused_port()
    idp = node_idp(redirect_uris=[f"http://127.0.0.1:{port}/oauth2/callback"])
    client = await start_gateway(
        port, oidc_issuer=idp.issuer, oidc_client_id=idp.client_id, oidc_client_secret=idp.client_secret
    )
    with pytest.raises(login_cli.LoginError, match="GATEWAY_CLI_CLIENT_ID"):
        await login_cli.login(url_of(client), open_browser=False, announce=lambda _: None)


async def test_login_in_a_browser_stores_a_token_the_gateway_accepts(
    gateway: tuple[Client, NodeIdP], browser: aiohttp.ClientSession, config_home: Path
) -> None:
    client, idp = gateway
    stored = await browser_login(client, browser)
    assert stored.user == ALICE and stored.refresh_token
    path = token_store.path_for(url_of(client))
    assert path.is_relative_to(config_home / "notebook-gateway")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    token = await login_cli.current_token(url_of(client))
    claims = unverified_claims(token)
    assert (claims["iss"], claims["aud"], claims["email"]) == (idp.issuer, CLI_CLIENT, ALICE)
    status, body = await notebooks_of(client, token)
    assert status == 200 and [notebook["name"] for notebook in body["notebooks"]] == ["nb1"]


async def test_a_bearer_token_of_the_cli_client_is_refused_when_the_gateway_does_not_name_it(
    gateway: tuple[Client, NodeIdP], browser: aiohttp.ClientSession, node_idp: StartNodeIdP, start_gateway: StartGateway
) -> None:
    client, idp = gateway
    await browser_login(client, browser)
    token = await login_cli.current_token(url_of(client))
    port = unused_port()  # a second gateway at the same provider that has not registered the CLI client
    other = await start_gateway(
        port, oidc_issuer=idp.issuer, oidc_client_id=idp.client_id, oidc_client_secret=idp.client_secret
    )
    status, body = await notebooks_of(other, token)
    assert status == 401 and body["error"] == "invalid_token"


async def test_a_callback_with_another_state_is_refused_and_login_keeps_waiting(
    gateway: tuple[Client, NodeIdP], browser: aiohttp.ClientSession
) -> None:
    client, _ = gateway
    announced: asyncio.Queue[str] = asyncio.Queue()
    task = asyncio.create_task(login_cli.login(url_of(client), open_browser=False, announce=announced.put_nowait))
    address = URL((await asyncio.wait_for(announced.get(), 30)).split()[-1])
    redirect_uri = URL(address.query["redirect_uri"])
    async with browser.get(redirect_uri.with_query(code="stolen", state="forged")) as resp:
        assert resp.status == 400
    assert not task.done()
    callback = await sign_in(browser, address, ALICE, PASSWORD)
    async with browser.get(callback) as resp:
        assert resp.status == 200
    assert (await asyncio.wait_for(task, 30)).user == ALICE


async def test_an_expired_token_is_refreshed_and_stored(
    gateway: tuple[Client, NodeIdP], browser: aiohttp.ClientSession
) -> None:
    client, _ = gateway
    first = await browser_login(client, browser)
    later = first.expires_at  # the moment the first ID token expires: `token` must not hand it out
    fresh = await login_cli.current_token(url_of(client), now=lambda: later)
    assert fresh != first.id_token
    again = token_store.load(url_of(client))
    assert again.id_token == fresh and again.expires_at >= first.expires_at
    assert await login_cli.current_token(url_of(client)) == fresh  # valid now: no second refresh
    status, _ = await notebooks_of(client, fresh)
    assert status == 200


async def test_a_refused_refresh_asks_to_sign_in_again(
    gateway: tuple[Client, NodeIdP], browser: aiohttp.ClientSession
) -> None:
    client, _ = gateway
    first = await browser_login(client, browser)
    token_store.save(dataclasses.replace(first, refresh_token="revoked"))
    with pytest.raises(login_cli.LoginError, match="run `login` again"):
        await login_cli.current_token(url_of(client), now=lambda: first.expires_at)


async def test_login_by_the_device_flow(gateway: tuple[Client, NodeIdP], browser: aiohttp.ClientSession) -> None:
    client, _ = gateway
    announced: asyncio.Queue[str] = asyncio.Queue()
    task = asyncio.create_task(login_cli.login(url_of(client), device=True, announce=announced.put_nowait))
    instructions = await asyncio.wait_for(announced.get(), 30)
    code = instructions.split("enter the code ")[1].split()[0]
    address = URL(instructions.split("open ")[1].split()[0])
    # On "another device": the provider's page for the code, its confirmation, then its sign-in.
    async with browser.get(address, headers=NAVIGATION_HEADERS) as resp:
        page = await resp.text()
    for _ in range(2):  # enter the code, then confirm it (both forms post to the same address)
        parser = FormParser()
        parser.feed(page)
        form = parser.forms[0]
        data = {name: value for _, name, value in form.fields}
        data["user_code"] = data.get("user_code") or code  # typed on the first page, carried on the second
        async with browser.post(address.join(URL(form.action)), data=data, allow_redirects=False) as resp:
            page = await resp.text()
            location = resp.headers.get("Location")
        if location is not None:
            break
    assert location is not None, page
    sign_in_page = address.join(URL(location))
    done = await browse(
        browser,
        sign_in_page,
        stop=lambda _: False,
        fill_form=lambda form: fill(form, ALICE, PASSWORD, {}),
        end_on_page=True,
    )
    assert done.path.startswith("/device")
    stored = await asyncio.wait_for(task, 60)
    assert stored.user == ALICE
    status, _ = await notebooks_of(client, await login_cli.current_token(url_of(client)))
    assert status == 200


def test_a_token_file_others_may_read_is_refused(config_home: Path) -> None:
    stored = token_store.StoredLogin("https://gw.example", "https://idp.example", "cli", "a", "t", time.time())
    path = token_store.save(stored)
    assert token_store.load("https://gw.example/") == stored
    path.chmod(0o644)
    with pytest.raises(token_store.TokenStoreError, match="may be read by others"):
        token_store.load("https://gw.example")


async def test_the_commands_print_a_token_and_list_notebooks(
    gateway: tuple[Client, NodeIdP], browser: aiohttp.ClientSession, config_home: Path
) -> None:
    client, _ = gateway
    await browser_login(client, browser)
    env = {**os.environ, "XDG_CONFIG_HOME": str(config_home), "PYTHONPATH": str(ROOT), "NOTEBOOK_GATEWAY_URL": ""}

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "gateway", *args, "--gateway", url_of(client)]
        return await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True, timeout=60)

    token = await cli("token")
    assert token.returncode == 0, token.stderr
    assert token.stdout.strip() == token_store.load(url_of(client)).id_token
    listing = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway", "notebooks", "--gateway", url_of(client), "-n", "alice", "--json", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    assert [notebook["name"] for notebook in json.loads(listing.stdout)["notebooks"]] == ["nb1"]
    refused = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway", "notebooks", "--gateway", url_of(client), "-n", "bob", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and refused.stderr.startswith("notebook-gateway: 403")
    logout = await cli("logout")
    assert logout.returncode == 0 and not token_store.path_for(url_of(client)).exists()


async def test_the_guides_commands_work_against_dev_after_login(
    gateway_factory: Any, tmp_path: Path, browser: aiohttp.ClientSession
) -> None:
    namespace = "kubeflow-alice-example-com"
    leave_stopped_notebook(tmp_path, namespace, "old")
    policy = write_policy(tmp_path / "policy", f"user:{ALICE}, {namespace}, admin")  # as her first sign-in left it
    dev_settings = main.dev_settings(
        make_settings(backend="local"), port=None
    )  # what `dev` registers for the command line
    client = await gateway_factory(
        user=None, backend="local", local_dir=tmp_path, policy_file=policy, cli_client_id=dev_settings.cli_client_id
    )
    announced: asyncio.Queue[str] = asyncio.Queue()
    task = asyncio.create_task(login_cli.login(url_of(client), open_browser=False, announce=announced.put_nowait))
    address = URL((await asyncio.wait_for(announced.get(), 30)).split()[-1])
    assert address.path == "/dev-idp/authorize"
    callback = await sign_in(browser, address, ALICE, "any password", fields={"groups": ""})
    async with browser.get(callback) as resp:
        assert resp.status == 200
    assert (await asyncio.wait_for(task, 30)).user == ALICE

    shell = f'notebook-gateway() {{ "{sys.executable}" -m gateway "$@"; }}\n' + guide_block("cli-token-script")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NOTEBOOK_GATEWAY_URL": url_of(client)}
    done = await asyncio.to_thread(
        subprocess.run, ["bash", "-euo", "pipefail", "-c", shell], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    listed, created, stopped, deleted = answers(done.stdout)  # curl prints them one after another
    assert stopped["notebook"]["stopped"] is True and "deleted" in deleted["message"]
    assert [notebook["name"] for notebook in listed["notebooks"]] == ["old"]
    assert created["notebook"]["name"] == "nb2"
    assert "nb2" not in [notebook.name for notebook in await client.app[keys.BACKEND].list(namespace)]
