"""`verify(directory)`: walk the audit files in order and report the first event that was altered,
removed or inserted (file and line), or confirm the chain is whole.

A torn last line of a file (a crash during a write, never acknowledged) is reported as torn, not
as tampering. Events removed from the very end cannot be seen in the files alone: compare the
last `seq` and `hash` printed here with a copy kept elsewhere (the Redis stream, your SIEM).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .chain import GENESIS, BadLine, MissingKey, Sealer, check
from .segments import segments

ProblemKind = Literal["altered", "removed", "inserted", "missing_key"]


@dataclass(frozen=True, slots=True)
class Problem:
    kind: ProblemKind
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.kind.upper()}: {self.file} line {self.line}: {self.message}"


@dataclass
class Report:
    files: int = 0
    events: int = 0
    first_seq: int | None = None
    last_seq: int = 0
    last_hash: str = GENESIS
    last_time: str = ""
    alg: str = ""
    notes: list[str] = field(default_factory=list)  # torn lines, a chain that begins after seq 1
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(directory: Path, key: bytes | None = None, *, complete: bool = False) -> Report:
    """Check every event in `directory`. `complete`: the chain must start at event 1 (no file archived)."""
    sealer = Sealer(key) if key else None
    report = Report()
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
    return report


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
    report.last_seq, report.last_hash = seq, str(record["hash"])
    report.last_time, report.alg = str(record.get("time", "")), str(record["alg"])
    return None
