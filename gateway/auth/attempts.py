"""Failed sign-ins, counted per client IP and per username, for the browser flow and for bearer tokens.

The gateway never sees a password: the provider checks it. What reaches the gateway is a token, and
a username is counted against only when its issuer vouches for it, that is, when the token's
signature checked out and it was refused for another reason (expired, another audience, a stale
nonce, a user outside the allowed domains or groups). A forged token counts against the client's IP
alone, so nobody can lock someone else out by writing their name into a token.

`SignInLimits` holds these rules. It knows addresses and names, not requests: the edges hand it the
client's address and audit what it refuses (gateway/web/signin.py).
"""

from __future__ import annotations

from ..errors import GatewayError, InvalidToken, NotAllowed, SignInLimited
from ..ratelimit import FailureCounter


def vouched_username(exc: GatewayError) -> str | None:
    """The user a refused sign-in was for, when the issuer signed what named them."""
    if isinstance(exc, NotAllowed | InvalidToken):
        return exc.username
    return None


class SignInLimits:
    """The limits on failed sign-ins, over a `FailureCounter` (Redis, or memory in dev)."""

    def __init__(self, counter: FailureCounter) -> None:
        self.counter = counter

    async def check(self, client_ip: str, username: str | None = None) -> None:
        """Raise `SignInLimited` (429 with `Retry-After`) while the address, or the user, is over the limit."""
        if retry := await self.counter.retry_after_s(f"ip:{client_ip}"):
            raise SignInLimited(
                "Too many failed sign-ins from this address; wait before trying again.",
                retry_after_s=retry,
                by="ip",
                username=username,
            )
        if username and (retry := await self.counter.retry_after_s(f"user:{username}")):
            raise SignInLimited(
                "Too many failed sign-ins for this user; wait before trying again.",
                retry_after_s=retry,
                by="user",
                username=username,
            )

    async def failed(self, client_ip: str, exc: GatewayError) -> str | None:
        """Count a refused sign-in against the address and, when vouched for, its user; return that user.
        Our own outage (the provider or Redis unreachable, a 5xx) is not the client's failure and is not counted."""
        username = vouched_username(exc)
        if exc.status < 500:
            await self.counter.fail(f"ip:{client_ip}")
            if username:
                await self.counter.fail(f"user:{username}")
        return username
