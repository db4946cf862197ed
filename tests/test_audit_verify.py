"""`verify()`: an untouched log passes (torn last lines included); each kind of tampering is named
with its file and line."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.audit.chain import Sealer, canonical
from gateway.audit.filesink import ChainedFile
from gateway.audit.verify import verify


def write_log(directory: Path, count: int, *, key: bytes | None = None, rotate_bytes: int = 1 << 20) -> list[Path]:
    """`count` events written by the real writer; returns the files, oldest first."""
    file = ChainedFile(directory, Sealer(key), rotate_bytes)
    file.open()
    for n in range(count):
        assert file.append({"action": "notebook.access", "actor": f"user{n % 3}", "details": {"n": n}})
    file.close()
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
