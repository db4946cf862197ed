"""`notebook-gateway audit verify` and `audit query`, as an operator runs them."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest
import redis.asyncio as redis

from gateway.audit import AuditEvent, AuditLog
from gateway.audit.chain import Sealer
from gateway.audit.filesink import ChainedFile
from gateway.audit.redis_sink import RedisSink
from gateway.cli.main import main

from .conftest import RedisServer
from .redis_sentinel import MASTER_NAME, SentinelSet, sentinel_set  # noqa: F401  (a fixture)


def write(directory: Path, count: int, key: bytes | None = None) -> Path:
    file = ChainedFile(directory, Sealer(key), 1 << 20)
    file.open()
    for n in range(count):
        user = "alice" if n % 2 else "bob"
        event = AuditEvent(action="notebook.access", outcome="allowed", actor=user, namespace=user, details={"n": n})
        file.append(event.to_record())
    file.close()
    return directory / "audit-00000001.jsonl"


def test_verify_passes_an_untouched_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, 10)
    assert main(["audit", "verify", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "10 event(s) (1-10)" in out and "OK: the chain is whole" in out


def test_verify_fails_naming_the_altered_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, 10)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"outcome":"allowed"', b'"outcome":"denied"')
    path.write_bytes(b"".join(lines))
    assert main(["audit", "verify", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "ALTERED: audit-00000001.jsonl line 4" in captured.out and "tampered" in captured.err


def test_verify_needs_the_key_of_an_hmac_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "audit", 3, key=b"a-secret-key")
    (tmp_path / "key").write_text("a-secret-key\n")
    assert main(["audit", "verify", str(tmp_path / "audit"), "--key-file", str(tmp_path / "key")]) == 0
    assert main(["audit", "verify", str(tmp_path / "audit")]) == 2
    assert "key" in capsys.readouterr().err


def test_query_prints_json_lines_newest_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, 10)
    assert main(["audit", "query", "--dir", str(tmp_path), "--user", "alice", "--limit", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["details"]["n"] for line in lines] == [9, 7, 5]


def test_query_prints_csv_with_every_match(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, 2500)
    assert (
        main(["audit", "query", "--dir", str(tmp_path), "--namespace", "bob", "--limit", "0", "--format", "csv"]) == 0
    )
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1250 and {row["actor"] for row in rows} == {"bob"}


def test_query_refuses_a_bad_filter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "query", "--dir", str(tmp_path), "--since", "soon"]) == 2
    assert "--since" in capsys.readouterr().err


def test_query_reads_the_cluster_wide_stream_from_redis(
    tmp_path: Path, own_redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    async def ship() -> None:
        client = redis.Redis.from_url(own_redis_server.url)
        file = ChainedFile(tmp_path, Sealer(), 1 << 20)
        audit = AuditLog(file, stdout=False)
        audit.add_sink(RedisSink(client, tmp_path, chain_id=lambda: file.chain_id, latest_seq=lambda: file.seq))
        await audit.open()
        for user in ("alice", "bob", "alice"):
            audit.emit(AuditEvent(action="auth.login", outcome="allowed", actor=user))
        await audit.close()  # ships what is left before it returns
        await client.aclose()

    asyncio.run(ship())
    assert main(["audit", "query", "--redis", own_redis_server.url, "--user", "alice", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(row["actor"], row["seq"]) for row in rows] == [("alice", "3"), ("alice", "1")]


def ship(directory: Path, url: str, count: int) -> None:
    """`count` events through the real AuditLog and RedisSink into the stream `ngw:audit` at `url`."""

    async def run() -> None:
        client = redis.Redis.from_url(url)
        file = ChainedFile(directory, Sealer(), 1 << 20)
        audit = AuditLog(file, stdout=False)
        audit.add_sink(RedisSink(client, directory, chain_id=lambda: file.chain_id, latest_seq=lambda: file.seq))
        await audit.open()
        for n in range(count):
            audit.emit(AuditEvent(action="notebook.access", outcome="allowed", actor="alice", details={"n": n}))
        await audit.close()  # ships what is left before it returns
        await client.aclose()

    asyncio.run(run())


def cut_last(path: Path, count: int) -> None:
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:-count]))


def test_verify_prints_an_anchor_that_a_later_verify_holds_the_files_to(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, 10)
    assert main(["audit", "verify", str(tmp_path)]) == 0
    [anchor] = [
        line.removeprefix("anchor: ") for line in capsys.readouterr().out.splitlines() if line.startswith("anchor: ")
    ]
    assert anchor.startswith("10:")
    assert main(["audit", "verify", str(tmp_path), "--anchor", anchor]) == 0
    assert "anchor 10 matches" in capsys.readouterr().out
    cut_last(path, 2)
    assert main(["audit", "verify", str(tmp_path)]) == 0  # the files alone cannot show it
    capsys.readouterr()
    assert main(["audit", "verify", str(tmp_path), "--anchor", anchor]) == 1
    captured = capsys.readouterr()
    assert f"TRUNCATED: anchor {anchor}" in captured.out and "9-10" in captured.out and "tampered" in captured.err


def test_verify_refuses_a_malformed_anchor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, 3)
    with pytest.raises(SystemExit) as exit:
        main(["audit", "verify", str(tmp_path), "--anchor", "3:not-a-hash"])
    assert exit.value.code == 2 and "SEQ:HASH" in capsys.readouterr().err


def test_verify_against_redis_counts_what_it_compared_and_catches_a_cut(
    tmp_path: Path, own_redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    ship(tmp_path, own_redis_server.url, 12)
    assert main(["audit", "verify", str(tmp_path), "--redis", own_redis_server.url]) == 0
    out = capsys.readouterr().out
    assert "compared 12 of 12 event(s) (1-12) with the Redis stream" in out and "OK: the chain is whole" in out
    cut_last(tmp_path / "audit-00000001.jsonl", 3)
    assert main(["audit", "verify", str(tmp_path), "--redis", own_redis_server.url]) == 1
    captured = capsys.readouterr()
    assert "TRUNCATED: the files end at event 9" in captured.out and "3 event(s) (10-12)" in captured.out
    assert "tampered" in captured.err


def test_verify_against_a_trimmed_stream_compares_what_is_left(
    tmp_path: Path, own_redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    ship(tmp_path, own_redis_server.url, 300)

    async def trim() -> None:
        client = redis.Redis.from_url(own_redis_server.url)
        await client.xtrim("ngw:audit", maxlen=50, approximate=False)  # as retention does, oldest first
        await client.aclose()

    asyncio.run(trim())
    assert main(["audit", "verify", str(tmp_path), "--redis", own_redis_server.url]) == 0
    out = capsys.readouterr().out
    assert "compared 50 of 300 event(s) (251-300)" in out and "the other 250 are not in it" in out


def test_verify_against_redis_that_does_not_answer_cannot_pass(
    tmp_path: Path, own_redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    ship(tmp_path, own_redis_server.url, 5)
    own_redis_server.stop()
    assert main(["audit", "verify", str(tmp_path), "--redis", own_redis_server.url]) == 2
    captured = capsys.readouterr()
    assert "cannot check against Redis" in captured.err and "OK" not in captured.out


def test_verify_against_redis_cannot_pass_a_chain_redis_never_saw(
    tmp_path: Path, own_redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    ship(tmp_path, own_redis_server.url, 5)
    (tmp_path / "chain-id").write_text("feedfacefeedface\n")
    assert main(["audit", "verify", str(tmp_path), "--redis", own_redis_server.url]) == 2
    captured = capsys.readouterr()
    assert "UNCHECKED: Redis holds nothing of chain feedfacefeedface" in captured.out and "OK" not in captured.out


def test_a_bare_redis_option_uses_the_gateways_own_redis_settings_even_sentinel(
    tmp_path: Path,
    sentinel_set: SentinelSet,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ship(tmp_path, f"redis://127.0.0.1:{sentinel_set.master_port}/0", 4)
    # As on a gateway pod: no URL to copy out of a Secret, the settings say where the master is.
    monkeypatch.setenv("GATEWAY_REDIS_URL", "redis://unused/0")
    monkeypatch.setenv("GATEWAY_REDIS_SENTINELS", sentinel_set.sentinels)
    monkeypatch.setenv("GATEWAY_REDIS_SENTINEL_MASTER", MASTER_NAME)
    assert main(["audit", "verify", str(tmp_path), "--redis"]) == 0
    assert "compared 4 of 4 event(s) (1-4) with the Redis stream" in capsys.readouterr().out
    assert main(["audit", "query", "--redis", "--user", "alice", "--limit", "2"]) == 0
    assert [json.loads(line)["seq"] for line in capsys.readouterr().out.splitlines()] == [4, 3]
    monkeypatch.setenv("GATEWAY_REDIS_SENTINELS", "not-an-address")
    assert main(["audit", "query", "--redis"]) == 2  # bad settings are reported, not guessed around
    assert "GATEWAY_REDIS_SENTINELS" in capsys.readouterr().err
