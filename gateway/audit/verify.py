"""`verify(directory)`: walk the audit files in order and report the first event that was altered,
removed or inserted (file and line), or confirm the chain is whole.

A torn last line of a file (a crash during a write, never acknowledged) is reported as torn, not
as tampering. Two things the files cannot show by themselves, events cut from the end and (without
an HMAC key) a chain rewritten from some event on, are caught by holding the files against what was
kept elsewhere: anchors (`SEQ:HASH` of an earlier verify, kept by a SIEM) and the Redis stream copy.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .chain import GENESIS, BadLine, MissingKey, Sealer, check
from .segments import segments

# "missing_key" and "unchecked": the log could not be checked (exit 2); the others: it was tampered with.
ProblemKind = Literal["altered", "removed", "inserted", "rewritten", "truncated", "missing_key", "unchecked"]
ANCHOR = re.compile(r"([1-9][0-9]*):([0-9a-f]{64})")


@dataclass(frozen=True, slots=True)
class Problem:
    kind: ProblemKind
    file: str  # "" when the problem has no place in the files (events cut from the end)
    line: int
    message: str

    def __str__(self) -> str:
        where = f"{self.file} line {self.line}: " if self.file else ""
        return f"{self.kind.upper()}: {where}{self.message}"


@dataclass(frozen=True, slots=True)
class Anchor:
    """An event's `seq` and `hash` kept out of reach of whoever can write the files; written `SEQ:HASH`."""

    seq: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> Anchor:
        match = ANCHOR.fullmatch(text.strip().lower())
        if match is None:
            raise ValueError(f"{text!r} is not SEQ:HASH (an event number and 64 hex digits)")
        return cls(int(match.group(1)), match.group(2))

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"


@dataclass(frozen=True, slots=True)
class CopiedEvent:
    hash: str
    line_digest: bytes  # SHA-256 of the stored line: compares content without keeping every line


@dataclass
class StreamCopy:
    """What the Redis stream holds of one directory's chain. Read it *before* the files: the shipper
    reads the files, so every event in it was in the files first, and one they now lack was cut."""

    chain_id: str
    events: dict[int, CopiedEvent] = field(default_factory=dict)
    shipped: int | None = None  # the seq Redis recorded shipping up to; None: it never heard of this chain
    unlabelled: int = 0  # entries of an older gateway, which did not say which chain they came from
    unreadable: int = 0  # entries of this chain that are not a stored event

    @property
    def known(self) -> bool:
        return self.shipped is not None or bool(self.events)


@dataclass
class Report:
    files: int = 0
    events: int = 0
    first_seq: int | None = None
    last_seq: int = 0
    last_hash: str = GENESIS
    last_time: str = ""
    alg: str = ""
    last_place: tuple[str, int] = ("", 0)  # file and line of the last event
    notes: list[str] = field(default_factory=list)  # torn lines, a chain that begins after seq 1
    problem: Problem | None = None
    anchors: list[Anchor] = field(default_factory=list)  # the anchors that matched
    compared: list[int] = field(default_factory=list)  # seqs found in the files and the stream copy alike

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def anchor(self) -> Anchor | None:
        """The last event's anchor, to keep elsewhere and pass back to a later verify."""
        return Anchor(self.last_seq, self.last_hash) if self.events else None


def verify(
    directory: Path,
    key: bytes | None = None,
    *,
    complete: bool = False,
    anchors: Sequence[Anchor] = (),
    copy: StreamCopy | None = None,
) -> Report:
    """Check every event in `directory`. `complete`: the chain must start at event 1 (no file archived).
    Each anchor must name an event of the files with its exact hash; every event of `copy` must be in
    the files with the same hash and content, unless it is older than the files' first event."""
    sealer = Sealer(key) if key else None
    report = Report()
    expected = _Expected(anchors, copy)
    files = segments(directory)
    if not files:
        report.notes.append(f"no audit files in {directory}")
    previous: tuple[str, int] | None = None  # (file, line) of the last good event
    for number, path in files:
        report.files += 1
        with open(path, "rb") as file:
            data = file.read()
        lines = data.split(b"\n")
        tail = lines.pop()  # after the last newline: empty, or a torn line
        for index, line in enumerate(lines, start=1):
            problem = _check_line(report, sealer, path.name, index, line, previous, complete)
            if problem is None:  # the event is sound in itself: now hold it against what was kept of it
                problem = expected.match(report, line)
            if problem is not None:
                report.problem = problem
                return report
            previous = (path.name, index)
        if tail:
            later = number != files[-1][0]
            report.notes.append(
                f"TORN: {path.name} line {len(lines) + 1}: an incomplete last line ({len(tail)} bytes), "
                "left by a crash during a write; that event was never acknowledged"
                + ("; the chain continues in the next file" if later else "")
            )
    report.problem = expected.missing(report)
    return report


class _Expected:
    """The anchors and the stream copy, matched against each event as the walk reaches it."""

    def __init__(self, anchors: Sequence[Anchor], copy: StreamCopy | None) -> None:
        self.anchors: dict[int, list[Anchor]] = {}
        for anchor in anchors:
            self.anchors.setdefault(anchor.seq, []).append(anchor)
        self.copy = copy

    def match(self, report: Report, line: bytes) -> Problem | None:
        """Check the event the walk has just accepted (the report's last) against what was kept of it."""
        seq, digest = report.last_seq, report.last_hash
        name, index = report.last_place
        for anchor in self.anchors.get(seq, ()):
            if anchor.hash != digest:
                return Problem(
                    "rewritten",
                    name,
                    index,
                    f"event {seq} has hash {digest}, not the one of anchor {anchor}: "
                    "the chain was rewritten at or before this event",
                )
            report.anchors.append(anchor)
        copied = self.copy.events.get(seq) if self.copy is not None else None
        if copied is None:
            return None
        if copied.hash != digest:
            return Problem(
                "rewritten",
                name,
                index,
                f"event {seq} has hash {digest}, but the Redis stream holds it with hash {copied.hash}: "
                "the files were rewritten at or before this event",
            )
        if copied.line_digest != hashlib.sha256(line).digest():
            return Problem("altered", name, index, f"event {seq} differs from its copy in the Redis stream")
        report.compared.append(seq)
        return None

    def missing(self, report: Report) -> Problem | None:
        """After a clean walk: what was kept but is not in the files (cut from the end, or archived)."""
        first = report.first_seq if report.events else None
        for seq in sorted(self.anchors):
            anchor = self.anchors[seq][0]
            if seq > report.last_seq:
                return Problem(
                    "truncated",
                    "",
                    0,
                    f"anchor {anchor} names an event after the last one in the files ({report.last_seq}): "
                    f"event(s) {report.last_seq + 1}-{seq} at least were cut from the end",
                )
            if first is None or seq < first:
                return Problem(
                    "removed",
                    "",
                    0,
                    f"anchor {anchor} names an event before the first one in the files "
                    f"({first if first is not None else 'none'}): its file was archived or removed",
                )
        return self._missing_from_copy(report, first)

    def _missing_from_copy(self, report: Report, first: int | None) -> Problem | None:
        copy = self.copy
        if copy is None:
            return None
        if not copy.known:
            return Problem(
                "unchecked",
                "",
                0,
                f"Redis holds nothing of chain {copy.chain_id} (never shipped there, or the directory's "
                "chain-id file was replaced): there is no copy to compare the files with",
            )
        later = sorted(seq for seq in copy.events if seq > report.last_seq)
        end = max([*later, copy.shipped or 0])
        if end > report.last_seq:
            held = f"the stream holds {len(later)} of them" if later else "the stream no longer holds them"
            ends = f"the files end at event {report.last_seq}" if report.events else "the files hold no event"
            return Problem(
                "truncated",
                "",
                0,
                f"{ends}, but chain {copy.chain_id} reached Redis up to event "
                f"{end} ({held}): {end - report.last_seq} event(s) ({report.last_seq + 1}-{end}) were cut "
                "from the end of the files",
            )
        older = sum(1 for seq in copy.events if first is None or seq < first)
        if older:
            report.notes.append(
                f"{older} event(s) of this chain in the Redis stream are older than the files' first event "
                "(archived files): not compared"
            )
        if copy.unlabelled:
            report.notes.append(
                f"{copy.unlabelled} stream entries carry no chain id (shipped by an older gateway): not compared"
            )
        if copy.unreadable:
            report.notes.append(f"{copy.unreadable} stream entries of this chain are not audit events: ignored")
        return None


def _check_line(
    report: Report,
    sealer: Sealer | None,
    name: str,
    index: int,
    line: bytes,
    previous: tuple[str, int] | None,
    complete: bool,
) -> Problem | None:
    try:
        record = check(line, sealer)
    except MissingKey as exc:
        return Problem("missing_key", name, index, str(exc))
    except BadLine as exc:
        return Problem("altered", name, index, f"this event was altered: {exc}")
    seq, prev = record["seq"], record["prev"]
    if report.first_seq is None:
        report.first_seq = seq
        if seq == 1 and prev != GENESIS:
            return Problem("altered", name, index, "the first event does not start a chain")
        if seq != 1:
            if complete:
                return Problem("removed", name, index, f"events 1-{seq - 1} are missing: the chain begins at {seq}")
            report.notes.append(f"the chain begins at event {seq} in {name} (older files were archived or removed)")
    elif prev != report.last_hash:
        where = f"{previous[0]} line {previous[1]}" if previous else "the previous line"
        if seq > report.last_seq + 1:
            gone = seq - report.last_seq - 1
            return Problem(
                "removed", name, index, f"{gone} event(s) ({report.last_seq + 1}-{seq - 1}) removed before it"
            )
        if seq == report.last_seq:
            return Problem("inserted", name, index, f"two events are numbered {seq}: the one at {where} was inserted")
        if seq < report.last_seq:
            return Problem(
                "inserted", name, index, f"event {seq} after event {report.last_seq}: inserted or moved here"
            )
        return Problem("altered", name, index, f"it does not follow the event at {where}: that event was altered")
    elif seq != report.last_seq + 1:
        return Problem("altered", name, index, f"its number {seq} does not follow {report.last_seq}")
    report.events += 1
    report.last_place = (name, index)
    report.last_seq, report.last_hash = seq, str(record["hash"])
    report.last_time, report.alg = str(record.get("time", "")), str(record["alg"])
    return None
