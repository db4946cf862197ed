"""The hash chain: each stored event carries `seq`, `prev` (the previous event's hash) and its own
`hash`, SHA-256 (or HMAC-SHA-256 with a key) over the canonical JSON of everything else.

Canonical JSON is sorted keys, no spaces and ASCII only: control characters, CR and LF inside a
value are escaped, so no value can end a line or start a forged one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64  # the `prev` of the first event of a chain
SHA256, HMAC_SHA256 = "sha256", "hmac-sha256"
CHAIN_FIELDS = ("seq", "prev", "alg", "hash")


def canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


class Sealer:
    """Computes event hashes: SHA-256, or HMAC-SHA-256 when a key is given (then nobody without the
    key can rewrite the files and recompute a chain that verifies)."""

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key or None
        self.alg = HMAC_SHA256 if self.key else SHA256

    def digest(self, body: str) -> str:
        if self.key is None:
            return hashlib.sha256(body.encode()).hexdigest()
        return hmac.new(self.key, body.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Sealed:
    seq: int
    hash: str
    line: bytes  # canonical JSON and "\n"


def seal(record: dict[str, object], seq: int, prev: str, sealer: Sealer) -> Sealed:
    """`record` linked after `prev` as event number `seq`: the line to append."""
    body = {**record, "seq": seq, "prev": prev, "alg": sealer.alg}
    digest = sealer.digest(canonical(body))
    body["hash"] = digest
    return Sealed(seq, digest, (canonical(body) + "\n").encode())


class BadLine(Exception):
    """A stored line that is not an event this gateway wrote, unaltered."""


def check(line: bytes, sealer: Sealer | None) -> dict[str, Any]:
    """Parse a stored line (without its newline) and check that it is canonical and that its hash
    matches its content. `sealer` None checks plain SHA-256 lines and refuses HMAC ones."""
    try:
        record = json.loads(line)
    except ValueError:
        raise BadLine("not JSON") from None
    if not isinstance(record, dict) or not all(name in record for name in CHAIN_FIELDS):
        raise BadLine("not a chained audit event")
    if canonical(record).encode() != line:
        raise BadLine("not in canonical form (edited by hand?)")
    alg = record["alg"]
    if sealer is None:
        if alg != SHA256:
            raise MissingKey(f"events are sealed with {alg}; the key is needed to check them")
        sealer = Sealer()
    elif alg != sealer.alg:
        raise BadLine(f"sealed with {alg}, expected {sealer.alg}")
    body = {name: value for name, value in record.items() if name != "hash"}
    if not hmac.compare_digest(sealer.digest(canonical(body)), str(record["hash"])):
        raise BadLine("its hash does not match its content")
    if not isinstance(record["seq"], int) or not isinstance(record["prev"], str):
        raise BadLine("malformed seq or prev")
    return record


class MissingKey(BadLine):
    """HMAC-sealed events, and no key to check them with."""
