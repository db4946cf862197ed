"""The HTTP proxy against a fake notebook server: paths, headers, streaming and faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from gateway.app import create_app
from gateway.cookies import SESSION_COOKIE
from tests.conftest import Client, give_own_namespace, make_settings, unused_port, wait_until
from tests.fakes.node_idp import sign_in
from tests.fakes.upstream import RANGE_BODY, FakeUpstream
from tests.origins import in_both_origin_modes  # noqa: F401  (fixture: every test here runs in both)

Routes = Callable[[dict[tuple[str, str], str]], Path]
NB = "/notebook/alice/nb1/"
MiB = 1024 * 1024
GiB = 1024 * MiB


@pytest.fixture
async def gateway(gateway_factory: Callable[..., Any], routes_file: Routes, upstream: FakeUpstream) -> Client:
    client: Client = await gateway_factory(routes_file=routes_file({("alice", "nb1"): upstream.url}))
    return client


async def echo(gateway: Client, path: str = "echo", **kwargs: Any) -> dict[str, Any]:
    resp = await gateway.request(kwargs.pop("method", "GET"), NB + path, **kwargs)
    assert resp.status == 200, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


def header(seen: dict[str, Any], name: str) -> list[str]:
    """Every value the upstream received for `name` (any case)."""
    return [value for key, value in seen["headers"] if key.lower() == name.lower()]


async def test_prefix_and_encoded_path_reach_the_notebook_untouched(gateway: Client) -> None:
    raw = NB + "echo/a%20b/c%3Bd/caf%C3%A9;v=1?x=1&y=%2F..&z"
    resp = await gateway.get(URL(raw, encoded=True))  # encoded: the test client must not requote it
    seen = await resp.json()
    assert seen["raw_path"] == NB + "echo/a%20b/c%3Bd/caf%C3%A9;v=1?x=1&y=%2F..&z"
    assert seen["method"] == "GET"


async def test_path_without_slash_redirects_keeping_the_query(gateway: Client) -> None:
    resp = await gateway.get("/notebook/alice/nb1?x=1", allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (302, "/notebook/alice/nb1/?x=1")
    resp = await gateway.post("/notebook/alice/nb1", data=b"x", allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (308, "/notebook/alice/nb1/")


async def test_unknown_notebook_is_404_json_for_api_clients(gateway: Client) -> None:
    resp = await gateway.get("/notebook/alice/nb9/api/status")
    assert resp.status == 404
    body = await resp.json()
    assert body["error"] == "notebook_not_found"
    assert "alice/nb9" in body["message"]


async def test_unknown_notebook_is_404_page_for_browsers(gateway: Client) -> None:
    resp = await gateway.get("/notebook/alice/nb9/lab", headers={"Accept": "text/html"})
    assert resp.status == 404
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert "alice/nb9" in page
    assert "alice@example.com" in page and "SIGN OUT" in page  # the page keeps the signed-in layout


# Headers through which front proxies tell an app who the user is (Kubeflow, oauth2-proxy's two families,
# Apache/CGI's REMOTE_USER), written from the threat, not imported from the code, each sent as a client would
# spell it (any case, `_` for `-`): the gateway sets two of them itself and must never pass a client's on.
CLIENT_IDENTITY = {
    "kubeflow-userid": "admin",
    "KUBEFLOW_GROUPS": "admins",
    "X-Forwarded-User": "admin",
    "x_forwarded_email": "admin@example.com",
    "X-Forwarded-Groups": "admins",
    "X-Forwarded-Preferred-Username": "admin",
    "X-Forwarded-Access-Token": "admin-token",
    "X-Auth-Request-User": "admin",
    "x-auth-request-email": "admin@example.com",
    "X-Auth-Request-Groups": "admins",
    "X-Auth-Request-Preferred-Username": "admin",
    "X-Auth-Request-Access-Token": "admin-token",
    "X-Remote-User": "admin",
    "X-Remote-Group": "admins",
    "Remote_User": "admin",
}


async def test_client_identity_headers_never_reach_the_notebook(gateway: Client) -> None:
    seen = await echo(gateway, headers=CLIENT_IDENTITY)
    received = {name.lower().replace("_", "-"): value for name, value in seen["headers"]}
    sent = {name.lower().replace("_", "-") for name in CLIENT_IDENTITY}
    # Only ours arrive: the signed-in user and their (here, no) groups.
    assert {name for name in received if name in sent} == {"kubeflow-userid", "kubeflow-groups"}
    assert (received["kubeflow-userid"], received["kubeflow-groups"]) == ("alice@example.com", "")
    assert "admin" not in str(seen["headers"])


# Headers some upstream treats as identity or routing, written from the threat (who believes which
# header), not imported from the code: a header the gateway forgot to strip fails the test below.
SPOOFED = [
    # URL rewrites believed by IIS, Symfony and Zend: the request would be served as another path
    "X-Original-URL",
    "X-Rewrite-URL",
    "X-Original-URI",
    "X-Forwarded-Prefix",
    "X-Forwarded-Uri",
    "X-HTTP-Method-Override",
    "X-Host",
    # client addresses believed by allow-lists and rate limits
    "True-Client-IP",
    "X-Client-IP",
    "X-Cluster-Client-IP",
    "CF-Connecting-IP",
    "Fastly-Client-IP",
    # identity believed by Grafana, Azure, Google IAP, AWS ALB, Cloudflare Access and home-grown apps
    "X-User",
    "X-WEBAUTH-USER",
    "X-Webauth-Email",
    "X-Authenticated-User",
    "X-MS-CLIENT-PRINCIPAL-NAME",
    "X-Goog-Authenticated-User-Email",
    "X-Amzn-Oidc-Identity",
    "Cf-Access-Authenticated-User-Email",
    "X_USER",  # underscores: some servers fold them into dashes
]


async def test_identity_and_routing_headers_from_the_client_are_removed(gateway: Client) -> None:
    resp = await gateway.get("/notebook/alice/nb1/echo", headers={name: "admin" for name in SPOOFED})
    assert resp.status == 200
    seen = await resp.json()
    received = {name.lower().replace("_", "-") for name, _ in seen["headers"]}
    assert received.isdisjoint({name.lower().replace("_", "-") for name in SPOOFED})
    assert "admin" not in str(seen["headers"])
    assert seen["raw_path"] == "/notebook/alice/nb1/echo"


async def test_basic_authorization_and_host_pass_to_the_notebook(gateway: Client) -> None:
    # Basic (or Jupyter's `token`) is addressed to the notebook, not to the gateway; Host is what
    # Jupyter compares Origin with. Neither is read by the gateway as identity or for routing.
    resp = await gateway.get("/notebook/alice/nb1/echo", headers={"Authorization": "Basic dTpw"})
    headers = dict((await resp.json())["headers"])
    assert headers["Authorization"] == "Basic dTpw"
    assert headers["Host"] == f"{gateway.make_url(NB).host}:{gateway.port}"  # the notebook's own host when it has one


async def test_forwarded_headers_come_from_the_connection_not_the_client(gateway: Client) -> None:
    spoofed = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}
    seen = await echo(gateway, headers=spoofed)
    host = f"{gateway.make_url(NB).host}:{gateway.port}"  # the notebook's own host when it has one
    assert header(seen, "X-Forwarded-For") == ["127.0.0.1"]
    assert header(seen, "X-Forwarded-Proto") == ["http"]
    assert header(seen, "X-Forwarded-Host") == [host]
    assert header(seen, "Host") == [host]  # the client's Host, for Jupyter's Origin check


async def test_a_trusted_proxy_forwarded_headers_are_extended(
    gateway_factory: Callable[..., Any], routes_file: Routes, upstream: FakeUpstream
) -> None:
    routes = routes_file({("alice", "nb1"): upstream.url})
    gateway = await gateway_factory(routes_file=routes, trusted_proxies=("127.0.0.0/8",))
    spoofed = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "nb.example"}
    seen = await echo(gateway, headers=spoofed)
    assert header(seen, "X-Forwarded-For") == ["203.0.113.9, 127.0.0.1"]
    assert header(seen, "X-Forwarded-Proto") == ["https"]
    assert header(seen, "X-Forwarded-Host") == ["nb.example"]


async def test_gateway_cookies_are_stripped_and_jupyters_kept(gateway: Client) -> None:
    cookie = "_xsrf=2|abc|def; notebook_gateway_session=s3cret; theme=dark; notebook_gateway_login=x"
    seen = await echo(gateway, headers={"Cookie": cookie})
    assert header(seen, "Cookie") == ["_xsrf=2|abc|def; theme=dark"]
    seen = await echo(gateway, headers={"Cookie": "notebook_gateway_session=s3cret"})
    assert header(seen, "Cookie") == []


async def test_notebook_cannot_set_the_gateways_cookie(gateway: Client) -> None:
    resp = await gateway.get(NB + "cookies")
    cookies = resp.headers.getall("Set-Cookie")
    assert any(c.startswith("_xsrf=") for c in cookies)
    assert not any("notebook_gateway" in c for c in cookies)


async def test_a_notebook_cannot_reach_past_its_own_origin_with_headers(gateway: Client, notebook_origins: str) -> None:
    wide = await gateway.get(NB + "overreach", params={"scope": "/"})
    assert "Service-Worker-Allowed" not in wide.headers  # never a worker for the gateway's (or another) root
    cookies = wide.headers.getall("Set-Cookie")
    assert [c.split("=")[0] for c in cookies] == ["own"]  # no parent-domain cookie, no gateway cookie name
    own_scope = await gateway.get(NB + "overreach", params={"scope": NB + "lab/"})
    if notebook_origins == "isolated":
        assert own_scope.headers["Service-Worker-Allowed"] == NB + "lab/"  # inside its prefix, on its own origin
    else:
        assert "Service-Worker-Allowed" not in own_scope.headers  # on the gateway's origin: none at all


async def test_single_origin_mode_refuses_notebook_service_workers(gateway: Client, notebook_origins: str) -> None:
    resp = await gateway.get(NB + "echo", headers={"Service-Worker": "script"})
    if notebook_origins == "isolated":
        assert resp.status == 200  # its own origin: a worker there can reach nothing but that notebook
    else:
        assert resp.status == 403
        assert "service workers" in (await resp.json())["message"]


async def test_hop_by_hop_headers_are_removed_both_ways(gateway: Client) -> None:
    sent = {"Connection": "keep-alive, X-Hop", "X-Hop": "1", "Keep-Alive": "300", "TE": "trailers"}
    seen = await echo(gateway, headers={**sent, "Proxy-Authorization": "Basic eA==", "X-End": "kept"})
    received = {name.lower() for name, _ in seen["headers"]}
    assert received.isdisjoint({"x-hop", "keep-alive", "te", "proxy-authorization"})
    assert header(seen, "X-End") == ["kept"]
    resp = await gateway.get(NB + "hop")
    assert resp.headers["X-Kept"] == "yes"
    assert "X-Private" not in resp.headers and "Keep-Alive" not in resp.headers


async def test_the_users_groups_are_announced_and_a_notebooks_own_authorization_passes(
    gateway_factory: Callable[..., Any], routes_file: Routes, upstream: FakeUpstream
) -> None:
    routes = routes_file({("alice", "nb1"): upstream.url})
    gateway = await gateway_factory(routes_file=routes, user="Alice@Example.com", groups="team-a, ml")
    seen = await echo(gateway, headers={"Authorization": "Basic dTpw"})
    assert header(seen, "kubeflow-userid") == ["alice@example.com"]
    assert header(seen, "kubeflow-groups") == ["ml,team-a"]
    assert header(seen, "Authorization") == ["Basic dTpw"]  # not the gateway's: Jupyter may use it


async def test_upload_keeps_content_length(gateway: Client) -> None:
    seen = await echo(gateway, method="PUT", data=b"hello notebook")
    assert seen["body"] == "hello notebook"
    assert header(seen, "Content-Length") == ["14"]
    assert header(seen, "Transfer-Encoding") == []


async def test_chunked_upload_is_streamed_chunked(gateway: Client) -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 1000

    resp = await gateway.post(NB + "count", data=body())
    assert await resp.json() == {"bytes": 10_000, "content_length": None, "transfer_encoding": "chunked"}


async def test_expect_100_continue_upload(gateway: Client) -> None:
    resp = await gateway.put(NB + "count", data=b"x" * 5000, expect100=True)
    assert (await resp.json())["bytes"] == 5000


async def test_chunked_download_streams_to_the_end(gateway: Client) -> None:
    resp = await gateway.get(NB + "bytes/300000?chunked=1")
    assert "Content-Length" not in resp.headers
    assert len(await resp.read()) == 300_000


async def test_encoded_bodies_pass_as_the_notebook_encoded_them(gateway: Client) -> None:
    resp = await gateway.get(NB + "gzip", headers={"Accept-Encoding": "gzip"})
    assert resp.headers["Content-Encoding"] == "gzip"
    assert await resp.read() == b"compressed by the notebook " * 100  # the test client decodes it once


async def test_range_requests_pass_through(gateway: Client) -> None:
    resp = await gateway.get(NB + "range", headers={"Range": "bytes=10-19"})
    assert resp.status == 206
    assert resp.headers["Content-Range"] == "bytes 10-19/1000"
    assert await resp.read() == RANGE_BODY[10:20]


async def test_head_keeps_the_content_length(gateway: Client) -> None:
    resp = await gateway.head(NB + "bytes/123456")
    assert resp.status == 200
    assert resp.headers["Content-Length"] == "123456"
    assert await resp.read() == b""


async def test_large_download_keeps_content_length(gateway: Client) -> None:
    resp = await gateway.get(NB + "bytes/1000000")
    assert resp.headers["Content-Length"] == "1000000"
    assert len(await resp.read()) == 1_000_000


async def test_notebook_redirects_go_back_to_the_browser(gateway: Client) -> None:
    resp = await gateway.get(NB + "status/302", allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (302, "/elsewhere")
    resp = await gateway.get(NB + "status/204")
    assert resp.status == 204


async def test_sse_events_arrive_before_the_stream_ends(gateway: Client, upstream: FakeUpstream) -> None:
    resp = await gateway.get(NB + "sse")
    assert resp.headers["Content-Type"] == "text/event-stream"
    # The upstream holds the second event until the first has reached the client.
    assert await resp.content.readline() == b"data: first\n"
    assert await resp.content.readline() == b"\n"
    upstream.state.sse_gate.set()
    assert await resp.content.read() == b"data: second\n\n"


async def test_refused_upstream_is_502_naming_the_notebook(
    gateway_factory: Callable[..., Any], routes_file: Routes
) -> None:
    gateway = await gateway_factory(routes_file=routes_file({("alice", "nb1"): f"http://127.0.0.1:{unused_port()}"}))
    resp = await gateway.get(NB + "api/status")
    body = await resp.json()
    assert (resp.status, body["error"]) == (502, "upstream_unavailable")
    assert "alice/nb1" in body["message"]
    page = await gateway.get(NB + "lab", headers={"Accept": "text/html"})
    text = await page.text()
    assert page.status == 502 and "alice/nb1" in text and "Traceback" not in text
    metrics = await (await gateway.get("/metrics")).text()
    assert 'notebook_gateway_upstream_errors_total{kind="unavailable"} 2.0' in metrics


async def test_slow_upstream_is_504(
    gateway_factory: Callable[..., Any], routes_file: Routes, upstream: FakeUpstream
) -> None:
    routes = routes_file({("alice", "nb1"): upstream.url})
    gateway = await gateway_factory(routes_file=routes, upstream_timeout_s=0.2)
    resp = await gateway.get(NB + "slow?delay_s=30")
    body = await resp.json()
    assert (resp.status, body["error"]) == (504, "upstream_timeout")
    assert "alice/nb1" in body["message"] and "Traceback" not in json.dumps(body)
    page = await gateway.get(NB + "slow?delay_s=30", headers={"Accept": "text/html"})
    assert page.status == 504 and "alice/nb1" in await page.text()


async def test_slow_client_upload_is_not_an_upstream_timeout(
    gateway_factory: Callable[..., Any], routes_file: Routes, upstream: FakeUpstream
) -> None:
    routes = routes_file({("alice", "nb1"): upstream.url})
    gateway = await gateway_factory(routes_file=routes, upstream_timeout_s=0.5)

    async def dawdling_body() -> AsyncIterator[bytes]:
        for index in range(3):
            if index:
                await asyncio.sleep(0.7)  # longer than the upstream timeout, but the client's doing
            yield b"x" * 10

    resp = await gateway.post(NB + "count", data=dawdling_body())
    assert resp.status == 200 and (await resp.json())["bytes"] == 30


async def test_upstream_dying_before_a_small_body_is_complete_is_502(gateway: Client) -> None:
    resp = await gateway.get(NB + "truncate/1000")
    assert (resp.status, (await resp.json())["error"]) == (502, "upstream_unavailable")


async def test_upstream_dying_mid_stream_truncates_the_response(gateway: Client) -> None:
    resp = await gateway.get(NB + "truncate/10000000")
    assert resp.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()


@contextlib.asynccontextmanager
async def serving(routes: Path) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """The gateway as `serve` runs it: aiohttp's default of not cancelling handlers whose client left
    (test servers cancel them, which hides how the proxy notices a departed client). Yields its URL
    and the headers of a browser signed in there."""
    port = unused_port()
    url = f"http://127.0.0.1:{port}"
    app = create_app(make_settings(routes_file=routes, public_url=url, dev_provider=True))
    give_own_namespace(app, "alice@example.com")
    runner = web.AppRunner(app, handler_cancellation=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            callback = await sign_in(browser, URL(f"{url}/oauth2/start"), "alice@example.com", "any")
            async with browser.get(callback, allow_redirects=False) as resp:
                assert resp.status == 302
            cookie = browser.cookie_jar.filter_cookies(URL(url))[SESSION_COOKIE].value
        yield url, {"Cookie": f"{SESSION_COOKIE}={cookie}", "Origin": url}
    finally:
        await runner.cleanup()


async def test_client_leaving_mid_download_stops_the_notebooks_stream(
    routes_file: Routes, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    async with serving(routes_file({("alice", "nb1"): upstream.url})) as (url, signed_in):
        resp = await http.get(url + NB + f"bytes/{GiB}", headers=signed_in)
        await resp.content.readexactly(MiB)
        assert upstream.state.streams_open == 1
        resp.close()  # drops the connection mid-body
        await wait_until(lambda: upstream.state.streams_open == 0)


def rss_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


@pytest.mark.slow
async def test_one_gib_upload_and_download_keep_memory_flat(gateway: Client) -> None:
    """Client, gateway and fake notebook share this process, so its peak RSS bounds all three."""
    reset_peak_rss()
    before = rss_bytes("VmRSS")
    chunk = b"\xa5" * MiB

    async def body() -> AsyncIterator[bytes]:
        for _ in range(GiB // MiB):
            yield chunk

    resp = await gateway.put(NB + "count", data=body(), headers={"Content-Length": str(GiB)})
    assert await resp.json() == {"bytes": GiB, "content_length": str(GiB), "transfer_encoding": None}
    resp = await gateway.get(NB + f"bytes/{GiB}")
    assert resp.headers["Content-Length"] == str(GiB)
    received = 0
    async for piece in resp.content.iter_any():
        received += len(piece)
    assert received == GiB
    assert rss_bytes("VmHWM") - before < 100 * MiB
