"""The one canonical parse of a request path, and the upstream URL built from its result.

Routing and authorization both use `parse()`'s result, never the raw path and never aiohttp's
`match_info` alone, so the (namespace, name) we decide on is the one the notebook server sees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from yarl import URL

from .errors import InvalidPath
from .names import is_dns_label

NOTEBOOK_ROOT = "/notebook/"
# Characters a path may carry unencoded (RFC 3986 pchar plus "/"); everything else must be %XX.
_RAW_PATH = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/|^\[\]{}]|%[0-9A-Fa-f]{2})*")
# Each decoding pass can reveal another layer (%252e -> %2e -> .); after this many we give up.
_MAX_DECODES = 4


@dataclass(frozen=True, slots=True)
class NotebookPath:
    """`/notebook/<namespace>/<name>/<rest>?<query>`, with `rest` and `query` still percent-encoded."""

    namespace: str
    name: str
    rest: str
    query: str
    has_slash: bool  # False for `/notebook/<ns>/<name>`, which we redirect to the slash form

    @property
    def prefix(self) -> str:
        """The notebook's NB_PREFIX, e.g. `/notebook/alice/nb1/`."""
        return f"{NOTEBOOK_ROOT}{self.namespace}/{self.name}/"

    @property
    def upstream_path_qs(self) -> str:
        """Exactly what the notebook server receives: its prefix, the untouched rest, the query."""
        return self.prefix + self.rest + (f"?{self.query}" if self.query else "")


def check_path(raw_path: str) -> None:
    """Refuse a raw path (no query) that some server along the way could read differently.

    Rejects dot segments (raw or encoded any number of times), encoded `/` and `\\`, raw
    backslashes, NUL and control characters, empty segments (`//`), and characters that
    should have been percent-encoded.
    """
    if not raw_path.startswith("/"):
        raise InvalidPath("The path must start with '/'.")
    if _RAW_PATH.fullmatch(raw_path) is None:
        raise InvalidPath("The path contains characters that must be percent-encoded (or a bad %-escape).")
    segments = raw_path[1:].split("/")
    for index, segment in enumerate(segments):
        if segment == "" and index != len(segments) - 1:
            raise InvalidPath("The path contains an empty segment ('//').")
        # After the _RAW_PATH match a segment has no raw '/', '\\' or control character, so one with
        # neither '%' nor '.' passes _check_segment as it is: skip it (every request checks every segment).
        if "%" in segment or "." in segment:
            _check_segment(segment)


def _check_segment(segment: str) -> None:
    decoded = segment
    for _ in range(_MAX_DECODES):
        if "/" in decoded or "\\" in decoded:
            raise InvalidPath("The path contains an encoded '/' or '\\'.")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in decoded):
            raise InvalidPath("The path contains a control character.")
        # `..;x` is a dot segment to some servers (path parameters), so compare without them.
        if decoded.split(";", 1)[0] in (".", ".."):
            raise InvalidPath("The path contains a '.' or '..' segment.")
        if "%" not in decoded:
            return
        try:
            decoded = unquote(decoded, errors="strict")
        except UnicodeDecodeError:
            raise InvalidPath("The path contains a %-escape that is not UTF-8.") from None
    raise InvalidPath("The path is percent-encoded too many times.")


def parse(raw_path_qs: str) -> NotebookPath | None:
    """Check a request's raw path and query; return the notebook it names, or None if it names none.

    Raises `InvalidPath` (400) for a path that is unsafe anywhere, or that is under `/notebook/`
    without a valid `<namespace>/<name>`.
    """
    raw_path, _, query = raw_path_qs.partition("?")
    check_path(raw_path)
    if not raw_path.startswith(NOTEBOOK_ROOT):
        return None
    parts = raw_path[len(NOTEBOOK_ROOT) :].split("/", 2)
    if len(parts) < 2 or not parts[1]:
        raise InvalidPath("A notebook path is /notebook/<namespace>/<name>/.")
    namespace, name = parts[0], parts[1]
    if not is_dns_label(namespace):
        raise InvalidPath(f"Namespace {namespace!r} is not a valid DNS-1123 label.")
    if not is_dns_label(name):
        raise InvalidPath(f"Notebook name {name!r} is not a valid DNS-1123 label.")
    return NotebookPath(
        namespace=namespace,
        name=name,
        rest=parts[2] if len(parts) == 3 else "",
        query=query,
        has_slash=len(parts) == 3,
    )


def upstream_url(base: URL, path: NotebookPath) -> URL:
    """The notebook server's URL for this request; `encoded=True` so yarl re-normalises nothing."""
    origin = str(base.origin())
    return URL(origin + path.upstream_path_qs, encoded=True)
