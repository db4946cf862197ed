"""Notebook origins at the edge: who may reach which host, and the handshake that gives a notebook
origin its own credential (isolated mode; see docs/security.md).

The handshake, for a browser without a credential on `https://nb1--alice.<domain>`:
1. The notebook origin sets a random state cookie (host-only, HttpOnly) and redirects to the gateway
   host: `/oauth2/notebook-login?notebook=alice/nb1&state=<state>&rd=<path>`.
2. The gateway host (which has the session cookie, and only it) checks the session and the policy,
   and issues a code: single-use, valid for `CODE_TTL_S`, recording the session, the notebook and a
   hash of the state. It redirects to the notebook origin's `/_gateway/notebook-callback?code=`.
3. The notebook origin takes the code (once) and accepts it only on that notebook's host, from the
   browser holding the matching state cookie, while the session lives. It sets the notebook's
   credential cookie and redirects to `<path>`.
A code sent to someone else's browser fails at 3 (no matching state): nobody can be signed in to a
notebook as someone else. The credential names the session, so it ends when the session does.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

from aiohttp import web

from .. import keys, routing
from ..cookies import NOTEBOOK_COOKIE, NOTEBOOK_STATE_COOKIE, notebook_cookie_name
from ..errors import (
    BadRequest,
    Forbidden,
    GatewayError,
    InvalidHandshake,
    InvalidPath,
    LoginRequired,
    MisdirectedRequest,
    NotFound,
)
from ..identity import Identity
from ..names import is_dns_label
from ..notebook_credentials import Credential, Grant, binding_of, new_secret
from ..sessions import Session
from . import signin

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

CALLBACK_PATH = "/_gateway/notebook-callback"
# The callback authenticates by its code; the login route needs the gateway session like any page.
PUBLIC = frozenset({"notebook_callback"})
# Served on a notebook's host besides its own paths: the callback, and the `/oauth2/auth` checks a
# proxy in front makes for that host (web/ext_authz.py), which pass its Host on.
ON_NOTEBOOK_HOSTS = PUBLIC | {"oauth2_auth", "oauth2_auth_prefix"}
STATE_TTL_S = 600  # a handshake started in a tab must come back within ten minutes

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def notebook_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Keep each host to its own job: the gateway host serves no notebook, a notebook host serves its
    notebook (and the handshake callback) only. A browser without a credential is sent to the handshake."""
    origins = request.app[keys.ORIGINS]
    if not origins.isolated:
        return await handler(request)
    target = request[keys.NOTEBOOK_PATH]
    label = origins.notebook_label(request.host)
    if label is None:  # the gateway's host (or any other name it is reached by)
        if target is None:
            return await handler(request)
        origin = origins.origin(target.namespace, target.name)
        if request.method in ("GET", "HEAD"):
            raise web.HTTPFound(origin + request.raw_path)
        raise MisdirectedRequest(
            f"Notebook server {target.namespace}/{target.name} is served at {origin}, not on the gateway's host; "
            "send the request there."
        )
    if request.match_info.route.name in ON_NOTEBOOK_HOSTS:
        return await handler(request)
    if target is None or not origins.serves(request.host, target.namespace, target.name):
        raise MisdirectedRequest(
            f"{request.host} serves one notebook server only; the gateway's pages are at {origins.gateway_url}."
        )
    request[keys.NOTEBOOK_ORIGIN] = origins.origin(target.namespace, target.name)
    try:
        return await handler(request)
    except LoginRequired:
        if request.method not in ("GET", "HEAD") or not _is_navigation(request):
            raise  # an API call, XHR or WebSocket gets the 401; a page load goes round the handshake
        raise _start(request, target) from None


def _is_navigation(request: web.Request) -> bool:
    headers = request.headers
    return headers.get("Sec-Fetch-Mode", "navigate") == "navigate" and "text/html" in headers.get("Accept", "")


def _start(request: web.Request, target: routing.NotebookPath, return_to: str | None = None) -> web.HTTPFound:
    """Step 1: bind the handshake to this browser with a state cookie, and go to the gateway host.
    A state cookie already set is reused, so that two tabs starting at once do not undo each other."""
    settings = request.app[keys.SETTINGS]
    secure = settings.base_url.startswith("https://")
    state_name = notebook_cookie_name(NOTEBOOK_STATE_COOKIE, secure)
    state = _single_cookie(request, state_name)
    if state is None or not 32 <= len(state) <= 64:
        state = new_secret()
    query = {"notebook": f"{target.namespace}/{target.name}", "state": state, "rd": return_to or request.raw_path}
    response = web.HTTPFound(f"{settings.base_url}/oauth2/notebook-login?{urlencode(query)}")
    response.set_cookie(state_name, state, path="/", httponly=True, samesite="Lax", secure=secure, max_age=STATE_TTL_S)
    _no_trace(response)
    return response


@routes.get("/oauth2/notebook-login", name="oauth2_notebook_login")
async def notebook_login(request: web.Request) -> web.StreamResponse:
    """Step 2, on the gateway host: a code for this session and notebook, sent to the notebook's origin."""
    origins = request.app[keys.ORIGINS]
    if not origins.isolated:
        raise NotFound()
    session = request.get(keys.SESSION)
    if session is None:
        raise BadRequest("A notebook sign-in needs a browser session; API clients send their bearer token instead.")
    # A fetch or a frame could follow the redirects unseen; a code is only ever issued to a page load.
    if request.headers.get("Sec-Fetch-Mode", "navigate") != "navigate" or request.headers.get(
        "Sec-Fetch-Dest", "document"
    ) not in ("document",):
        raise Forbidden("A notebook sign-in must be a top-level page load.")
    namespace, _, name = request.query.get("notebook", "").partition("/")
    if not is_dns_label(namespace) or not is_dns_label(name):
        raise BadRequest("`notebook` must be <namespace>/<name>.", field="notebook")
    state = request.query.get("state", "")
    if not 32 <= len(state) <= 64:
        raise BadRequest("`state` is missing or malformed.", field="state")
    request.app[keys.AUTHZ].require(request[keys.IDENTITY], namespace, "connect", name)
    grant = Grant(
        session.id, namespace, name, binding_of(state), _return_path(request.query.get("rd"), namespace, name)
    )
    code = await request.app[keys.CREDENTIALS].put_code(grant)
    response = web.HTTPFound(f"{origins.origin(namespace, name)}{CALLBACK_PATH}?{urlencode({'code': code})}")
    _no_trace(response)
    raise response


def _return_path(rd: str | None, namespace: str, name: str) -> str:
    """Where the handshake ends: a path of this notebook, or else its front page."""
    prefix = f"{routing.NOTEBOOK_ROOT}{namespace}/{name}/"
    try:
        target = routing.parse(rd) if rd else None
    except InvalidPath:
        target = None
    if target is None or (target.namespace, target.name) != (namespace, name):
        return prefix
    return rd or prefix


@routes.get(CALLBACK_PATH, name="notebook_callback")
async def callback(request: web.Request) -> web.StreamResponse:
    """Step 3, on the notebook origin: the code becomes this notebook's credential cookie."""
    origins = request.app[keys.ORIGINS]
    if not origins.isolated or not origins.notebook_label(request.host):
        raise NotFound()
    settings = request.app[keys.SETTINGS]
    secure = settings.base_url.startswith("https://")
    code = request.query.get("code", "")
    grant = await request.app[keys.CREDENTIALS].take_code(code) if code else None
    if grant is None:
        raise InvalidHandshake("This notebook sign-in is unknown, expired or already used; open the notebook again.")
    if not origins.serves(request.host, grant.namespace, grant.name):
        raise InvalidHandshake("This notebook sign-in was for another notebook server.")
    state = _single_cookie(request, notebook_cookie_name(NOTEBOOK_STATE_COOKIE, secure))
    if state is None or not hmac.compare_digest(binding_of(state), grant.binding):
        raise InvalidHandshake("This notebook sign-in was started in another browser; open the notebook again.")
    session = await request.app[keys.SESSIONS].load(grant.session_id, touch=False)
    if session is None:
        raise InvalidHandshake("Your session ended before the notebook sign-in finished; sign in again.")
    credential = Credential(new_secret(), session.id, grant.namespace, grant.name)
    await request.app[keys.CREDENTIALS].save(credential, settings.session_max_age_s)
    signer = request.app[keys.AUTHENTICATOR].signer
    response = web.HTTPFound(grant.return_to)
    response.set_cookie(
        notebook_cookie_name(NOTEBOOK_COOKIE, secure),
        signer.sign(credential.id),
        path="/",
        httponly=True,
        samesite="Lax",
        secure=secure,
    )
    response.del_cookie(notebook_cookie_name(NOTEBOOK_STATE_COOKIE, secure), path="/")
    _no_trace(response)
    raise response


async def identify(request: web.Request, *, touch: bool) -> tuple[Identity | None, Session | None]:
    """Who a request on a notebook origin is: its bearer token, or this notebook's credential and the
    session behind it. The gateway's session cookie is never looked at here (it never comes here)."""
    if signin.credentials(request).bearer_token is not None:
        return await signin.identify(request, touch=touch)
    target = request[keys.NOTEBOOK_PATH]
    secure = request.app[keys.SETTINGS].base_url.startswith("https://")
    authenticator = request.app[keys.AUTHENTICATOR]
    credential_id = authenticator.signer.unsign(_single_cookie(request, notebook_cookie_name(NOTEBOOK_COOKIE, secure)))
    if credential_id is None or target is None:
        return None, None
    credential = await request.app[keys.CREDENTIALS].load(credential_id)
    if credential is None or (credential.namespace, credential.name) != (target.namespace, target.name):
        return None, None
    # Through the authenticator, so that the session's tokens are refreshed as on the gateway host.
    session = await authenticator.from_cookie(authenticator.signer.sign(credential.session_id), touch=touch)
    return (session.identity, session) if session is not None else (None, None)


def _single_cookie(request: web.Request, name: str) -> str | None:
    """The cookie's value when the browser sent exactly one by that name. Two mean that someone set
    another for a parent domain or a narrower path, to shadow ours: neither is trusted then."""
    values = [
        value.strip()
        for header in request.headers.getall("Cookie", [])
        for pair in header.split(";")
        for key, _, value in [pair.strip().partition("=")]
        if key == name
    ]
    return values[0] if len(values) == 1 else None


def _no_trace(response: web.StreamResponse) -> None:
    """Codes and states ride in URLs: keep them out of caches and Referer headers."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"


async def end_credentials(request: web.Request, session: Session) -> None:
    """Sign-out: delete the session's notebook credentials (they would fail with the session anyway)."""
    try:
        await request.app[keys.CREDENTIALS].end_session(session.id)
    except GatewayError as exc:  # the session itself is gone, which already ends them
        log.warning("could not delete the notebook credentials of a signed-out session: %s", exc.message)


async def identify_check(request: web.Request, original: str) -> tuple[Identity | None, Session | None]:
    """For `/oauth2/auth`: who the checked request is. On a notebook's host (the proxy in front passes
    the original Host) that is its bearer token or that notebook's credential, never the session
    cookie; a path of anything but that notebook is refused. Elsewhere, as on the gateway's host."""
    origins = request.app[keys.ORIGINS]
    if not origins.isolated or origins.notebook_label(request.host) is None:
        return await signin.identify(request)
    target = routing.parse(original)  # InvalidPath: 400
    if target is None or not origins.serves(request.host, target.namespace, target.name):
        raise Forbidden(f"{request.host} serves one notebook server only.")
    request[keys.NOTEBOOK_PATH] = target
    return await identify(request, touch=True)


def start_for_check(request: web.Request, original: str) -> web.HTTPFound | None:
    """For an ext_authz check of a page load on a notebook's host without a credential: the handshake's
    first redirect (and its state cookie, which the proxy passes on); None anywhere else."""
    target = request.get(keys.NOTEBOOK_PATH)
    if target is None or not request.app[keys.ORIGINS].notebook_label(request.host):
        return None
    return _start(request, target, original)
