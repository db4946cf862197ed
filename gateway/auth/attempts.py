"""Failed sign-ins, counted per client IP and per username, for the browser flow and for bearer tokens.

The gateway never sees a password: the provider checks it. What reaches the gateway is a token, and
a username is counted against only when its issuer vouches for it, that is, when the token's
signature checked out and it was refused for another reason (expired, another audience, a stale
nonce, a user outside the allowed domains or groups). A forged token counts against the client's IP
alone, so nobody can lock someone else out by writing their name into a token.

`identify` is where every request that needs a user (the middleware, `/oauth2/auth`) gets one.
"""

from __future__ import annotations

from aiohttp import web

from .. import keys
from ..audit import Outcome
from ..cookies import SESSION_COOKIE
from ..errors import GatewayError, TooManyRequests
from ..forwarded import limit_address
from ..identity import Identity
from ..sessions import Session
from ..web import audit_request
from .authenticator import NotAllowed
from .oidc import InvalidToken


class SignInLimited(TooManyRequests):
    """Too many failed sign-ins from this client, or for this user."""


def vouched_username(exc: GatewayError) -> str | None:
    """The user a refused sign-in was for, when the issuer signed what named them."""
    if isinstance(exc, NotAllowed | InvalidToken):
        return exc.username
    return None


async def check(request: web.Request, username: str | None = None) -> None:
    """Refuse with 429 and `Retry-After` while the client's IP (or the user) is over the limit."""
    counter = request.app[keys.FAILURES]
    for by, key in [("ip", f"ip:{_address(request)}"), *([("user", f"user:{username}")] if username else [])]:
        retry = await counter.retry_after_s(key)
        if retry:
            _emit(request, username, "auth.rate_limited", "denied", reason=by)
            raise SignInLimited(
                "Too many failed sign-ins for this user; wait before trying again."
                if by == "user"
                else "Too many failed sign-ins from this address; wait before trying again.",
                retry_after_s=retry,
            )


async def failed(request: web.Request, exc: GatewayError, *, audit: bool, reason: str | None = None) -> None:
    """Count a failed sign-in against the client's IP and, when vouched for, its user; `reason` is for
    the audit log, when it should say more than the message the user sees. Our own outage (the
    provider or Redis unreachable, a 5xx) is not the client's failure and is not counted."""
    counter = request.app[keys.FAILURES]
    username = vouched_username(exc)
    if exc.status < 500:
        await counter.fail(f"ip:{_address(request)}")
        if username:
            await counter.fail(f"user:{username}")
    if audit:
        _emit(request, username, "auth.login", "failed", reason=reason or exc.message)


def _address(request: web.Request) -> str:
    """What failures are counted against per client: see `forwarded.limit_address`."""
    trusted = request.app[keys.SETTINGS].trusted_proxies
    return limit_address(request.remote, request.headers.get("X-Forwarded-For"), trusted)


def bearer_token(request: web.Request) -> str | None:
    """The token of an `Authorization: Bearer` header, if the request has one."""
    authorization = request.headers.get("Authorization", "")
    return authorization[7:].strip() if authorization[:7].lower() == "bearer " else None


async def identify(request: web.Request, *, touch: bool = True) -> tuple[Identity | None, Session | None]:
    """Who the request is: by its bearer token (with the limits applied), else by its session cookie;
    (None, None) when neither names anyone. `touch`: whether a cookie's use counts as activity."""
    token = bearer_token(request)
    if token is not None:
        return await bearer_identity(request, token), None
    session = await request.app[keys.AUTHENTICATOR].from_cookie(request.cookies.get(SESSION_COOKIE), touch=touch)
    return (session.identity, session) if session is not None else (None, None)


async def bearer_identity(request: web.Request, token: str) -> Identity:
    """An API client's identity from its bearer token, with failures counted and the limits applied.

    A token verified before costs nothing here: the counters are read only for a new token."""
    authenticator = request.app[keys.AUTHENTICATOR]
    identity = authenticator.cached_bearer(token)
    if identity is not None:
        return identity
    await check(request)
    try:
        identity, expires_at = await authenticator.verify_bearer(token)
    except (InvalidToken, NotAllowed) as exc:
        # Not audited here: a refused call to a notebook or the API is audited as access.denied.
        await failed(request, exc, audit=False)
        raise
    await check(request, identity.subject)
    authenticator.remember_bearer(token, identity, expires_at)
    return identity


def _emit(request: web.Request, username: str | None, action: str, outcome: Outcome, reason: str) -> None:
    # The actor of a refused sign-in is the user the issuer named, when it named one: "who tried to
    # sign in as bob" is the question a security team asks.
    method = "bearer" if bearer_token(request) is not None else "session"
    identity = Identity(subject=username, method=method) if username else None
    request.app[keys.AUDIT].emit(audit_request.event(request, action, outcome, identity=identity, reason=reason))
