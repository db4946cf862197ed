"""The audit directory's files: `audit-00000001.jsonl`, `audit-00000002.jsonl`, … in chain order,
and `ChainReader`, which reads their complete lines from any event on (for Redis and the index).

A line counts only once its newline is on disk; bytes after the last newline of a file are a
torn write from a crash, and the writer never appends after them (it starts the next file).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SEGMENT = re.compile(r"audit-(\d{8})\.jsonl")
CHUNK = 256 * 1024


def segment_path(directory: Path, number: int) -> Path:
    return directory / f"audit-{number:08d}.jsonl"


def segments(directory: Path) -> list[tuple[int, Path]]:
    """The audit files in `directory`, oldest first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = [(int(m.group(1)), directory / name) for name in names if (m := SEGMENT.fullmatch(name))]
    return sorted(found)


def complete_lines(path: Path, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """(offset, line without its newline) for each complete line from `offset` on."""
    with open(path, "rb") as file:
        file.seek(offset)
        pending = b""
        start = offset
        while chunk := file.read(CHUNK):
            pending += chunk
            lines = pending.split(b"\n")
            pending = lines.pop()
            for line in lines:
                yield start, line
                start += len(line) + 1


def tail(path: Path) -> tuple[list[bytes], bool]:
    """The last complete lines of a file (at most a chunk's worth, newest last) and whether the
    file ends in a torn line."""
    with open(path, "rb") as file:
        size = file.seek(0, os.SEEK_END)
        window = CHUNK
        while True:
            start = max(0, size - window)
            file.seek(start)
            data = file.read(size - start)
            torn = bool(data) and not data.endswith(b"\n")
            body = data[: data.rfind(b"\n") + 1] if torn else data
            lines = body.split(b"\n")[:-1] if body else []
            if start > 0:
                lines = lines[1:]  # the first may be cut by the window
            if lines or start == 0:
                return lines, torn
            window *= 4


def first_seq(path: Path) -> int | None:
    """The `seq` of a file's first complete event, or None when it has none."""
    for _, line in complete_lines(path):
        try:
            seq = json.loads(line).get("seq")
        except (ValueError, AttributeError):
            return None
        return seq if isinstance(seq, int) else None
    return None


@dataclass(frozen=True, slots=True)
class Stored:
    """One stored event: its place in the files and its line."""

    seq: int
    segment: int
    offset: int
    line: bytes
    record: dict[str, object]


class ChainReader:
    """Reads stored events in chain order. `seek(seq)` positions after event `seq`; `read()` returns
    what has been completely written since, and can be called again as the files grow."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.segment = 0  # 0: not positioned yet
        self.offset = 0
        self.last_seq = 0

    def seek(self, after_seq: int) -> None:
        files = segments(self.directory)
        chosen = files[0][0] if files else 0
        for number, path in files:
            first = first_seq(path)
            if first is not None and first <= after_seq + 1:
                chosen = number
        self.segment, self.offset, self.last_seq = chosen, 0, after_seq

    def position(self, segment: int, offset: int, last_seq: int) -> None:
        self.segment, self.offset, self.last_seq = segment, offset, last_seq

    def read(self, limit: int = 1000) -> list[Stored]:
        found: list[Stored] = []
        if self.segment == 0:
            self.seek(self.last_seq)
        while len(found) < limit:
            # List before reading: a file with a newer one beside it is finished, so reading it to its
            # end means nothing more will come (the writer only appends to the newest file).
            files = segments(self.directory)
            later = [number for number, _ in files if number > self.segment]
            current = [path for number, path in files if number == self.segment]
            if current:
                for offset, line in complete_lines(current[0], self.offset):
                    self.offset = offset + len(line) + 1
                    try:
                        record = json.loads(line)
                        seq = record["seq"]
                    except (ValueError, KeyError, TypeError):
                        continue  # damaged: `audit verify` reports it; readers go on
                    if not isinstance(seq, int) or seq <= self.last_seq:
                        continue
                    self.last_seq = seq
                    found.append(Stored(seq, self.segment, offset, line, record))
                    if len(found) >= limit:
                        return found
            if not later:
                return found
            self.segment, self.offset = later[0], 0  # what is left in the old file is a torn tail
        return found
