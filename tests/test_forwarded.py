"""Client addresses behind proxies, and the same-origin rule for cookie-authenticated changes."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.forwarded import client_address, cross_origin_reason, limit_address

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"),)
ORIGIN = "https://nb.example.com"


def test_an_untrusted_peer_cannot_claim_another_address() -> None:
    assert client_address("203.0.113.9", "1.2.3.4", TRUSTED) == "203.0.113.9"


def test_failures_behind_an_unlisted_ingress_are_counted_per_forwarded_client() -> None:
    # An ingress at 10.1.1.1 that nobody listed: its clients are told apart by the hop it appends.
    assert limit_address("10.1.1.1", "6.6.6.6, 198.51.100.7", ()) == "10.1.1.1>198.51.100.7"
    assert limit_address("10.1.1.1", "203.0.113.9", ()) != limit_address("10.1.1.1", "198.51.100.7", ())
    assert limit_address("203.0.113.9", None, ()) == "203.0.113.9"  # a direct client: its own address
    assert limit_address("10.0.0.2", "198.51.100.7", TRUSTED) == "198.51.100.7"  # a trusted proxy named it


def test_behind_a_trusted_proxy_the_nearest_untrusted_hop_is_the_client() -> None:
    assert client_address("10.0.0.2", "6.6.6.6, 198.51.100.7, 10.0.0.3", TRUSTED) == "198.51.100.7"


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_safe_methods_pass_from_anywhere(method: str) -> None:
    assert cross_origin_reason(method, {"Origin": "https://evil.example"}, ORIGIN, websocket=False) is None


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Origin": "https://evil.example"}, "came from https://evil.example, not from this site"),
        (
            {"Origin": "https://nb.example.com.evil.example"},
            "came from https://nb.example.com.evil.example, not from this site",
        ),
        ({"Referer": "https://evil.example/page"}, "came from https://evil.example, not from this site"),
        ({}, "carries no Origin or Referer"),
        ({"Origin": ORIGIN, "Sec-Fetch-Site": "cross-site"}, "came from another site"),
    ],
)
def test_a_cross_site_change_is_refused_with_its_reason(headers: dict[str, str], reason: str) -> None:
    refusal = cross_origin_reason("POST", headers, ORIGIN, websocket=False)
    assert refusal is not None and reason in refusal


def test_a_change_from_our_own_pages_passes() -> None:
    assert cross_origin_reason("POST", {"Origin": ORIGIN}, ORIGIN, websocket=False) is None
    assert cross_origin_reason("DELETE", {"Referer": f"{ORIGIN}/x?y"}, ORIGIN, websocket=False) is None


def test_a_websocket_needs_our_origin_even_for_get() -> None:
    assert "came from https://evil.example" in str(
        cross_origin_reason("GET", {"Origin": "https://evil.example"}, ORIGIN, websocket=True)
    )
    # A WebSocket's Referer is not enough: browsers always send Origin with one.
    assert "carries no Origin" in str(cross_origin_reason("GET", {"Referer": f"{ORIGIN}/"}, ORIGIN, websocket=True))
    assert cross_origin_reason("GET", {"Origin": ORIGIN}, ORIGIN, websocket=True) is None
