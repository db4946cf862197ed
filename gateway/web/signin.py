"""Sign-in as the edges see it: a request's credentials (session cookie, Authorization header, client
address) handed to the authenticator, and failed sign-ins counted and audited for the request.

The rules live in the components (`auth.authenticator`, `auth.attempts`); what is here reads the
request and writes the audit events, which need the request's id, address and user agent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from aiohttp import web

from .. import forwarded, keys
from ..audit import Outcome
from ..auth.authenticator import Credentials
from ..cookies import SESSION_COOKIE
from ..errors import GatewayError, SignInLimited
from ..identity import Identity
from ..sessions import Session
from . import audit_request


def credentials(request: web.Request) -> Credentials:
    """What the request offers to say who it is."""
    return Credentials(
        cookie=request.cookies.get(SESSION_COOKIE),
        authorization=request.headers.get("Authorization"),
        client_ip=limit_address(request),
    )


async def identify(request: web.Request, *, touch: bool = True) -> tuple[Identity | None, Session | None]:
    """The authenticator's `identify` for this request; a client over the limits is audited, then refused."""
    with _limits_audited(request):
        return await request.app[keys.AUTHENTICATOR].identify(credentials(request), touch=touch)


async def check(request: web.Request, username: str | None = None) -> None:
    """Before a browser sign-in step: refuse (429, audited) while the client, or the user, is over the limit."""
    with _limits_audited(request):
        await request.app[keys.AUTHENTICATOR].limits.check(limit_address(request), username)


async def failed(
    request: web.Request, exc: GatewayError, *, reason: str | None = None, metric_reason: str | None = None
) -> None:
    """A browser sign-in failed: count it and audit `auth.login` failed. `reason` is for the audit log,
    when it should say more than the message the user sees; `metric_reason` (a fixed word) for /metrics,
    instead of the error's code."""
    request.app[keys.METRICS].signin_failures.labels(metric_reason or exc.code).inc()
    username = await request.app[keys.AUTHENTICATOR].limits.failed(limit_address(request), exc)
    _emit(request, username, "auth.login", "failed", reason=reason or exc.message)


@contextlib.contextmanager
def _limits_audited(request: web.Request) -> Iterator[None]:
    """`auth.rate_limited` for a refusal by the limits, which then stands."""
    try:
        yield
    except SignInLimited as exc:
        request.app[keys.METRICS].signin_failures.labels(exc.code).inc()
        _emit(request, exc.username, "auth.rate_limited", "denied", reason=exc.by)
        raise


def _emit(request: web.Request, username: str | None, action: str, outcome: Outcome, reason: str) -> None:
    # The actor of a refused sign-in is the user the issuer named, when it named one: "who tried to
    # sign in as bob" is the question a security team asks.
    method = "bearer" if credentials(request).bearer_token is not None else "session"
    identity = Identity(subject=username, method=method) if username else None
    request.app[keys.AUDIT].emit(audit_request.event(request, action, outcome, identity=identity, reason=reason))


def limit_address(request: web.Request) -> str:
    """What failed sign-ins are counted against for this request: see `forwarded.limit_address`."""
    trusted = request.app[keys.SETTINGS].trusted_proxies
    return forwarded.limit_address(request.remote, request.headers.get("X-Forwarded-For"), trusted)
