"""The gateway's cookies: names, and HMAC signing so that a forged or altered value is never looked up."""

from __future__ import annotations

import hashlib
import hmac

# Every cookie of ours starts with this, so the proxy can drop them all before forwarding.
COOKIE_PREFIX = "notebook_gateway"
SESSION_COOKIE = f"{COOKIE_PREFIX}_session"
LOGIN_COOKIE = f"{COOKIE_PREFIX}_login"  # binds a pending sign-in to the browser that started it
# On a notebook origin: the notebook's own credential, and the state that binds a handshake to the
# browser that started it. Over https they carry the `__Host-` prefix, which browsers refuse to set
# with a `Domain`, so that no other notebook can toss one onto this notebook's host.
NOTEBOOK_COOKIE = f"{COOKIE_PREFIX}_notebook"
NOTEBOOK_STATE_COOKIE = f"{COOKIE_PREFIX}_notebook_state"
HOST_ONLY_PREFIX = "__Host-"


def notebook_cookie_name(name: str, secure: bool) -> str:
    """`name` as it is set on a notebook origin: with the `__Host-` prefix over https."""
    return HOST_ONLY_PREFIX + name if secure else name


def is_gateway_cookie(name: str) -> bool:
    """True for any cookie of ours, prefixed with `__Host-` or not (a `name=value` pair is fine too)."""
    return name.removeprefix(HOST_ONLY_PREFIX).startswith(COOKIE_PREFIX)


class CookieSigner:
    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"notebook-gateway cookie\x00" + secret.encode()).digest()

    def sign(self, value: str) -> str:
        return f"{value}.{self._mac(value)}"

    def unsign(self, signed: str | None) -> str | None:
        """The value, or None when the cookie is absent, malformed or not signed by us."""
        if not signed or "." not in signed:
            return None
        value, _, mac = signed.rpartition(".")
        return value if hmac.compare_digest(mac, self._mac(value)) else None

    def _mac(self, value: str) -> str:
        return hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()[:43]
