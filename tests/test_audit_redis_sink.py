"""`RedisSink` on a real redis-server: events reach the capped stream in order, wait in the audit
files while Redis is down (or the gateway is), and are searched through the per-user index."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis

from gateway.audit import AuditEvent, AuditLog
from gateway.audit.chain import Sealer
from gateway.audit.filesink import ChainedFile
from gateway.audit.query import Filter
from gateway.audit.redis_sink import RedisSink

from .conftest import RedisServer, wait_until


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_server.url)
    yield connection
    await connection.aclose()


async def open_log(
    directory: Path, client: redis.Redis, prefix: str, *, rotate_bytes: int = 1 << 20, **options: object
) -> tuple[AuditLog, RedisSink]:
    """The real AuditLog with its chained files and a RedisSink, opened; `options` go to the sink."""
    file = ChainedFile(directory, Sealer(), rotate_bytes)
    sink = RedisSink(
        client,
        directory,
        chain_id=lambda: file.chain_id,
        latest_seq=lambda: file.seq,
        prefix=prefix,
        **options,  # type: ignore[arg-type]
    )
    audit = AuditLog(file, stdout=False)
    audit.add_sink(sink)
    await audit.open()
    return audit, sink


def emit(audit: AuditLog, n: int, user: str = "alice") -> None:
    audit.emit(AuditEvent(action="notebook.access", outcome="allowed", actor=user, namespace=user, details={"n": n}))


async def stream_records(client: redis.Redis, prefix: str) -> list[dict[str, Any]]:
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await client.xrange(prefix)  # type: ignore[assignment]
    return [json.loads(fields[b"e"]) for _, fields in entries]


async def stream_ns(client: redis.Redis, prefix: str) -> list[int]:
    return [record["details"]["n"] for record in await stream_records(client, prefix)]


def new_prefix() -> str:
    return f"test:{secrets.token_hex(4)}:audit"


async def test_events_reach_the_stream_in_order_with_their_chain_fields(tmp_path: Path, client: redis.Redis) -> None:
    prefix = new_prefix()
    audit, sink = await open_log(tmp_path, client, prefix)
    for n in range(5):
        emit(audit, n)
    await wait_until(lambda: sink.shipped == 5)
    await audit.close()
    assert await stream_ns(client, prefix) == [0, 1, 2, 3, 4]
    first = (await stream_records(client, prefix))[0]
    assert {"seq", "prev", "hash"} <= first.keys() and first["seq"] == 1


async def test_while_redis_is_down_events_wait_on_disk_and_follow_in_order(
    tmp_path: Path, own_redis_server: RedisServer
) -> None:
    client = redis.Redis.from_url(own_redis_server.url, socket_timeout=1, socket_connect_timeout=1)
    audit, sink = await open_log(tmp_path, client, "ngw:audit")
    emit(audit, 0)
    await wait_until(lambda: sink.shipped == 1)
    own_redis_server.stop()
    for n in range(1, 20):
        emit(audit, n)  # each is on disk before emit returns, Redis or not
    await wait_until(lambda: sink.down is not None)
    own_redis_server.start()
    await wait_until(lambda: sink.shipped == 20, timeout_s=30)
    assert await stream_ns(client, "ngw:audit") == list(range(20))
    await audit.close()
    await client.aclose()


async def test_a_restarted_gateway_ships_what_it_had_not_and_nothing_twice(tmp_path: Path, client: redis.Redis) -> None:
    prefix = new_prefix()
    audit, sink = await open_log(tmp_path, client, prefix)
    for n in range(3):
        emit(audit, n)
    await wait_until(lambda: sink.shipped == 3)
    await audit.close()
    unshipped = AuditLog(ChainedFile(tmp_path, Sealer(), 1 << 20), stdout=False)  # as if it died before shipping
    await unshipped.open()
    for n in range(3, 6):
        emit(unshipped, n)
    await unshipped.close()
    audit, sink = await open_log(tmp_path, client, prefix)
    await wait_until(lambda: sink.shipped == 6)
    await audit.close()
    assert await stream_ns(client, prefix) == list(range(6))


async def test_the_stream_and_its_indexes_are_capped(tmp_path: Path, client: redis.Redis) -> None:
    prefix = new_prefix()
    audit, sink = await open_log(tmp_path, client, prefix, max_events=100)
    for n in range(600):
        emit(audit, n)
    await wait_until(lambda: sink.shipped == 600)
    await audit.close()
    assert 100 <= await client.xlen(prefix) < 600  # MAXLEN ~ trims whole nodes, so a little over
    assert await client.zcard(f"{prefix}:u:alice") == 100


async def test_search_by_user_pages_newest_first_through_the_index(tmp_path: Path, client: redis.Redis) -> None:
    prefix = new_prefix()
    audit, sink = await open_log(tmp_path, client, prefix)
    for n in range(30):
        emit(audit, n, user="alice" if n % 3 else "bob")
    await wait_until(lambda: sink.shipped == 30)
    first = await sink.search(Filter(user="bob"), limit=4)
    second = await sink.search(Filter(user="bob"), cursor=first.next_cursor, limit=100)
    await audit.close()
    assert [e["details"]["n"] for e in first.events] == [27, 24, 21, 18]  # type: ignore[index]
    assert [e["details"]["n"] for e in second.events] == [15, 12, 9, 6, 3, 0]  # type: ignore[index]
    assert second.next_cursor is None


async def test_search_without_an_index_walks_the_stream_with_every_filter(tmp_path: Path, client: redis.Redis) -> None:
    prefix = new_prefix()
    audit, sink = await open_log(tmp_path, client, prefix)
    for n in range(10):
        emit(audit, n, user="carol" if n == 7 else "alice")
    await wait_until(lambda: sink.shipped == 10)
    page = await sink.search(Filter(text="CAROL", action="notebook.*"))
    await audit.close()
    assert [e["actor"] for e in page.events] == ["carol"] and page.next_cursor is None


async def test_stop_returns_even_when_its_cancel_lands_in_a_redis_command(tmp_path: Path, client: redis.Redis) -> None:
    """On Python 3.11 a cancel that arrives as redis-py finishes sending a command is lost (asyncio.wait_for);
    stop() must end the shipper all the same, or the gateway never finishes shutting down."""
    prefix = new_prefix()
    for run in range(3):  # from the second run on the client's connection is warm: the cancel lands mid-command
        audit, sink = await open_log(tmp_path / str(run), client, prefix)
        for n in range(5):
            emit(audit, n)
        closing = asyncio.create_task(audit.close())
        done, _ = await asyncio.wait({closing}, timeout=30)  # a guard against hanging, not a timing assertion
        assert closing in done, "stop() did not return: the shipper went on after its cancel"
        assert sink.shipped == 5


async def test_a_rare_match_pages_short_with_a_cursor_once_the_scan_budget_is_spent(
    tmp_path: Path, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.audit.query.SCAN_BUDGET", 1500)
    prefix = new_prefix()
    audit, sink = await open_log(tmp_path, client, prefix)
    for n in range(2400):
        emit(audit, n, user="carol" if n == 0 else "alice")  # the one carol is the oldest event
    await wait_until(lambda: sink.shipped == 2400, timeout_s=30)
    await audit.close()
    # Through the stream (no user, namespace or notebook to index by): chunks of 1000.
    first = await sink.search(Filter(text="CAROL"))
    assert (first.events, first.scanned) == ([], 2000) and first.next_cursor is not None
    second = await sink.search(Filter(text="CAROL"), cursor=first.next_cursor)
    assert [e["actor"] for e in second.events] == ["carol"] and second.next_cursor is None
    # Through alice's index, for words none of her events hold.
    first = await sink.search(Filter(user="alice", text="no such words"))
    assert (first.events, first.scanned) == ([], 2000) and first.next_cursor is not None
    second = await sink.search(Filter(user="alice", text="no such words"), cursor=first.next_cursor)
    assert (second.events, second.scanned, second.next_cursor) == ([], 399, None)
