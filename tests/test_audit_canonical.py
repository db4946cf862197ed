"""The audit chain's canonical form is RFC 8785 (JCS), checked against an independent implementation
(npm `canonicalize`, run with node) on the RFC's own examples and on our events; a verifier in
JavaScript checks a chain the gateway wrote; chains written in the older Python form still verify."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path
from typing import Any, cast

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit.chain import CANON_FIELD, JCS, PYTHON_JSON, BadLine, Sealer, canonical, check, seal
from gateway.audit.events import AuditEvent
from gateway.audit.filesink import ChainedFile
from gateway.audit.verify import verify

from .fakes.npm import npm_ci

# RFC 8785 section 3.2.2 (whitespace, numbers, string escapes) and 3.2.3 (property order by UTF-16 code units).
RFC_EXAMPLES = [
    (
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/", "literals": [null, true, false]}',
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}',
    ),
    (
        '{"\\u20ac": "Euro Sign", "\\r": "Carriage Return", "\\ufb33": "Hebrew Letter Dalet With Dagesh",'
        ' "1": "One", "\\ud83d\\ude00": "Emoji: Grinning Face", "\\u0080": "Control",'
        ' "\\u00f6": "Latin Small Letter O With Diaeresis"}',
        '{"\\r":"Carriage Return","1":"One","\u0080":"Control","ö":"Latin Small Letter O With Diaeresis",'
        '"€":"Euro Sign","😀":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}',
    ),
]

# RFC 8785 appendix B: IEEE 754 doubles (as hex bits) and their JCS text.
RFC_NUMBERS = {
    "0000000000000000": "0",
    "8000000000000000": "0",
    "0000000000000001": "5e-324",
    "7fefffffffffffff": "1.7976931348623157e+308",
    "4340000000000000": "9007199254740992",
    "c340000000000000": "-9007199254740992",
    "4430000000000000": "295147905179352830000",
    "44b52d02c7e14af5": "9.999999999999997e+22",
    "44b52d02c7e14af6": "1e+23",
    "3eb0c6f7a0b5ed8d": "0.000001",
    "3eb0c6f7a0b5ed8e": "0.0000010000000000000002",
    "41b3de4355555553": "333333333.3333332",
    "41b3de4355555554": "333333333.33333325",
    "41b3de4355555555": "333333333.3333333",
    "becbf647612f3696": "-0.0000033333333333333333",
    "43143ff3c1cb0959": "1424953923781206.2",
}


def hostile_event(n: int) -> dict[str, object]:
    """An event with what makes canonical forms disagree: non-ASCII, emoji, control characters, a
    line separator, floats, keys outside the BMP."""
    return AuditEvent(
        action="notebook.access",
        outcome="denied" if n % 2 else "allowed",
        actor=f"zoë-{n}@example.com",
        namespace="team-ü",
        notebook="nb",
        reason='no "role"\n\t\x00\x1f\x7f end\u2028next 😀',
        user_agent="Mozilla/5.0 (日本語)",
        details={"duration_s": 1.5 + n, "ratio": 1e-7, "whole": 2.0, "big": 2**53 - 1, "😀": 1, "\ufb33": 2},
    ).to_record()


def node_canonicalize(texts: list[str]) -> list[str]:
    directory = npm_ci("jcs", "canonicalize")
    done = subprocess.run(
        ["node", "jcs.mjs", "canonicalize"],
        cwd=directory,
        input="".join(text + "\n" for text in texts).encode(),
        capture_output=True,
        check=True,
    )
    return done.stdout.decode().split("\n")[:-1]


def node_verify(directory: Path, key: bytes | None = None) -> dict[str, object]:
    tools = npm_ci("jcs", "canonicalize")
    args = ["node", "jcs.mjs", "verify", str(directory)] + ([key.hex()] if key else [])
    done = subprocess.run(args, cwd=tools, capture_output=True, text=True, check=False)
    result: dict[str, object] = json.loads(done.stdout)
    assert (done.returncode == 0) == result["ok"], done.stderr
    return result


@pytest.mark.parametrize(("text", "expected"), RFC_EXAMPLES)
def test_the_rfc_examples_come_out_as_the_rfc_prints_them(text: str, expected: str) -> None:
    assert canonical(json.loads(text)) == expected
    assert node_canonicalize([text]) == [expected]


def test_the_rfc_numbers_come_out_as_the_rfc_prints_them() -> None:
    values = [struct.unpack(">d", bytes.fromhex(bits))[0] for bits in RFC_NUMBERS]
    assert [canonical(value) for value in values] == list(RFC_NUMBERS.values())
    assert node_canonicalize([json.dumps(value) for value in values]) == list(RFC_NUMBERS.values())


def test_our_events_canonicalize_byte_for_byte_as_the_independent_implementation_does() -> None:
    records = [hostile_event(n) for n in range(5)]
    ours = [canonical(record) for record in records]
    assert node_canonicalize([json.dumps(record) for record in records]) == ours
    assert all("\n" not in text and "\r" not in text for text in ours)  # nothing in a value can end a line


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_the_fast_path_writes_exactly_what_the_library_writes(value: object) -> None:
    try:
        expected = rfc8785.dumps(cast(Any, value)).decode()
    except (rfc8785.CanonicalizationError, UnicodeEncodeError):
        with pytest.raises((rfc8785.CanonicalizationError, UnicodeEncodeError)):
            canonical(value)
        return
    assert canonical(value) == expected


def write_chain(directory: Path, records: list[dict[str, object]], key: bytes | None = None) -> None:
    file = ChainedFile(directory, Sealer(key), 1 << 20)
    file.open()
    for record in records:
        assert file.append(record)
    file.close()


@pytest.mark.parametrize("key", [None, b"k" * 32], ids=["sha256", "hmac"])
def test_a_chain_the_gateway_wrote_verifies_in_javascript(tmp_path: Path, key: bytes | None) -> None:
    write_chain(tmp_path, [hostile_event(n) for n in range(20)], key)
    assert verify(tmp_path, key).ok
    assert node_verify(tmp_path, key) == {"ok": True, "events": 20, "jcs": 20, "problems": []}


def test_the_javascript_verifier_catches_an_edit(tmp_path: Path) -> None:
    write_chain(tmp_path, [hostile_event(n) for n in range(5)])
    path = next(tmp_path.glob("audit-*.jsonl"))
    path.write_bytes(path.read_bytes().replace(b'"actor":"zo\xc3\xab-3@', b'"actor":"eve-3@', 1))
    result = node_verify(tmp_path)
    assert result["problems"] == [f"{path.name} line 4: hash does not match"] and not result["ok"]


def test_new_events_say_their_form_and_old_chains_verify_as_they_are(tmp_path: Path) -> None:
    # Written as before this change: Python's form, no `canon` field; then the gateway upgraded.
    prev, lines = "0" * 64, []
    for seq in range(1, 4):
        sealed = seal(hostile_event(seq), seq, prev, Sealer(), PYTHON_JSON)
        prev = sealed.hash
        lines.append(sealed.line)
    assert all(line.isascii() and b'"canon"' not in line for line in lines)
    (tmp_path / "audit-00000001.jsonl").write_bytes(b"".join(lines))
    write_chain(tmp_path, [hostile_event(n) for n in range(4, 7)])
    report = verify(tmp_path)
    assert report.ok and report.last_seq == 6
    newest = json.loads((tmp_path / "audit-00000001.jsonl").read_bytes().splitlines()[-1])
    assert newest[CANON_FIELD] == JCS
    assert node_verify(tmp_path) == {"ok": True, "events": 6, "jcs": 3, "problems": []}


def test_the_form_cannot_be_stripped_or_swapped(tmp_path: Path) -> None:
    sealed = seal(hostile_event(1), 1, "0" * 64, Sealer(b"k" * 32))
    record = json.loads(sealed.line)
    check(sealed.line[:-1], Sealer(b"k" * 32))
    for forged in ({**record, CANON_FIELD: "python-json"}, {k: v for k, v in record.items() if k != CANON_FIELD}):
        form = JCS if CANON_FIELD in forged else PYTHON_JSON
        with pytest.raises(BadLine):
            check(canonical(forged, form).encode(), Sealer(b"k" * 32))


def test_what_jcs_cannot_encode_is_written_as_text_not_dropped(tmp_path: Path) -> None:
    record = {**hostile_event(1), "details": {"huge": 2**64, "lone": "\udc80x", "nan": float("nan")}}
    write_chain(tmp_path, [record])
    assert verify(tmp_path).ok
    stored = json.loads(next(tmp_path.glob("audit-*.jsonl")).read_bytes())
    assert stored["details"] == {"huge": str(2**64), "lone": "\\udc80x", "nan": "nan"}
    assert node_verify(tmp_path)["ok"]
