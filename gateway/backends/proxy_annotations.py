"""Per-server proxy behaviour from a Notebook's annotations, as Kubeflow's notebook controller turns
them into the server's VirtualService: `http-rewrite-uri` replaces the `/notebook/<ns>/<name>/` prefix
upstream (code-server and RStudio serve `/`), `http-headers-request-set` is a JSON map of request
headers to set (RStudio's `X-RStudio-Root-Path`). Without them the prefix is kept (Jupyter's NB_PREFIX).

Whoever may edit the Notebook writes these values, and other people's requests carry them. So a
rewrite must be a clean absolute path, and a header may not be one a proxy or a server believes
about who the user is, where the request came from or how it is framed. Each value is checked once
per distinct annotation (not per request); what is refused is logged with the reason and left out.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Mapping, MutableMapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from yarl import URL

from ..errors import InvalidPath
from ..kube.kubeflow_names import HEADERS_ANNOTATION, URI_REWRITE_ANNOTATION
from ..routing import NotebookPath, check_path

log = logging.getLogger(__name__)

MAX_REWRITE_CHARS = 256
MAX_HEADERS_ANNOTATION_CHARS = 4096
MAX_HEADERS = 16
MAX_HEADER_NAME_CHARS = 64
MAX_HEADER_VALUE_CHARS = 1024

# Letters, digits and '-' only: no '_', which some servers fold into '-' (`X_Remote_User`).
_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
# Visible ASCII and spaces: no CR, LF, NUL or other control characters, nothing to re-encode.
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")

# Headers no annotation may set (compared lower-case): what the gateway itself sets or vouches for
# (identity, forwarding), what routes or frames the request (Host, hop-by-hop, body framing), the
# visitor's own credentials (Cookie, Authorization) and what guards the visitor (Origin, fetch
# metadata, CSRF tokens). The proxy also skips any name in its own drop set when it applies them.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "cookie",
        "cookie2",
        "authorization",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "expect",
        "forwarded",
        "via",
        "max-forwards",
        "origin",
        "referer",
        "x-real-ip",
        "x-xsrftoken",
        "x-csrftoken",
        "x-csrf-token",
        "x-requested-with",
        "kubeflow-userid",
        "kubeflow-groups",
        "remote-user",
        "true-client-ip",
        "client-ip",
    }
)
# Families of the same: every identity, forwarding and body-framing header we know of starts so.
RESERVED_PREFIXES = (
    "proxy-",
    "content-",
    "sec-",
    "x-forwarded-",
    "x-original-",
    "x-auth",  # x-auth-request-*, x-authenticated-*, x-auth-user
    "x-remote-",
    "x-user",
    "x-email",
    "x-groups",
    "x-preferred-",
    "x-webauth-",
    "x-proxy-",
    "x-ms-",
    "x-goog-",
    "x-amzn-",
    "x-envoy-",
    "x-istio-",
    "x-pomerium-",
    "x-jwt",
    "x-id-token",
    "x-access-token",
    "x-http-",
    "x-method-",
    "x-client-",
    "x-cluster-client-",
    "x-originating-",
    "x-host",
    "x-rewrite-",
    "x-url-",
    "x-scheme",
    "kubeflow-",
    "cf-",
    "fastly-",
)


@dataclass(frozen=True, slots=True)
class ProxyBehaviour:
    """How the proxy talks to one server: the path that replaces its prefix upstream (None: keep it)
    and the request headers to set, each as (name as written, name lower-cased, value)."""

    rewrite: str | None = None
    headers: tuple[tuple[str, str, str], ...] = ()

    def upstream_url(self, base: URL, target: NotebookPath) -> URL:
        """The server's URL for this request: `rewrite` + the untouched rest + the query."""
        prefix = target.prefix if self.rewrite is None else self.rewrite
        query = f"?{target.query}" if target.query else ""
        return URL(str(base.origin()) + prefix + target.rest + query, encoded=True)

    def set_headers(self, headers: MutableMapping[str, str], dropped: AbstractSet[str]) -> None:
        """Set the checked headers (replacing a client's), except any the proxy drops (`dropped`,
        lower-case): the identity header names an operator configured are only known there."""
        for name, folded, value in self.headers:
            if folded not in dropped:
                headers[name] = value


DEFAULT = ProxyBehaviour()


def check_rewrite(value: str) -> str | None:
    """Why `value` cannot replace a notebook's prefix, or None when it can: an absolute path that
    ends in '/' (the prefix it replaces does; anything else would glue two segments together) and
    that the gateway's own path check accepts (no dot segments, escapes of '/', '//', controls)."""
    if len(value) > MAX_REWRITE_CHARS:
        return f"longer than {MAX_REWRITE_CHARS} characters"
    if not value.startswith("/") or not value.endswith("/"):
        return "not an absolute path ending in '/'"
    try:
        check_path(value)
    except InvalidPath as exc:
        return exc.message
    return None


def check_header(name: str, value: object) -> str | None:
    """Why a header may not be set from an annotation, or None when it may."""
    if len(name) > MAX_HEADER_NAME_CHARS or not _HEADER_NAME.fullmatch(name):
        return f"header name {name[:MAX_HEADER_NAME_CHARS]!r} is not letters, digits and '-'"
    folded = name.lower()
    if folded in RESERVED_HEADERS or folded.startswith(RESERVED_PREFIXES):
        return f"header {name!r} is reserved (identity, forwarding, credentials or framing)"
    if not isinstance(value, str):
        return f"header {name!r} has a value that is not a string"
    if len(value) > MAX_HEADER_VALUE_CHARS or not _HEADER_VALUE.fullmatch(value):
        return f"header {name!r} has a value longer than {MAX_HEADER_VALUE_CHARS} or with non-printable characters"
    return None


def from_annotations(namespace: str, name: str, annotations: Mapping[str, object]) -> ProxyBehaviour:
    """The behaviour a Notebook's annotations ask for (`DEFAULT` for a Jupyter server)."""
    rewrite = annotations.get(URI_REWRITE_ANNOTATION)
    headers = annotations.get(HEADERS_ANNOTATION)
    if not rewrite and not headers:
        return DEFAULT
    return _resolve(
        namespace,
        name,
        rewrite if isinstance(rewrite, str) else "",
        headers if isinstance(headers, str) else "",
    )


@functools.lru_cache(maxsize=4096)
def _resolve(namespace: str, name: str, rewrite: str, headers: str) -> ProxyBehaviour:
    """Checked once per distinct value (the watch re-reads a Notebook on every status change), so
    each refusal is logged once, not on every event."""
    who = f"{namespace}/{name}"
    checked_rewrite: str | None = None
    if rewrite:  # empty: the controller keeps the prefix too
        reason = check_rewrite(rewrite)
        if reason is None:
            checked_rewrite = rewrite
        else:
            log.warning("notebook %s: ignoring %s %.80r: %s", who, URI_REWRITE_ANNOTATION, rewrite, reason)
    behaviour = ProxyBehaviour(checked_rewrite, _checked_headers(who, headers) if headers else ())
    return DEFAULT if behaviour == DEFAULT else behaviour  # everything refused: the plain Jupyter path


class _Pairs(list[tuple[str, object]]):
    """A JSON object's members in order, duplicates kept (a plain list would also match an array)."""


def _checked_headers(who: str, raw: str) -> tuple[tuple[str, str, str], ...]:
    def ignore(reason: str) -> tuple[tuple[str, str, str], ...]:
        log.warning("notebook %s: ignoring %s: %s", who, HEADERS_ANNOTATION, reason)
        return ()

    if len(raw) > MAX_HEADERS_ANNOTATION_CHARS:
        return ignore(f"longer than {MAX_HEADERS_ANNOTATION_CHARS} characters")
    try:
        pairs = json.loads(raw, object_pairs_hook=_Pairs)
    except ValueError:  # as the controller: JSON that does not parse sets nothing
        return ignore("not a JSON object")
    if not isinstance(pairs, _Pairs):
        return ignore("not a JSON object")
    if len(pairs) > MAX_HEADERS:
        return ignore(f"more than {MAX_HEADERS} headers")
    kept: dict[str, tuple[str, str, str]] = {}
    for header, value in pairs:
        reason = check_header(header, value)
        if reason is None and header.lower() in kept:
            reason = f"header {header!r} is named twice"
        if reason is not None:
            log.warning("notebook %s: not setting a header from %s: %s", who, HEADERS_ANNOTATION, reason)
            continue
        kept[header.lower()] = (header, header.lower(), str(value))
    return tuple(kept.values())
