"""`/oauth2/start`, `/oauth2/callback`, `/oauth2/sign_out`, `/oauth2/userinfo` (oauth2-proxy's paths, so a
Kubeflow install keeps its registered client) and `/oauth2/backchannel-logout`."""

from __future__ import annotations

import logging
from urllib.parse import unquote

from aiohttp import web

from .. import keys
from ..audit import Outcome
from ..cookies import LOGIN_COOKIE, SESSION_COOKIE
from ..errors import Forbidden, GatewayError, InvalidToken, LoginFailed
from ..forwarded import cross_origin_reason
from ..identity import Identity
from ..sessions import Session
from . import audit_request, notebook_login, signin

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
    await signin.check(request)
    started = await request.app[keys.AUTHENTICATOR].start(safe_return_path(request.query.get("rd")))
    response = web.HTTPFound(started.redirect_to)
    _set_cookie(request, response, LOGIN_COOKIE, started.browser_binding, max_age=600)
    raise response


@routes.get("/oauth2/callback", name="oauth2_callback")
async def callback(request: web.Request) -> web.StreamResponse:
    await signin.check(request)
    request.app[keys.AUDIT].require_writable()  # a sign-in that cannot be recorded is refused first
    authenticator = request.app[keys.AUTHENTICATOR]
    if "error" in request.query:
        reason = request.query.get("error", "")[:100]
        refused = LoginFailed(f"The identity provider did not sign you in ({reason}).")
        await signin.failed(request, refused, reason=f"provider said {reason}", metric_reason="provider_refused")
        raise refused
    try:
        verified = await authenticator.finish(
            state=request.query.get("state", ""),
            code=request.query.get("code", ""),
            binding_cookie=request.cookies.get(LOGIN_COOKIE),
        )
    except GatewayError as exc:  # a bad state or token, a user kept out, the provider down: counted, audited
        await signin.failed(request, exc)
        raise
    await signin.check(request, verified.identity.subject)
    session = await authenticator.open_session(verified)
    request.app[keys.METRICS].signins.inc()
    return_to = verified.return_to
    _audit(request, session.identity, "auth.login", "allowed", session=session)
    for step in await request.app[keys.ONBOARDING].welcome(session.identity):  # self-service profile, if on
        _audit(request, session.identity, step.change.action, "allowed", details=step.change.details())
        if step.provisioned is not None:
            profile = step.provisioned
            outcome: Outcome = "failed" if step.failure else "allowed"
            details: dict[str, object] = {"owner": profile.owner, "via": "auto-profile"}
            _audit(request, session.identity, "profile.create", outcome, step.failure, details, namespace=profile.name)
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


def _audit(
    request: web.Request,
    identity: Identity | None,
    action: str,
    outcome: Outcome,
    reason: str = "",
    details: dict[str, object] | None = None,
    session: Session | None = None,
    namespace: str | None = None,
) -> None:
    event = audit_request.event(
        request,
        action,
        outcome,
        identity=identity,
        session=session,
        namespace=namespace,
        reason=reason,
        details=details or {},
    )
    request.app[keys.AUDIT].emit(event)


def _set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str, max_age: int | None) -> None:
    secure = request.app[keys.SETTINGS].base_url.startswith("https://")
    response.set_cookie(name, value, path="/", httponly=True, samesite="Lax", secure=secure, max_age=max_age)
