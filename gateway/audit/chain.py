"""The hash chain: each stored event carries `seq`, `prev` (the previous event's hash) and its own
`hash`, SHA-256 (or HMAC-SHA-256 with a key) over the canonical JSON of everything else.

Canonical JSON is RFC 8785, the JSON Canonicalization Scheme (JCS), made by the `rfc8785` library:
keys sorted by UTF-16 code units, no spaces, strings as UTF-8 with `"`, `\\` and every control
character escaped (so no value can end a line or start a forged one), numbers as ECMAScript prints
them. Any JCS implementation (there is one for most languages) re-creates the bytes that were
hashed; docs/security.md gives the whole recipe. Events written that way carry `"canon":"jcs"`,
inside what is hashed, so it cannot be stripped without breaking the hash.

Events written before (no `canon` field) used Python's `json.dumps(sort_keys=True,
separators=(",", ":"), ensure_ascii=True)`; they are checked in that form, so older chains still
verify, and a chain may hold both (the form changes at an upgrade, the links run on).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, Literal, cast

import rfc8785

GENESIS = "0" * 64  # the `prev` of the first event of a chain
SHA256, HMAC_SHA256 = "sha256", "hmac-sha256"
CHAIN_FIELDS = ("seq", "prev", "alg", "hash")

Form = Literal["jcs", "python-json"]
JCS: Form = "jcs"  # RFC 8785: what new events are written in
PYTHON_JSON: Form = "python-json"  # before: the form of events without a `canon` field
CANON_FIELD = "canon"

# JCS numbers are IEEE doubles: integers beyond this lose precision in every other language.
MAX_SAFE_INTEGER = 2**53 - 1


def canonical(value: object, form: Form = JCS) -> str:
    """`value` in canonical `form`. Raises rfc8785.CanonicalizationError or UnicodeEncodeError for
    what JCS cannot encode (see `jcs_safe`)."""
    if form == PYTHON_JSON:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    if _plain(value):
        # The common case, at the C encoder's speed: without floats, with integers JCS can hold
        # and ASCII keys (so code-point and UTF-16 order agree), Python's encoder writes exactly
        # the JCS text (same escapes, UTF-8 as is). tests/test_audit_canonical.py holds the two
        # against each other and against an independent implementation.
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        text.encode()  # a lone surrogate is not Unicode: UnicodeEncodeError, as the library raises
        return text
    return rfc8785.dumps(cast(Any, value)).decode()  # it checks the types itself


def _plain(value: object) -> bool:
    if isinstance(value, str) or value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER
    if isinstance(value, dict):
        return all(type(key) is str and key.isascii() and _plain(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_plain(item) for item in value)
    return False  # floats, tuples, anything else: the library decides


def jcs_safe(value: object) -> object:
    """`value` with what JCS cannot encode made text: integers beyond 2^53 - 1, NaN and infinities,
    strings with lone surrogates (not Unicode). An event is never dropped for its content."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode()
        return value
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else str(value)
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, dict):
        return {str(jcs_safe(str(key))): jcs_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jcs_safe(item) for item in value]
    return jcs_safe(str(value))


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


def seal(record: dict[str, object], seq: int, prev: str, sealer: Sealer, form: Form = JCS) -> Sealed:
    """`record` linked after `prev` as event number `seq`: the line to append. `form` is JCS except
    in tests that write a chain as older versions did."""
    body = {**record, "seq": seq, "prev": prev, "alg": sealer.alg}
    if form == JCS:
        body[CANON_FIELD] = JCS
        try:
            text = canonical(body)
        except (rfc8785.CanonicalizationError, UnicodeEncodeError):
            safe = jcs_safe(body)
            assert isinstance(safe, dict)
            body, text = safe, canonical(safe)
    else:
        text = canonical(body, form)
    digest = sealer.digest(text)
    body["hash"] = digest
    return Sealed(seq, digest, (canonical(body, form) + "\n").encode())


class BadLine(Exception):
    """A stored line that is not an event this gateway wrote, unaltered."""


def form_of(record: dict[str, Any]) -> Form:
    """The canonical form a stored event was written in (its `canon` field; none: the older form)."""
    canon = record.get(CANON_FIELD, PYTHON_JSON)
    if canon == JCS:
        return JCS
    if CANON_FIELD not in record:
        return PYTHON_JSON
    raise BadLine(f"unknown canonical form {str(canon)[:40]!r}")


def check(line: bytes, sealer: Sealer | None) -> dict[str, Any]:
    """Parse a stored line (without its newline) and check that it is canonical and that its hash
    matches its content. `sealer` None checks plain SHA-256 lines and refuses HMAC ones."""
    try:
        record = json.loads(line)
    except ValueError:
        raise BadLine("not JSON") from None
    if not isinstance(record, dict) or not all(name in record for name in CHAIN_FIELDS):
        raise BadLine("not a chained audit event")
    form = form_of(record)
    try:
        again = canonical(record, form).encode()
    except (rfc8785.CanonicalizationError, UnicodeEncodeError):
        raise BadLine("not in canonical form (a value JCS cannot encode)") from None
    if again != line:
        raise BadLine("not in canonical form (edited by hand?)")
    alg = record["alg"]
    if sealer is None:
        if alg != SHA256:
            raise MissingKey(f"events are sealed with {alg}; the key is needed to check them")
        sealer = Sealer()
    elif alg != sealer.alg:
        raise BadLine(f"sealed with {alg}, expected {sealer.alg}")
    body = {name: value for name, value in record.items() if name != "hash"}
    if not hmac.compare_digest(sealer.digest(canonical(body, form)), str(record["hash"])):
        raise BadLine("its hash does not match its content")
    if not isinstance(record["seq"], int) or not isinstance(record["prev"], str):
        raise BadLine("malformed seq or prev")
    return record


class MissingKey(BadLine):
    """HMAC-sealed events, and no key to check them with."""
