"""JSON log lines carry the request id that produced them; secrets never reach a log."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from gateway import logs
from gateway.app import create_app
from gateway.middlewares import AccessLogger

from .conftest import give_own_namespace, make_settings, unused_port, wait_until
from .fakes.node_idp import sign_in


def test_scrub_hides_secret_query_values() -> None:
    scrubbed = logs.scrub("/oauth2/callback?code=abc123&state=xyz&next=%2Fnotebook%2Fa%2F")
    assert scrubbed == "/oauth2/callback?code=***&state=***&next=%2Fnotebook%2Fa%2F"
    assert logs.scrub("/api?Token=t0p&api_key=k&KEY=v&page=2") == "/api?Token=***&api_key=***&KEY=***&page=2"
    assert logs.scrub("/x?%74oken=secret") == "/x?%74oken=***"  # an encoded key is still a secret key
    hints = "/logout?id_token_hint=eyJ&logout_token=eyJ&client_assertion=eyJ&code_verifier=v&next=/"
    assert (
        logs.scrub(hints) == "/logout?id_token_hint=***&logout_token=***&client_assertion=***&code_verifier=***&next=/"
    )


def test_scrub_leaves_plain_paths_and_odd_queries_alone() -> None:
    assert logs.scrub("/notebook/alice/nb1/lab") == "/notebook/alice/nb1/lab"
    assert logs.scrub("/a?flag&x=1&&y=") == "/a?flag&x=1&&y="
    assert logs.scrub("/a?token") == "/a?token=***"


def test_json_lines_take_the_request_id_from_the_context() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("test.logs.context")
    logger.addHandler(logs.make_handler("json", stream))
    token = logs.REQUEST_ID.set("req-ctx-000001")
    try:
        logger.warning("hello %s", "world", extra={"notebook": "alice/nb1"})
    finally:
        logs.REQUEST_ID.reset(token)
        logger.handlers.clear()
    line = json.loads(stream.getvalue())
    assert line["message"] == "hello world"
    assert line["request_id"] == "req-ctx-000001"
    assert line["notebook"] == "alice/nb1" and line["level"] == "WARNING"
    assert datetime.fromisoformat(line["time"]).utcoffset() == timedelta(0)


@pytest.fixture
def gateway_log() -> Iterator[io.StringIO]:
    """Everything the `gateway` loggers write during a test, as JSON lines."""
    stream = io.StringIO()
    logger = logging.getLogger("gateway")
    handler = logs.make_handler("json", stream)
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_every_line_of_a_request_carries_its_id(
    aiohttp_server: Callable[..., Any],
    http: aiohttp.ClientSession,
    routes_file: Callable[..., Path],
    gateway_log: io.StringIO,
) -> None:
    port = unused_port()
    settings = make_settings(
        public_url=f"http://127.0.0.1:{port}",
        dev_provider=True,
        routes_file=routes_file({("alice", "nb1"): "http://127.0.0.1:9"}),
    )
    # The same access logger `cli.run` gives `web.run_app`.
    access = {"access_log_class": AccessLogger, "access_log": logging.getLogger("gateway.access")}
    server = await aiohttp_server(create_app(settings), port=port, **access)
    url = URL(f"{server.make_url('/')}notebook/alice/%2e%2e/?token=s3cret&x=1", encoded=True)
    async with http.get(url, headers={"X-Request-Id": "req-log-000001"}) as resp:
        assert resp.status == 400  # a bad path: refused, and logged as such
        ours = resp.headers["X-Request-Id"]
    await wait_until(lambda: "gateway.access" in gateway_log.getvalue())  # written after the response
    lines = [json.loads(line) for line in gateway_log.getvalue().splitlines()]
    mine = [line for line in lines if line["request_id"] == ours]
    assert {line["logger"] for line in mine} >= {"gateway.access", "gateway.middlewares"}
    access_line = next(line for line in mine if line["logger"] == "gateway.access")
    assert access_line["status"] == 400
    assert access_line["client_request_id"] == "req-log-000001"  # the client's own, beside ours for correlation
    assert not any(line["request_id"] == "req-log-000001" for line in lines)
    assert "token=***&x=1" in access_line["message"] and "s3cret" not in gateway_log.getvalue()


async def test_a_sign_out_through_the_provider_writes_no_token_to_any_log_line(
    aiohttp_server: Callable[..., Any],
    routes_file: Callable[..., Path],
    gateway_log: io.StringIO,
) -> None:
    """Sign-out sends the browser to the provider with `id_token_hint=<the ID token>`; in dev the provider is the
    gateway itself, so that URL is one of our own requests, and its access line must not carry the token."""
    port = unused_port()
    settings = make_settings(
        public_url=f"http://127.0.0.1:{port}", dev_provider=True, routes_file=routes_file({}), log_format="json"
    )
    access = {"access_log_class": AccessLogger, "access_log": logging.getLogger("gateway.access")}
    server = await aiohttp_server(create_app(settings), port=port, **access)
    jar = aiohttp.CookieJar(unsafe=True)  # cookies from 127.0.0.1
    async with aiohttp.ClientSession(headers={"Origin": f"http://127.0.0.1:{port}"}, cookie_jar=jar) as http:
        callback = await sign_in(http, server.make_url("/oauth2/start"), "alice@example.com", "any password")
        async with http.get(callback, headers={"Accept": "text/html"}) as resp:
            assert resp.status == 200
        async with http.post(server.make_url("/oauth2/sign_out"), allow_redirects=True) as resp:
            hops = [str(hop.url) for hop in resp.history]  # ... -> the provider's logout -> back to the gateway
    assert any("id_token_hint=eyJ" in hop for hop in hops)  # the token really went by, as a query value
    await wait_until(lambda: "/logout?" in gateway_log.getvalue())
    assert "eyJ" not in gateway_log.getvalue()  # no JWT (header `{"...`, base64url) in any line


async def test_a_proxied_request_is_one_json_access_line_with_who_where_and_how_long(
    aiohttp_server: Callable[..., Any],
    routes_file: Callable[..., Path],
    gateway_log: io.StringIO,
) -> None:
    """The line a log pipeline parses: our identity (never a credential), the client a trusted proxy names,
    the scrubbed path, status, bytes sent, the duration and the notebook's time to its headers."""
    body = b"hello from the notebook\n" * 10

    async def notebook(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/plain")

    upstream_app = web.Application()
    upstream_app.router.add_route("*", "/{tail:.*}", notebook)
    upstream = await aiohttp_server(upstream_app)
    port = unused_port()
    settings = make_settings(
        public_url=f"http://127.0.0.1:{port}",
        dev_provider=True,
        notebook_origins="single",
        trusted_proxies=("127.0.0.1/32",),  # the test client stands in for the ingress
        routes_file=routes_file({("alice", "nb1"): str(upstream.make_url("/"))}),
    )
    app = create_app(settings)
    give_own_namespace(app, "alice@example.com")
    access = {"access_log_class": AccessLogger, "access_log": logging.getLogger("gateway.access")}
    server = await aiohttp_server(app, port=port, **access)
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(headers={"Origin": f"http://127.0.0.1:{port}"}, cookie_jar=jar) as http:
        callback = await sign_in(http, server.make_url("/oauth2/start"), "alice@example.com", "any password")
        async with http.get(callback, allow_redirects=False) as resp:
            assert resp.status == 302
        url = URL(
            f"{server.make_url('/')}notebook/alice/nb1/api/contents?token=s3cret&_xsrf=x5rf&type=file", encoded=True
        )
        async with http.get(url, headers={"X-Forwarded-For": "203.0.113.9"}) as resp:
            assert resp.status == 200
            assert await resp.read() == body
            ours = resp.headers["X-Request-Id"]
    await wait_until(lambda: ours in gateway_log.getvalue())
    [line] = [
        json.loads(text)
        for text in gateway_log.getvalue().splitlines()
        if json.loads(text)["request_id"] == ours and json.loads(text)["logger"] == "gateway.access"
    ]
    assert line["user"] == "alice@example.com"
    assert (line["client"], line["remote"]) == ("203.0.113.9", "127.0.0.1")
    assert line["method"] == "GET"
    assert line["path"] == "/notebook/alice/nb1/api/contents?token=***&_xsrf=***&type=file"
    assert line["status"] == 200
    assert len(body) < line["bytes"] < len(body) + 1024  # what went on the wire: the body and the headers
    assert 0 <= line["upstream_ms"] <= line["duration_ms"]  # the notebook's part is inside the whole
    assert all(not isinstance(value, dict | list) for value in line.values())  # flat: no nesting to unpack
    log_text = gateway_log.getvalue()
    assert "s3cret" not in log_text and "x5rf" not in log_text
    # A request that never reached a notebook has no upstream time, and nobody signed in has no user.
    async with aiohttp.ClientSession() as anonymous, anonymous.get(server.make_url("/healthz")) as resp:
        health_id = resp.headers["X-Request-Id"]
    await wait_until(lambda: health_id in gateway_log.getvalue())
    [health] = [
        json.loads(text)
        for text in gateway_log.getvalue().splitlines()
        if json.loads(text)["request_id"] == health_id and json.loads(text)["logger"] == "gateway.access"
    ]
    assert (health["user"], health["upstream_ms"], health["client"]) == (None, None, "127.0.0.1")
