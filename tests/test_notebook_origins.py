"""Every notebook on its own origin: which host serves what, the handshake that gives a notebook origin
its credential, and what ends that credential. Real gateway, real sessions, a fake notebook server;
notebook hosts are `*.localhost` names sent to loopback by the test clients' resolver."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSServerHandshakeError
from yarl import URL

from gateway import notebook_credentials
from gateway.cookies import NOTEBOOK_COOKIE, SESSION_COOKIE
from gateway.names import is_dns_label
from gateway.origins import MAX_LABEL, NotebookOrigins, label
from tests.conftest import sign_in_dev, unused_port, wait_until
from tests.fakes.idp import FakeIdP
from tests.fakes.upstream import FakeUpstream
from tests.origins import BROWSER, OriginClient
from tests.test_signin import StartGateway, fake, fake_settings, sign_in_fake, start_gateway  # noqa: F401

Routes = Callable[[dict[tuple[str, str], str]], Path]
Factory = Callable[..., Any]
NB1, NB2 = "/notebook/alice/nb1/", "/notebook/alice/nb2/"


@pytest.fixture
def notebook_origins() -> str:
    return "isolated"


@pytest.fixture
async def upstream(aiohttp_server: Any) -> FakeUpstream:
    return await FakeUpstream.start(aiohttp_server)


@pytest.fixture
def routes(routes_file: Routes, upstream: FakeUpstream) -> Path:
    return routes_file({("alice", "nb1"): upstream.url, ("alice", "nb2"): upstream.url})


@pytest.fixture
async def alice(gateway_factory: Factory, routes: Path) -> OriginClient:
    client: OriginClient = await gateway_factory(routes_file=routes)
    return client


async def browser(aiohttp_client: Any, gateway: OriginClient, user: str | None) -> OriginClient:
    """Another browser (its own cookie jar) on the same gateway, signed in as `user`."""
    client: OriginClient = await aiohttp_client(gateway.server, headers={"Origin": str(gateway.make_url("/").origin())})
    if user is not None:
        await sign_in_dev(client, user)
    return client


def origin(client: OriginClient, path: str) -> str:
    found = client.notebook_origin(path)
    assert found is not None
    return found


async def code_for(client: OriginClient, path: str) -> URL:
    """Run the handshake up to the callback URL (code and all) without following it."""
    async with client.session.get(client.make_url(path), headers=BROWSER, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        to_gateway = URL(resp.headers["Location"])
    async with client.session.get(to_gateway, headers=BROWSER, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        return URL(resp.headers["Location"])


# --- the host pattern --------------------------------------------------------------------------------


def test_a_label_is_readable_when_it_can_be_and_always_a_valid_unique_dns_label() -> None:
    assert label("alice", "nb1") == "nb1--alice"
    pairs = [
        ("a", "b--c"),  # name--namespace would read as (a--b, c) too
        ("a--b", "c"),
        ("n" * 63, "m" * 63),  # far past 63 characters together
        ("n" * 63, "m" * 62),
        ("x", "-".join("y" * 5 for _ in range(10))),
    ]
    labels = {label(namespace, name) for namespace, name in pairs} | {label("alice", "nb1")}
    assert len(labels) == len(pairs) + 1
    for value in labels:
        assert is_dns_label(value) and len(value) <= MAX_LABEL, value
    assert label("a", "b--c") != label("a--b", "c")
    assert all("--" not in label(namespace, name) for namespace, name in pairs[:4])  # hashed: never read as a pair
    assert label("x", pairs[4][1]) == f"{pairs[4][1]}--x"  # 62 characters: still readable


def test_the_gateway_host_inside_the_notebook_domain_is_refused() -> None:
    with pytest.raises(ValueError, match="inside the notebook domain"):
        NotebookOrigins.build("isolated", "https://gw.nb.example.com", "nb.example.com")
    origins = NotebookOrigins.build("isolated", "https://gw.example.com:8443", "nb.example.com")
    assert origins.origin("alice", "nb1") == "https://nb1--alice.nb.example.com:8443"
    assert origins.notebook_label("gw.example.com") is None
    assert origins.notebook_label("a.b.nb.example.com") == ""  # two labels: no notebook's host


# --- which host serves what --------------------------------------------------------------------------


async def test_a_notebook_path_on_the_gateway_host_is_sent_to_the_notebooks_origin(alice: OriginClient) -> None:
    gateway_url = alice.make_url("/")
    resp = await alice.session.get(gateway_url.with_path(NB1 + "echo").with_query(x="1"), allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == origin(alice, NB1) + NB1 + "echo?x=1"
    post = await alice.session.post(gateway_url.with_path(NB1 + "echo"), data=b"x")
    assert post.status == 421
    assert origin(alice, NB1) in (await post.json())["message"]


async def test_a_notebook_origin_serves_that_notebook_and_nothing_else(alice: OriginClient) -> None:
    assert (await alice.get(NB1 + "echo")).status == 200
    nb1 = URL(origin(alice, NB1))
    for path in ("/api/policies", "/notebooks", "/", NB2 + "echo", "/oauth2/userinfo", "/notebook/bob/nb1/echo"):
        resp = await alice.session.get(nb1.with_path(path), allow_redirects=False)
        assert resp.status == 421, path
        assert (await resp.json())["error"] == "misdirected_request"


async def test_an_unsafe_path_is_refused_on_a_notebook_origin_too(alice: OriginClient) -> None:
    nb1 = origin(alice, NB1)
    resp = await alice.session.get(URL(nb1 + NB1 + "a/%2e%2e/b", encoded=True))
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_path"


# --- credentials -------------------------------------------------------------------------------------


async def test_the_session_cookie_never_reaches_a_notebook_origin_and_is_not_accepted_there(
    alice: OriginClient, aiohttp_client: Any
) -> None:
    assert (await alice.get(NB1 + "echo")).status == 200
    jar = alice.session.cookie_jar
    assert SESSION_COOKIE not in jar.filter_cookies(URL(origin(alice, NB1)))  # host-only on the gateway's host
    session_cookie = jar.filter_cookies(alice.make_url("/"))[SESSION_COOKIE].value
    stranger = await browser(aiohttp_client, alice, None)
    nb1 = URL(origin(alice, NB1)).with_path(NB1 + "echo")
    resp = await stranger.session.get(nb1, headers={"Cookie": f"{SESSION_COOKIE}={session_cookie}"})
    assert resp.status == 401


async def test_a_notebook_credential_is_host_only_httponly_lax_and_valid_for_that_notebook_only(
    alice: OriginClient, aiohttp_client: Any
) -> None:
    callback = await code_for(alice, NB1)
    resp = await alice.session.get(callback, allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == NB1
    set_cookie = resp.headers.getall("Set-Cookie")
    credential = next(value for value in set_cookie if value.startswith(NOTEBOOK_COOKIE + "="))
    assert "HttpOnly" in credential and "SameSite=Lax" in credential and "Domain" not in credential
    value = credential.split(";")[0].partition("=")[2]
    cookie = {"Cookie": f"{NOTEBOOK_COOKIE}={value}"}
    stranger = await browser(aiohttp_client, alice, None)
    own = await stranger.session.get(URL(origin(alice, NB1)).with_path(NB1 + "echo"), headers=cookie)
    assert own.status == 200  # the cookie alone is the credential, as a session cookie is
    other = await stranger.session.get(URL(origin(alice, NB2)).with_path(NB2 + "echo"), headers=cookie)
    assert other.status == 401  # another notebook's origin does not take it
    gateway = await stranger.session.get(stranger.make_url("/oauth2/userinfo"), headers=cookie)
    assert gateway.status == 401  # nor does the gateway's host


async def test_sign_out_on_the_gateway_host_ends_every_notebook_credential(alice: OriginClient) -> None:
    assert (await alice.get(NB1 + "echo")).status == 200
    assert (await alice.get(NB2 + "echo")).status == 200
    resp = await alice.session.post(alice.make_url("/oauth2/sign_out"), allow_redirects=False)
    assert resp.status == 302
    for path in (NB1, NB2):
        after = await alice.session.get(alice.make_url(path + "echo"))  # the credential cookies are still sent
        assert after.status == 401, path
        page = await alice.session.get(alice.make_url(path + "echo"), headers=BROWSER, allow_redirects=False)
        assert page.status == 302 and "/oauth2/notebook-login?" in page.headers["Location"]  # a new handshake


async def test_sign_out_closes_the_notebooks_websockets(alice: OriginClient) -> None:
    async with alice.ws_connect(NB1 + "ws") as ws:
        await ws.send_str("hello")
        assert (await ws.receive()).data == "hello"
        await alice.session.post(alice.make_url("/oauth2/sign_out"), allow_redirects=False)
        closed = await asyncio.wait_for(ws.receive(), timeout=3)
        assert ws.close_code == 1008, closed


async def test_a_revoked_users_notebook_credential_stops_working_within_a_second(
    alice: OriginClient, aiohttp_client: Any
) -> None:
    grant = {"subject": "user:bob@example.com", "namespace": "alice", "role": "edit"}
    assert (await alice.post("/api/policies", json=grant)).status == 200
    bob = await browser(aiohttp_client, alice, "bob@example.com")
    await wait_until(lambda: _status(bob, NB1 + "echo", 200), timeout_s=2)
    assert (await alice.delete("/api/policies", json=grant)).status == 200
    started = asyncio.get_running_loop().time()
    await wait_until(lambda: _status(bob, NB1 + "echo", 403), timeout_s=1.0)
    assert asyncio.get_running_loop().time() - started < 1.0


async def _status(client: OriginClient, path: str, status: int) -> bool:
    return (await client.get(path)).status == status


# --- handshake abuse ---------------------------------------------------------------------------------


async def test_a_replayed_code_is_refused(alice: OriginClient) -> None:
    callback = await code_for(alice, NB1)
    assert (await alice.session.get(callback, allow_redirects=False)).status == 302
    replay = await alice.session.get(callback, allow_redirects=False)
    assert replay.status == 400
    assert "already used" in (await replay.json())["message"]


async def test_an_expired_code_is_refused(alice: OriginClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notebook_credentials, "CODE_TTL_S", 0.2)
    callback = await code_for(alice, NB1)
    await asyncio.sleep(0.4)
    resp = await alice.session.get(callback, allow_redirects=False)
    assert resp.status == 400 and "expired" in (await resp.json())["message"]


async def test_a_code_for_another_notebook_is_refused(alice: OriginClient) -> None:
    callback = await code_for(alice, NB1)
    elsewhere = URL(origin(alice, NB2)).with_path(callback.path).with_query(callback.query)
    resp = await alice.session.get(elsewhere, allow_redirects=False)
    assert resp.status == 400 and "another notebook" in (await resp.json())["message"]
    assert (await alice.session.get(callback, allow_redirects=False)).status == 400  # and it is spent


async def test_a_code_cannot_sign_a_victim_in_as_the_attacker(alice: OriginClient, aiohttp_client: Any) -> None:
    """The attacker (alice) gets a code in her browser and sends the victim the callback link."""
    grant = {"subject": "user:victim@example.com", "namespace": "alice", "role": "edit"}
    assert (await alice.post("/api/policies", json=grant)).status == 200  # alice shares nb1 with the victim
    victim = await browser(aiohttp_client, alice, "victim@example.com")
    callback = await code_for(alice, NB1)
    cold = await victim.session.get(callback, allow_redirects=False)  # the victim never started a handshake
    assert cold.status == 400 and "another browser" in (await cold.json())["message"]
    callback = await code_for(alice, NB1)
    await code_for(victim, NB1)  # now the victim holds a state cookie of her own for that origin (and is refused)
    warm = await victim.session.get(callback, allow_redirects=False)
    assert warm.status == 400 and "another browser" in (await warm.json())["message"]
    assert NOTEBOOK_COOKIE not in victim.session.cookie_jar.filter_cookies(URL(origin(alice, NB1)))


async def test_a_code_does_not_outlive_its_session(alice: OriginClient) -> None:
    callback = await code_for(alice, NB1)
    await alice.session.post(alice.make_url("/oauth2/sign_out"), allow_redirects=False)
    resp = await alice.session.get(callback, allow_redirects=False)
    assert resp.status == 400 and "session ended" in (await resp.json())["message"]


async def test_a_code_is_only_issued_to_a_page_load(alice: OriginClient) -> None:
    async with alice.session.get(alice.make_url(NB1), headers=BROWSER, allow_redirects=False) as resp:
        to_gateway = URL(resp.headers["Location"])
    for fetch in ({"Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}, {"Sec-Fetch-Dest": "iframe"}):
        refused = await alice.session.get(to_gateway, headers=fetch, allow_redirects=False)
        assert refused.status == 403, fetch


async def test_the_handshake_start_needs_the_gateway_session_and_access(
    alice: OriginClient, aiohttp_client: Any
) -> None:
    mallory = await browser(aiohttp_client, alice, "mallory@example.com")
    async with mallory.session.get(mallory.make_url(NB1), headers=BROWSER, allow_redirects=False) as resp:
        to_gateway = URL(resp.headers["Location"])
    refused = await mallory.session.get(to_gateway, headers=BROWSER, allow_redirects=False)
    assert refused.status == 403  # no role in namespace alice: no code
    nobody = await browser(aiohttp_client, alice, None)
    anonymous = await nobody.session.get(to_gateway, headers=BROWSER, allow_redirects=False)
    assert anonymous.status == 302 and anonymous.headers["Location"].startswith("/oauth2/start?")


# --- cross-origin requests between notebooks ---------------------------------------------------------


async def test_a_websocket_from_another_notebooks_origin_is_refused(alice: OriginClient) -> None:
    await alice.get(NB1 + "echo")  # the handshake: alice holds nb1's credential
    with pytest.raises(WSServerHandshakeError) as refused:
        async with alice.ws_connect(NB1 + "ws", headers={"Origin": origin(alice, NB2)}):
            pass
    assert refused.value.status == 403
    with pytest.raises(WSServerHandshakeError):
        async with alice.ws_connect(NB1 + "ws", headers={"Origin": str(alice.make_url("/").origin())}):
            pass


async def test_a_post_from_another_origin_is_refused(alice: OriginClient) -> None:
    resp = await alice.post(NB1 + "echo", data=b"x", headers={"Origin": origin(alice, NB2)})
    assert resp.status == 403
    assert (await alice.post(NB1 + "echo", data=b"x")).status == 200  # from its own origin


# --- single-origin mode ------------------------------------------------------------------------------


async def test_single_origin_mode_is_announced_on_the_admin_pages(gateway_factory: Factory, routes: Path) -> None:
    single = await gateway_factory(routes_file=routes, notebook_origins="single")
    page = await (await single.get("/notebooks", headers=BROWSER)).text()
    assert "Single-origin mode." in page and "GATEWAY_NOTEBOOK_DOMAIN" in page
    assert (await single.get(NB1 + "echo")).status == 200  # notebooks are on the gateway's own origin there
    isolated = await gateway_factory(routes_file=routes)
    assert "Single-origin mode." not in await (await isolated.get("/notebooks", headers=BROWSER)).text()


# --- /oauth2/auth for a notebook's host ----------------------------------------------------------------


async def test_the_sign_in_check_on_a_notebook_host_takes_that_notebooks_credential_only(
    alice: OriginClient, aiohttp_client: Any
) -> None:
    assert (await alice.get(NB1 + "echo")).status == 200  # alice holds nb1's credential
    nb1 = URL(origin(alice, NB1))
    host = {"Host": f"{nb1.host}:{nb1.port}"}
    check = alice.make_url("/oauth2/auth" + NB1 + "lab")  # Envoy: the prefix, then the original path
    credential = alice.session.cookie_jar.filter_cookies(nb1)[NOTEBOOK_COOKIE].value
    allowed = await alice.session.get(check, headers={**host, "Cookie": f"{NOTEBOOK_COOKIE}={credential}"})
    assert allowed.status == 200 and allowed.headers["kubeflow-userid"] == "alice@example.com"
    nginx = alice.make_url("/oauth2/auth")
    sent = {**host, "Cookie": f"{NOTEBOOK_COOKIE}={credential}", "X-Original-URI": NB1 + "api/kernels"}
    assert (await alice.session.get(nginx, headers=sent)).status == 202
    other = await alice.session.get(alice.make_url("/oauth2/auth" + NB2), headers={**host, "Cookie": sent["Cookie"]})
    assert other.status == 403  # nb1's host checking a path of nb2
    session_cookie = alice.session.cookie_jar.filter_cookies(alice.make_url("/"))[SESSION_COOKIE].value
    stranger = await browser(aiohttp_client, alice, None)
    with_session = {**host, "Cookie": f"{SESSION_COOKIE}={session_cookie}"}
    assert (await stranger.session.get(check, headers=with_session)).status == 401
    page = await stranger.session.get(check, headers={**host, **BROWSER}, allow_redirects=False)
    assert page.status == 302 and "/oauth2/notebook-login?" in page.headers["Location"]  # the handshake
    assert any(c.startswith("notebook_gateway_notebook_state=") for c in page.headers.getall("Set-Cookie"))


async def test_an_expired_session_ends_the_notebook_credential(gateway_factory: Factory, routes: Path) -> None:
    alice: OriginClient = await gateway_factory(routes_file=routes, session_idle_timeout_s=1.0)
    assert (await alice.get(NB1 + "echo")).status == 200
    await asyncio.sleep(1.5)  # idle past the timeout: the session ends, and the credential with it
    assert (await alice.get(NB1 + "echo")).status == 401


async def test_the_providers_back_channel_logout_ends_the_notebook_credential(
    fake: FakeIdP,  # noqa: F811
    start_gateway: StartGateway,  # noqa: F811
) -> None:
    isolated = {"notebook_origins": "isolated", "notebook_domain": "localhost"}
    client: OriginClient = await start_gateway(unused_port(), **isolated, **fake_settings(fake))  # type: ignore[assignment]
    fake.claims = {"sid": "provider-session-9"}
    await sign_in_fake(client, fake)
    assert (await client.get(NB1 + "echo")).status == 200
    token = fake.logout_token(sid="provider-session-9")
    assert (await client.post("/oauth2/backchannel-logout", data={"logout_token": token})).status == 200
    assert (await client.get(NB1 + "echo")).status == 401
