"""Notebook origins: which host serves which notebook server, and which hosts are the gateway's.

Each server gets one DNS label under the notebook domain. The readable form is `<name>--<namespace>`;
both parts are DNS-1123 labels, which never start or end with `-`, so when neither holds `--` the one
`--` in the label splits it one way only. A pair that does not fit (either part holds `--`, or the
label would pass 63 characters) gets the hashed form `<name, shortened>-<sha256 of namespace/name>`,
which holds no `--` at all, so the two forms never meet. The gateway never has to read a host back:
a request on a notebook host names its notebook in its path, and the host must be that notebook's.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Literal

from yarl import URL

MAX_LABEL = 63  # RFC 1035
# The hash keeps 130 bits: enough that no two servers share a label, in any cluster.
_HASH_CHARS = 26
_READABLE_NAME_CHARS = MAX_LABEL - _HASH_CHARS - 1 - 12  # leave room so hashed labels stay short


def label(namespace: str, name: str) -> str:
    """The notebook's DNS label: `<name>--<namespace>`, or the hashed form when that would be ambiguous or too long."""
    readable = f"{name}--{namespace}"
    if "--" not in name and "--" not in namespace and len(readable) <= MAX_LABEL:
        return readable
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).digest()
    tail = base64.b32encode(digest).decode().lower()[:_HASH_CHARS]  # a-z2-7: never a '-'
    head = "-".join(part for part in name[:_READABLE_NAME_CHARS].split("-") if part)  # no '--', no edge '-'
    return f"{head}-{tail}" if head else f"nb-{tail}"


@dataclass(frozen=True, slots=True)
class NotebookOrigins:
    """The hosts of one install: the gateway's own (from its public URL) and, in isolated mode, the
    notebook domain whose one-label subdomains are the notebook servers."""

    mode: Literal["isolated", "single"]
    gateway_url: URL  # the public URL's origin
    domain: str | None  # lower case, no leading dot; None in single mode

    @classmethod
    def build(cls, mode: Literal["isolated", "single"], public_url: str, domain: str | None) -> NotebookOrigins:
        """Check the combination; `ValueError` with the reason when it cannot isolate anything."""
        gateway_url = URL(public_url).origin()
        if mode == "single":
            return cls(mode, gateway_url, None)
        if domain is None:
            raise ValueError("isolated notebook origins need a notebook domain")
        domain = domain.lower().strip(".")
        host = (gateway_url.host or "").lower()
        # The gateway's host inside the notebook domain would be some notebook's origin.
        if host == domain or host.endswith("." + domain):
            raise ValueError(f"the gateway's host {host} lies inside the notebook domain {domain}")
        return cls(mode, gateway_url, domain)

    @property
    def isolated(self) -> bool:
        return self.mode == "isolated"

    def origin(self, namespace: str, name: str) -> str:
        """`scheme://<label>.<domain>[:port]`: the gateway's scheme and port, the notebook's own host."""
        assert self.domain is not None
        url = self.gateway_url.with_host(f"{label(namespace, name)}.{self.domain}")
        return str(url.origin())

    def notebook_label(self, host: str | None) -> str | None:
        """The label when `host` (a Host header, port allowed) is a notebook host; None otherwise.
        `""` for a host in the notebook domain that no notebook can have (the domain itself, two labels)."""
        if self.domain is None or not host:
            return None
        hostname = URL(f"//{host}").host or ""
        hostname = hostname.lower().rstrip(".")
        if hostname == self.domain:
            return ""
        if not hostname.endswith("." + self.domain):
            return None
        first = hostname[: -len(self.domain) - 1]
        return first if "." not in first else ""

    def serves(self, host: str | None, namespace: str, name: str) -> bool:
        """True when `host` is this notebook's own host."""
        return self.notebook_label(host) == label(namespace, name)
