"""`/oauth2/start`, `/oauth2/callback`, `/oauth2/sign_out`, `/oauth2/userinfo` (oauth2-proxy's paths, so a
Kubeflow install keeps its registered client) and `/oauth2/backchannel-logout`."""

from __future__ import annotations

import logging
from urllib.parse import unquote

from aiohttp import web

from .. import keys
from ..audit import Outcome
from ..auth import attempts
from ..auth.oidc import InvalidToken
from ..authz.manager import Change
from ..cookies import LOGIN_COOKIE, SESSION_COOKIE
from ..errors import Forbidden, GatewayError
from ..forwarded import cross_origin_reason
from ..identity import Identity
from ..profiles import Profile
from ..sessions import Session
from . import audit_request, notebook_login

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

# Routes anyone may call without a session.
PUBLIC = frozenset({"oauth2_start", "oauth2_callback", "oauth2_sign_out", "oauth2_backchannel_logout"})


def safe_return_path(rd: str | None) -> str:
    """Only a path on this origin: `//evil`, `/\\evil`, `https://evil`, `/%09/evil` all become `/`."""
    if not rd:
        return "/"
    decoded = unquote(rd)
    if (
        not rd.startswith("/")
        or rd.startswith(("//", "/\\"))
        or any(ch in decoded for ch in "\\\r\n\t")
        or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in decoded)
        or decoded.startswith(("//", "/\\"))
        or decoded.lstrip("/").split("/", 1)[0].count(":")  # a scheme or user@host slipped in
    ):
        return "/"
    return rd


@routes.get("/oauth2/start", name="oauth2_start")
async def start(request: web.Request) -> web.StreamResponse:
    await attempts.check(request)
    started = await request.app[keys.AUTHENTICATOR].start(safe_return_path(request.query.get("rd")))
    response = web.HTTPFound(started.redirect_to)
    _set_cookie(request, response, LOGIN_COOKIE, started.browser_binding, max_age=600)
    raise response


@routes.get("/oauth2/callback", name="oauth2_callback")
async def callback(request: web.Request) -> web.StreamResponse:
    await attempts.check(request)
    request.app[keys.AUDIT].require_writable()  # a sign-in that cannot be recorded is refused first
    authenticator = request.app[keys.AUTHENTICATOR]
    if "error" in request.query:
        reason = request.query.get("error", "")[:100]
        refused = LoginFailed(f"The identity provider did not sign you in ({reason}).")
        await attempts.failed(request, refused, audit=True, reason=f"provider said {reason}")
        raise refused
    try:
        verified = await authenticator.finish(
            state=request.query.get("state", ""),
            code=request.query.get("code", ""),
            binding_cookie=request.cookies.get(LOGIN_COOKIE),
        )
    except GatewayError as exc:  # a bad state or token, a user kept out, the provider down: counted, audited
        await attempts.failed(request, exc, audit=True)
        raise
    await attempts.check(request, verified.identity.subject)
    session = await authenticator.open_session(verified)
    return_to = verified.return_to
    _audit(request, session.identity, "auth.login", "allowed", session=session)
    for change in await request.app[keys.POLICIES].sign_in(session.identity):  # self-service profile, if on
        _audit(request, session.identity, change.action, "allowed", details=change.details())
        await _provision(request, session.identity, change)
    response = web.HTTPFound(return_to)
    _set_cookie(request, response, SESSION_COOKIE, authenticator.signer.sign(session.id), max_age=None)
    response.del_cookie(LOGIN_COOKIE, path="/")
    raise response


@routes.route("*", "/oauth2/sign_out", name="oauth2_sign_out")
async def sign_out(request: web.Request) -> web.StreamResponse:
    if request.method not in ("GET", "POST"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
    settings = request.app[keys.SETTINGS]
    # Public, so the middleware's same-origin rule is applied here: another site must not be able
    # to sign our users out. A GET (oauth2-proxy's link) is refused when the browser says it is cross-site.
    reason = cross_origin_reason("POST", request.headers, settings.base_url, websocket=False)
    if request.method == "GET" and request.headers.get("Sec-Fetch-Site") != "cross-site":
        reason = None
    if reason is not None:
        raise Forbidden(reason)
    authenticator = request.app[keys.AUTHENTICATOR]
    session = await authenticator.sessions.load(authenticator.signer.unsign(request.cookies.get(SESSION_COOKIE)) or "")
    provider_logout = await authenticator.sign_out(session, f"{settings.base_url}/")
    if session is not None:
        await notebook_login.end_credentials(request, session)
        _audit(request, session.identity, "auth.logout", "allowed", session=session)
    response = web.HTTPFound(provider_logout or safe_return_path(request.query.get("rd")))
    response.del_cookie(SESSION_COOKIE, path="/")
    # The browser's side: this origin's storage, where in single-origin mode a notebook's leftovers (service
    # workers, local storage) live. Not "cookies": that would clear every app's cookies on the registrable domain.
    response.headers["Clear-Site-Data"] = '"storage"'
    raise response


@routes.get("/oauth2/userinfo", name="oauth2_userinfo")
async def userinfo(request: web.Request) -> web.Response:
    identity = request[keys.IDENTITY]
    namespaces = request.app[keys.AUTHZ].namespaces(identity)  # "*" stands for a cluster-wide role
    return web.json_response(
        {
            "user": identity.subject,
            "email": identity.email,
            "groups": list(identity.groups),
            "preferredUsername": identity.subject,
            "namespaces": [{"namespace": namespace, "role": role} for namespace, role in namespaces.items()],
            # dev: this user is cluster-admin because they signed in first; the pages say so
            "firstUserAdmin": request.app[keys.POLICIES].made_first_user_admin(identity),
        }
    )


@routes.post("/oauth2/backchannel-logout", name="oauth2_backchannel_logout")
async def backchannel_logout(request: web.Request) -> web.Response:
    form = await request.post()
    token = form.get("logout_token")
    if not isinstance(token, str) or not token:
        return web.json_response({"error": "invalid_request", "message": "logout_token is required"}, status=400)
    try:
        ended = await request.app[keys.AUTHENTICATOR].back_channel_logout(token)
    except InvalidToken as exc:
        return web.json_response({"error": "invalid_request", "message": exc.message}, status=400)
    log.info("back-channel logout ended %d session(s)", ended)
    _audit(request, None, "auth.logout", "allowed", details={"channel": "backchannel", "sessions": ended})
    return web.json_response({"sessions_ended": ended}, headers={"Cache-Control": "no-store"})


class LoginFailed(GatewayError):
    """Not `LoginRequired`: a failed sign-in shows a page, it does not send the browser round again."""

    status, code = 401, "login_failed"
    default_message = "Signing in failed."


async def _provision(request: web.Request, identity: Identity, change: Change) -> None:
    """On the Kubernetes backend, an auto-profile's namespace is made too (GATEWAY_PROFILES). A
    failure is logged and audited; the sign-in goes on, and a cluster-admin can retry by the API."""
    provisioner, rule = request.app.get(keys.PROFILES), change.rule
    if provisioner is None or change.via != "auto-profile" or rule is None:
        return
    reason = ""
    try:
        await provisioner.create(Profile(rule.namespace, rule.subject))
    except GatewayError as exc:
        log.error("could not provision profile %s for %s: %s", rule.namespace, identity.subject, exc.message)
        reason = exc.message
    details = {"owner": rule.subject, "via": "auto-profile"}
    event = audit_request.event(
        request,
        "profile.create",
        "failed" if reason else "allowed",
        identity=identity,
        namespace=rule.namespace,
        reason=reason,
        details=details,
    )
    request.app[keys.AUDIT].emit(event)


def _audit(
    request: web.Request,
    identity: Identity | None,
    action: str,
    outcome: Outcome,
    reason: str = "",
    details: dict[str, object] | None = None,
    session: Session | None = None,
) -> None:
    event = audit_request.event(
        request, action, outcome, identity=identity, session=session, reason=reason, details=details or {}
    )
    request.app[keys.AUDIT].emit(event)


def _set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str, max_age: int | None) -> None:
    secure = request.app[keys.SETTINGS].base_url.startswith("https://")
    response.set_cookie(name, value, path="/", httponly=True, samesite="Lax", secure=secure, max_age=max_age)
