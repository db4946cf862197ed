"""`verify()`: an untouched log passes (torn last lines included); each kind of tampering is named
with its file and line; events cut from the end and a tail rewritten with plain hashes are caught
against anchors and against the Redis stream copy (a real redis-server, shipped by the real sink)."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as redis

from gateway.audit import AuditEvent
from gateway.audit.chain import CHAIN_FIELDS, Sealer, canonical, seal
from gateway.audit.filesink import ChainedFile
from gateway.audit.stream_copy import read_chain_id, read_stream_copy
from gateway.audit.verify import Anchor, StreamCopy, verify

from .conftest import RedisServer
from .test_audit_redis_sink import open_log


def write_log(directory: Path, count: int, *, key: bytes | None = None, rotate_bytes: int = 1 << 20) -> list[Path]:
    """`count` events written by the real writer; returns the files, oldest first."""
    file = ChainedFile(directory, Sealer(key), rotate_bytes)
    file.open()
    for n in range(count):
        assert file.append({"action": "notebook.access", "actor": f"user{n % 3}", "details": {"n": n}})
    file.close()
    return sorted(directory.glob("audit-*.jsonl"))


def files_in(directory: Path) -> list[Path]:
    return sorted(directory.glob("audit-*.jsonl"))


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_an_untouched_log_verifies_across_rotated_files(tmp_path: Path) -> None:
    files = write_log(tmp_path, 60, rotate_bytes=4096)
    assert len(files) > 2
    report = verify(tmp_path)
    assert report.ok and (report.events, report.first_seq, report.last_seq) == (60, 1, 60)
    assert report.notes == []


def test_an_edited_event_is_reported_with_its_file_and_line(tmp_path: Path) -> None:
    [path] = write_log(tmp_path, 10)
    lines = lines_of(path)
    lines[4] = lines[4].replace(b'"actor":"user1"', b'"actor":"admin"')
    path.write_bytes(b"".join(lines))
    report = verify(tmp_path)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.file, report.problem.line) == ("altered", path.name, 5)


def test_an_edit_with_a_recomputed_hash_is_caught_by_the_next_event(tmp_path: Path) -> None:
    [path] = write_log(tmp_path, 10)
    lines = lines_of(path)
    record = json.loads(lines[4])
    record["actor"] = "admin"
    body = {k: v for k, v in record.items() if k != "hash"}
    record["hash"] = Sealer().digest(canonical(body))  # a forger without a key can do this much
    lines[4] = (canonical(record) + "\n").encode()
    path.write_bytes(b"".join(lines))
    problem = verify(tmp_path).problem
    assert problem is not None and (problem.kind, problem.line) == ("altered", 6)
    assert f"{path.name} line 5" in problem.message


def test_a_removed_event_is_reported_where_the_gap_is(tmp_path: Path) -> None:
    [path] = write_log(tmp_path, 10)
    lines = lines_of(path)
    del lines[6]
    path.write_bytes(b"".join(lines))
    problem = verify(tmp_path).problem
    assert problem is not None and (problem.kind, problem.line) == ("removed", 7)
    assert "(7-7)" in problem.message


def test_a_copied_in_event_is_reported_as_inserted(tmp_path: Path) -> None:
    [path] = write_log(tmp_path, 10)
    lines = lines_of(path)
    lines.insert(8, lines[2])
    path.write_bytes(b"".join(lines))
    problem = verify(tmp_path).problem
    assert problem is not None and (problem.kind, problem.file, problem.line) == ("inserted", path.name, 9)


def test_a_removed_middle_file_is_caught(tmp_path: Path) -> None:
    files = write_log(tmp_path, 60, rotate_bytes=4096)
    files[1].unlink()
    problem = verify(tmp_path).problem
    assert problem is not None and (problem.kind, problem.file, problem.line) == ("removed", files[2].name, 1)


def test_a_torn_last_line_is_reported_as_torn_not_tampering(tmp_path: Path) -> None:
    [path] = write_log(tmp_path, 5)
    with open(path, "ab") as file:
        file.write(b'{"action":"notebook.cre')  # a crash in the middle of a write
    report = verify(tmp_path)
    assert report.ok and report.events == 5
    assert len(report.notes) == 1 and report.notes[0].startswith(f"TORN: {path.name} line 6")


def test_hmac_sealed_events_need_the_key_and_the_right_one(tmp_path: Path) -> None:
    write_log(tmp_path, 5, key=b"k" * 32)
    assert verify(tmp_path, b"k" * 32).ok
    missing = verify(tmp_path).problem
    assert missing is not None and missing.kind == "missing_key"
    wrong = verify(tmp_path, b"x" * 32).problem
    assert wrong is not None and (wrong.kind, wrong.line) == ("altered", 1)


def test_archived_older_files_are_a_note_unless_the_chain_must_be_complete(tmp_path: Path) -> None:
    files = write_log(tmp_path, 60, rotate_bytes=4096)
    files[0].unlink()
    report = verify(tmp_path)
    assert report.ok and "begins at event" in report.notes[0]
    strict = verify(tmp_path, complete=True).problem
    assert strict is not None and strict.kind == "removed"


# -- what the files alone cannot show: events cut from the end, and a tail rewritten with plain hashes --


async def ship_log(
    directory: Path,
    client: redis.Redis,
    prefix: str,
    count: int,
    *,
    max_events: int = 1_000_000,
    rotate_bytes: int = 1 << 20,
) -> None:
    """`count` events through the real AuditLog, its file and the RedisSink, shipped before this returns."""
    audit, sink = await open_log(directory, client, prefix, rotate_bytes=rotate_bytes, max_events=max_events)
    for n in range(count):
        audit.emit(AuditEvent(action="notebook.access", outcome="allowed", actor="alice", details={"n": n}))
    await audit.close()  # ships what is left before it returns
    assert audit.file is not None and sink.shipped == audit.file.seq


async def stream_copy(client: redis.Redis, directory: Path, prefix: str) -> StreamCopy:
    chain_id = read_chain_id(directory)
    assert chain_id is not None
    return await read_stream_copy(client, chain_id, prefix=prefix)


def cut_last(path: Path, count: int) -> None:
    path.write_bytes(b"".join(lines_of(path)[:-count]))


def rewrite_from(path: Path, index: int) -> None:
    """What a forger without a key can do: change events from line `index` (0-based) on and re-seal them and
    every later one with plain SHA-256, so the chain in the files is whole again."""
    lines = lines_of(path)
    prev = json.loads(lines[index])["prev"]
    for i in range(index, len(lines)):
        record = json.loads(lines[i])
        body = {k: v for k, v in record.items() if k not in CHAIN_FIELDS}
        body["actor"] = "nobody"
        sealed = seal(body, record["seq"], prev, Sealer())
        lines[i], prev = sealed.line, sealed.hash
    path.write_bytes(b"".join(lines))


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_server.url)
    yield connection
    await connection.aclose()


def new_prefix() -> str:
    return f"test:{secrets.token_hex(4)}:audit"


async def test_an_untouched_log_matches_its_copy_among_other_replicas_chains(
    tmp_path: Path, client: redis.Redis
) -> None:
    prefix = new_prefix()
    await ship_log(tmp_path / "a", client, prefix, 30)
    await ship_log(tmp_path / "b", client, prefix, 45)  # another replica: its own chain, numbered from 1 too
    await ship_log(tmp_path / "a", client, prefix, 5)  # the first one again, after a restart
    report = verify(tmp_path / "a", copy=await stream_copy(client, tmp_path / "a", prefix))
    assert report.ok, report.problem
    assert report.compared == list(range(1, 36)) and report.notes == []


async def test_events_cut_from_the_end_are_caught_by_the_stream_copy(tmp_path: Path, client: redis.Redis) -> None:
    prefix = new_prefix()
    await ship_log(tmp_path, client, prefix, 30)
    [path] = files_in(tmp_path)
    copy = await stream_copy(client, tmp_path, prefix)
    cut_last(path, 4)
    assert verify(tmp_path).ok  # the files alone cannot show it
    problem = verify(tmp_path, copy=copy).problem
    assert problem is not None and problem.kind == "truncated"
    assert "the files end at event 26" in problem.message and "4 event(s) (27-30)" in problem.message


async def test_a_cut_beyond_what_the_stream_still_holds_is_caught_by_the_shipped_position(
    tmp_path: Path, client: redis.Redis
) -> None:
    prefix = new_prefix()
    await ship_log(tmp_path, client, prefix, 30)
    await client.xtrim(prefix, maxlen=0)  # the stream forgot every event; Redis still knows how far it got
    [path] = files_in(tmp_path)
    cut_last(path, 2)
    problem = verify(tmp_path, copy=await stream_copy(client, tmp_path, prefix)).problem
    assert problem is not None and problem.kind == "truncated" and "(29-30)" in problem.message


async def test_a_tail_rewritten_with_plain_hashes_is_caught_where_it_begins(
    tmp_path: Path, client: redis.Redis
) -> None:
    prefix = new_prefix()
    await ship_log(tmp_path, client, prefix, 30)
    [path] = files_in(tmp_path)
    copy = await stream_copy(client, tmp_path, prefix)
    rewrite_from(path, 20)
    assert verify(tmp_path).ok  # a whole chain again
    problem = verify(tmp_path, copy=copy).problem
    assert problem is not None and (problem.kind, problem.file, problem.line) == ("rewritten", path.name, 21)
    assert "event 21" in problem.message


@pytest.mark.parametrize("position_lost", [False, True])
async def test_a_cut_log_that_the_gateway_went_on_writing_is_caught(
    tmp_path: Path, client: redis.Redis, position_lost: bool
) -> None:
    prefix = new_prefix()
    await ship_log(tmp_path, client, prefix, 30)
    [path] = files_in(tmp_path)
    cut_last(path, 5)
    if position_lost:  # the new events 26-35 are then shipped beside the old 26-30: the old copy counts
        await client.delete(f"{prefix}:shipped:{read_chain_id(tmp_path)}")
    await ship_log(tmp_path, client, prefix, 10)  # restarted on the cut files: events 26-35 anew
    assert verify(tmp_path).ok
    problem = verify(tmp_path, copy=await stream_copy(client, tmp_path, prefix)).problem
    assert problem is not None and (problem.kind, problem.line) == ("rewritten", 26)


async def test_a_trimmed_stream_is_compared_as_far_as_it_reaches(tmp_path: Path, client: redis.Redis) -> None:
    prefix = new_prefix()
    await ship_log(tmp_path, client, prefix, 600, max_events=100)
    kept = await client.xlen(prefix)
    assert 100 <= kept < 600
    report = verify(tmp_path, copy=await stream_copy(client, tmp_path, prefix))
    assert report.ok, report.problem
    assert report.compared == list(range(600 - kept + 1, 601))


async def test_older_files_archived_beyond_the_stream_are_a_note(tmp_path: Path, client: redis.Redis) -> None:
    prefix = new_prefix()
    await ship_log(tmp_path, client, prefix, 60, rotate_bytes=4096)
    files_in(tmp_path)[0].unlink()
    report = verify(tmp_path, copy=await stream_copy(client, tmp_path, prefix))
    assert report.ok, report.problem
    first = report.first_seq
    assert first is not None and report.compared == list(range(first, 61))
    assert any(f"{first - 1} event(s) of this chain in the Redis stream are older" in note for note in report.notes)


async def test_a_chain_redis_never_heard_of_cannot_be_checked(tmp_path: Path, client: redis.Redis) -> None:
    prefix = new_prefix()
    await ship_log(tmp_path, client, prefix, 10)
    (tmp_path / "chain-id").write_text("0123456789abcdef\n")  # a forger hiding the chain from the comparison
    problem = verify(tmp_path, copy=await stream_copy(client, tmp_path, prefix)).problem
    assert problem is not None and problem.kind == "unchecked"


def test_an_anchor_from_an_earlier_verify_catches_events_cut_since(tmp_path: Path) -> None:
    [path] = write_log(tmp_path, 30)
    anchor = verify(tmp_path).anchor
    assert anchor is not None and Anchor.parse(str(anchor)) == anchor
    middle = Anchor(10, json.loads(lines_of(path)[9])["hash"])
    assert verify(tmp_path, anchors=[middle, anchor]).anchors == [middle, anchor]
    cut_last(path, 3)
    problem = verify(tmp_path, anchors=[middle, anchor]).problem
    assert problem is not None and problem.kind == "truncated" and str(anchor) in problem.message
    assert "28-30" in problem.message


def test_an_anchor_catches_a_tail_rewritten_with_plain_hashes(tmp_path: Path) -> None:
    [path] = write_log(tmp_path, 30)
    anchor = verify(tmp_path).anchor
    assert anchor is not None
    rewrite_from(path, 25)
    problem = verify(tmp_path, anchors=[anchor]).problem
    assert problem is not None and (problem.kind, problem.line) == ("rewritten", 30)
    assert str(anchor) in problem.message


def test_an_anchor_before_the_files_first_event_fails(tmp_path: Path) -> None:
    files = write_log(tmp_path, 60, rotate_bytes=4096)
    anchor = Anchor(1, json.loads(lines_of(files[0])[0])["hash"])
    files[0].unlink()
    problem = verify(tmp_path, anchors=[anchor]).problem
    assert problem is not None and problem.kind == "removed" and str(anchor) in problem.message


@pytest.mark.parametrize("text", ["12", "0:" + "a" * 64, "x:" + "a" * 64, "5:" + "a" * 63, "5:" + "g" * 64])
def test_a_malformed_anchor_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="SEQ:HASH"):
        Anchor.parse(text)
