"""The gateway's cookies: names, and HMAC signing so that a forged or altered value is never looked up."""

from __future__ import annotations

import hashlib
import hmac

# Every cookie of ours starts with this, so the proxy can drop them all before forwarding.
COOKIE_PREFIX = "notebook_gateway"
SESSION_COOKIE = f"{COOKIE_PREFIX}_session"
LOGIN_COOKIE = f"{COOKIE_PREFIX}_login"  # binds a pending sign-in to the browser that started it


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
