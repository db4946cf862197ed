"""Who the client is, and whether a browser request comes from our own pages (CSRF).

Pure functions over header values, so the middleware, the sign-in routes and the proxy agree.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping

from yarl import URL

from .config import IPNetwork

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@functools.lru_cache(maxsize=1024)
def is_trusted(address: str, trusted: tuple[IPNetwork, ...]) -> bool:
    """True when `address` lies in one of the trusted proxy networks (cached: it runs per request)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_address(remote: str | None, forwarded_for: str | None, trusted: tuple[IPNetwork, ...]) -> str:
    """The client's address: the peer, unless the peer is a trusted proxy; then the nearest address in
    X-Forwarded-For that is not itself a trusted proxy (a client cannot spoof past the proxies we trust)."""
    address = remote or "-"
    if not forwarded_for or not is_trusted(address, trusted):
        return address
    for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
        if not hop:
            continue
        address = hop
        if not is_trusted(hop, trusted):
            break
    return address


def limit_address(remote: str | None, forwarded_for: str | None, trusted: tuple[IPNetwork, ...]) -> str:
    """The address failed sign-ins are counted against.

    Normally the client's address. But a peer that forwards for others without being a trusted proxy
    is an ingress nobody listed in GATEWAY_TRUSTED_PROXIES, and every client shares its address:
    counting against it alone let ten bad callbacks lock out everyone. Its failures are counted per
    the hop it says it received the request from, which the ingress itself appends. A client talking
    to us directly can forge that hop, but only to spread its own failures, never to add to another
    client's count (the per-user limit still applies to the names it tries)."""
    client = client_address(remote, forwarded_for, trusted)
    if not forwarded_for or client != (remote or "-"):
        return client  # a direct client, or the one a trusted proxy named
    last_hop = forwarded_for.rsplit(",", 1)[-1].strip()[:64]
    return f"{client}>{last_hop}" if last_hop else client


def cross_origin_reason(method: str, headers: Mapping[str, str], origin: str, websocket: bool) -> str | None:
    """Why a cookie-authenticated request must be refused as cross-site, or None if it may pass.

    State-changing methods and WebSocket upgrades must carry an `Origin` (or, lacking one, a
    `Referer`) on our own origin; `Sec-Fetch-Site: cross-site` is always refused for them.
    """
    if method in SAFE_METHODS and not websocket:
        return None
    if headers.get("Sec-Fetch-Site") == "cross-site":
        return "This request came from another site."
    sent = headers.get("Origin")
    if sent is None and not websocket:
        referer = headers.get("Referer")
        sent = str(URL(referer).origin()) if referer and URL(referer).absolute else None
    if sent is None:
        return "This request carries no Origin or Referer, so it cannot be shown to come from this site."
    if sent.rstrip("/") != origin:
        return f"This request came from {sent}, not from this site."
    return None
