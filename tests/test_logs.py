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
from yarl import URL

from gateway import logs
from gateway.app import create_app
from gateway.middlewares import AccessLogger

from .conftest import make_settings, unused_port, wait_until


def test_scrub_hides_secret_query_values() -> None:
    scrubbed = logs.scrub("/oauth2/callback?code=abc123&state=xyz&next=%2Fnotebook%2Fa%2F")
    assert scrubbed == "/oauth2/callback?code=***&state=***&next=%2Fnotebook%2Fa%2F"
    assert logs.scrub("/api?Token=t0p&api_key=k&KEY=v&page=2") == "/api?Token=***&api_key=***&KEY=***&page=2"
    assert logs.scrub("/x?%74oken=secret") == "/x?%74oken=***"  # an encoded key is still a secret key


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
    await wait_until(lambda: "gateway.access" in gateway_log.getvalue())  # written after the response
    lines = [json.loads(line) for line in gateway_log.getvalue().splitlines()]
    mine = [line for line in lines if line["request_id"] == "req-log-000001"]
    assert {line["logger"] for line in mine} >= {"gateway.access", "gateway.middlewares"}
    access_line = next(line for line in mine if line["logger"] == "gateway.access")
    assert access_line["status"] == 400
    assert "token=***&x=1" in access_line["message"] and "s3cret" not in gateway_log.getvalue()
