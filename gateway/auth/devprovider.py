"""The built-in development OpenID provider for `dev` mode: it accepts any username and password.

A real authorization-code provider (PKCE S256, RS256 tokens, rotating refresh tokens, RP-initiated
logout), so the gateway's OIDC client runs the same code path as with Dex or Keycloak. Never in `serve`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote_plus, urlencode

import jinja2
import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from multidict import MultiDictProxy
from yarl import URL

from .oidc import s256_challenge

log = logging.getLogger(__name__)

CODE_TTL_S = 60
TOKEN_TTL_S = 3600
PENDING_TTL_S = 600  # how long the sign-in form stays valid
REFRESH_TTL_S = 24 * 3600
SPENT_TTL_S = 600  # how long a redeemed code is remembered, to revoke its tokens if it is replayed
MAX_USERNAME_CHARS = 256
SCOPES = ("openid", "email", "profile", "groups", "offline_access")
# The claims each scope releases, as Dex and Keycloak do; `openid` alone gives only `sub`.
SCOPE_CLAIMS = {
    "email": ("email", "email_verified"),
    "profile": ("name", "preferred_username"),
    "groups": ("groups",),
}
PROTOCOL_CLAIMS = ("iss", "sub", "aud", "azp", "exp", "iat", "nbf", "nonce", "auth_time", "sid", "at_hash")
# RFC 7636 §4.1: a verifier (and an S256 challenge) is 43-128 unreserved characters.
_PKCE_VALUE = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# The sign-in page must not be framed (clickjacking) nor load anything but its inline styles.
_PAGE_HEADERS = {
    **_NO_STORE,
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("gateway.auth", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


@dataclass(frozen=True, slots=True)
class DevClient:
    """A client registered with the development provider: the gateway (confidential), and the CLI's `login`
    (public: `client_secret` None, PKCE alone binds its code, its loopback redirect on any port as RFC 8252 §7.3
    asks)."""

    client_id: str
    client_secret: str | None = field(repr=False)
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...] = ()

    def allows_redirect(self, uri: str) -> bool:
        if uri in self.redirect_uris:
            return True
        if self.client_secret is not None:
            return False  # a confidential client's redirect_uri matches exactly
        parsed = URL(uri)
        if parsed.scheme != "http" or parsed.host != "127.0.0.1" or parsed.explicit_port is None:
            return False
        return str(parsed.with_port(None)) in self.redirect_uris


@dataclass(frozen=True, slots=True)
class _User:
    name: str  # as typed, trimmed
    subject: str  # normalised: the stable `sub`
    email: str
    groups: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _AuthRequest:
    """A validated /authorize request waiting for the sign-in form."""

    client_id: str
    redirect_uri: str
    scope: tuple[str, ...]
    state: str | None
    nonce: str | None
    code_challenge: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class _Grant:
    """What one sign-in granted one client; codes and refresh tokens point at it."""

    client_id: str
    user: _User
    scope: tuple[str, ...]
    sid: str
    auth_time: int
    nonce: str | None


@dataclass(frozen=True, slots=True)
class _Code:
    grant: _Grant
    redirect_uri: str
    code_challenge: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class _Refresh:
    grant: _Grant
    expires_at: float


class _OAuthError(Exception):
    """An RFC 6749 §5.2 error answer from the token or userinfo endpoint."""

    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


def create_dev_provider(
    issuer: str, clients: Mapping[str, DevClient], *, clock: Callable[[], float] = time.time
) -> web.Application:
    """The provider as an aiohttp sub-application, to be mounted at `issuer`'s path (e.g. `/dev-idp`)."""
    provider = DevProvider(issuer, clients, clock=clock)
    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", provider.discovery, name="dev_idp_discovery")
    app.router.add_get("/jwks", provider.jwks, name="dev_idp_jwks")
    app.router.add_get("/authorize", provider.authorize, name="dev_idp_authorize")
    app.router.add_post("/authorize", provider.sign_in, name="dev_idp_sign_in")
    app.router.add_post("/token", provider.token, name="dev_idp_token")
    app.router.add_route("GET", "/userinfo", provider.userinfo, name="dev_idp_userinfo")
    app.router.add_route("POST", "/userinfo", provider.userinfo, name="dev_idp_userinfo_post")
    app.router.add_get("/logout", provider.logout, name="dev_idp_logout")
    return app


class DevProvider:
    """An OpenID provider whose state (codes, refresh tokens, sessions) lives in this object's memory."""

    def __init__(self, issuer: str, clients: Mapping[str, DevClient], *, clock: Callable[[], float]) -> None:
        if issuer.endswith("/"):
            raise ValueError("the issuer must not end with '/': it is compared exactly, character for character")
        for client_id, client in clients.items():
            if client_id != client.client_id:
                raise ValueError(f"client registered as {client_id!r} has client_id {client.client_id!r}")
        self.issuer, self._clients, self._clock = issuer, dict(clients), clock
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key()))
        self.kid = _thumbprint(self._jwk)
        self._jwk.update(kid=self.kid, use="sig", alg="RS256")
        self._pending: dict[str, _AuthRequest] = {}
        self._codes: dict[str, _Code] = {}
        self._refresh: dict[str, _Refresh] = {}
        self._spent: dict[str, tuple[str, float]] = {}  # redeemed code -> (sid, forget at)
        self._sessions: set[str] = set()  # sids signed in and not yet signed out

    # -- discovery --------------------------------------------------------------------------

    async def discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "userinfo_endpoint": f"{self.issuer}/userinfo",
                "end_session_endpoint": f"{self.issuer}/logout",
                "response_types_supported": ["code"],
                "response_modes_supported": ["query"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "code_challenge_methods_supported": ["S256"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
                "scopes_supported": list(SCOPES),
                "claims_supported": [*PROTOCOL_CLAIMS, *(c for claims in SCOPE_CLAIMS.values() for c in claims)],
                "subject_types_supported": ["public"],
                "backchannel_logout_supported": False,
            }
        )

    async def jwks(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": [self._jwk]})

    # -- authorization endpoint -------------------------------------------------------------

    async def authorize(self, request: web.Request) -> web.Response:
        """Validate the request; until client and redirect_uri are known good, never redirect (RFC 6749 §4.1.2.1)."""
        self._prune()
        params = request.query
        if any(len(params.getall(name)) > 1 for name in params):
            return _page("error", 400, message="A parameter was given more than once.")
        client = self._clients.get(params.get("client_id", ""))
        if client is None:
            return _page("error", 400, message="Unknown client_id: this application is not registered here.")
        redirect_uri = params.get("redirect_uri", "")
        if not client.allows_redirect(redirect_uri):
            return _page("error", 400, message="The redirect_uri is not registered for this application.")

        state = params.get("state")
        scope = tuple(params.get("scope", "").split())

        def refuse(error: str, description: str) -> web.Response:
            return _redirect(redirect_uri, error=error, error_description=description, state=state)

        if params.get("response_type") != "code":
            return refuse("unsupported_response_type", "Only response_type=code is supported.")
        if "openid" not in scope:
            return refuse("invalid_scope", "The scope must include openid.")
        challenge, method = params.get("code_challenge", ""), params.get("code_challenge_method")
        if not challenge:
            return refuse("invalid_request", "PKCE is required: send code_challenge.")
        if method != "S256":
            return refuse("invalid_request", "code_challenge_method must be S256.")
        if not _PKCE_VALUE.fullmatch(challenge):
            return refuse("invalid_request", "The code_challenge is malformed.")
        if "none" in params.get("prompt", "").split():
            return refuse("login_required", "This provider keeps no sign-in session; it must show its form.")

        request_id = secrets.token_urlsafe(32)
        self._pending[request_id] = _AuthRequest(
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            scope=tuple(dict.fromkeys(s for s in scope if s in SCOPES)),  # unknown scopes are ignored
            state=state,
            nonce=params.get("nonce") or None,
            code_challenge=challenge,
            expires_at=self._clock() + PENDING_TTL_S,
        )
        return _sign_in_form(request, request_id, client.client_id)

    async def sign_in(self, request: web.Request) -> web.Response:
        """The form: any non-empty username and password; answers with the code, by redirect."""
        self._prune()
        if request.headers.get("Sec-Fetch-Site") == "cross-site":  # another site posting us a login
            return _page("error", 403, message="Cross-site sign-in requests are refused.")
        form = await request.post()
        request_id = _field(form, "request_id")
        pending = self._pending.get(request_id)
        if pending is None:
            message = "This sign-in request has expired or was already used. Go back to the application and retry."
            return _page("error", 400, message=message)
        username, groups = _field(form, "username").strip(), _field(form, "groups")
        if not username or not _field(form, "password"):
            error = "Enter a username and a password (any will do)."
        elif len(username) > MAX_USERNAME_CHARS:
            error = f"The username is longer than {MAX_USERNAME_CHARS} characters."
        else:
            error = ""
        if error:
            return _sign_in_form(request, request_id, pending.client_id, error, username, groups)

        del self._pending[request_id]  # single use: a second POST of the same form gets an error page
        user = _make_user(username, groups)
        now = self._clock()
        grant = _Grant(
            client_id=pending.client_id,
            user=user,
            scope=pending.scope,
            sid=secrets.token_urlsafe(16),
            auth_time=int(now),
            nonce=pending.nonce,
        )
        code = secrets.token_urlsafe(32)
        self._codes[code] = _Code(grant, pending.redirect_uri, pending.code_challenge, now + CODE_TTL_S)
        self._sessions.add(grant.sid)
        log.info("development provider: %s signed in for client %s", user.subject, pending.client_id)
        return _redirect(pending.redirect_uri, code=code, state=pending.state)

    # -- token endpoint ---------------------------------------------------------------------

    async def token(self, request: web.Request) -> web.Response:
        self._prune()
        form = await request.post()
        try:
            client = self._authenticate(request, form)
            grant_type = _field(form, "grant_type")
            if not grant_type:
                raise _OAuthError("invalid_request", "grant_type is required.")
            if grant_type == "authorization_code":
                body = self._redeem_code(client, form)
            elif grant_type == "refresh_token":
                body = self._redeem_refresh_token(client, form)
            else:
                raise _OAuthError("unsupported_grant_type", "Use authorization_code or refresh_token.")
        except _OAuthError as exc:
            headers = dict(_NO_STORE)
            if exc.status == 401 and request.headers.get("Authorization"):
                headers["WWW-Authenticate"] = 'Basic realm="development provider"'  # RFC 6749 §5.2
            log.info("development provider: token request refused: %s", exc.error)
            payload = {"error": exc.error, "error_description": exc.description}
            return web.json_response(payload, status=exc.status, headers=headers)
        return web.json_response(body, headers=_NO_STORE)

    def _authenticate(self, request: web.Request, form: MultiDictProxy[Any]) -> DevClient:
        """client_secret_basic or client_secret_post, exactly one of them; a public client names itself only."""
        header = request.headers.get("Authorization", "")
        if header[:6].lower() == "basic ":
            if "client_secret" in form:
                raise _OAuthError("invalid_request", "Use one client authentication method, not two.")
            try:
                client_id, sep, secret = base64.b64decode(header[6:], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                sep = ""
            if not sep:
                raise _OAuthError("invalid_client", "The Basic credentials are malformed.", status=401)
            # RFC 6749 §2.3.1: both parts are form-urlencoded before they are joined.
            client_id, secret = unquote_plus(client_id), unquote_plus(secret)
            if _field(form, "client_id") not in ("", client_id):
                raise _OAuthError("invalid_client", "The client_id does not match the credentials.", status=401)
        else:
            client_id, secret = _field(form, "client_id"), _field(form, "client_secret")
        client = self._clients.get(client_id)
        if client is not None and client.client_secret is None and not header and "client_secret" not in form:
            return client  # public: `none` (RFC 7591), its code was bound by PKCE
        if client is None or client.client_secret is None:
            raise _OAuthError("invalid_client", "Client authentication failed.", status=401)
        if not hmac.compare_digest(client.client_secret.encode(), secret.encode()):
            raise _OAuthError("invalid_client", "Client authentication failed.", status=401)
        return client

    def _redeem_code(self, client: DevClient, form: MultiDictProxy[Any]) -> dict[str, Any]:
        code_value = _field(form, "code")
        # Popped on any attempt, so a code cannot be tried against many verifiers.
        code = self._codes.pop(code_value, None)
        if code is None:
            spent = self._spent.pop(code_value, None)
            if spent is not None:  # RFC 6749 §4.1.2: a replayed code revokes what it was exchanged for
                self._end_session(spent[0])
                log.warning("development provider: authorization code replayed; its tokens are revoked")
            raise _OAuthError("invalid_grant", "The authorization code is unknown, expired or already used.")
        if code.expires_at <= self._clock():
            raise _OAuthError("invalid_grant", "The authorization code has expired.")
        if code.grant.client_id != client.client_id:
            raise _OAuthError("invalid_grant", "The authorization code was issued to another client.")
        if _field(form, "redirect_uri") != code.redirect_uri:
            raise _OAuthError("invalid_grant", "The redirect_uri does not match the authorization request.")
        verifier = _field(form, "code_verifier")
        if not _PKCE_VALUE.fullmatch(verifier) or not hmac.compare_digest(
            s256_challenge(verifier), code.code_challenge
        ):
            raise _OAuthError("invalid_grant", "The code_verifier does not match the code_challenge.")
        self._spent[code_value] = (code.grant.sid, self._clock() + SPENT_TTL_S)
        return self._issue(code.grant, with_nonce=True)

    def _redeem_refresh_token(self, client: DevClient, form: MultiDictProxy[Any]) -> dict[str, Any]:
        token = _field(form, "refresh_token")
        record = self._refresh.get(token)
        if record is None or record.grant.client_id != client.client_id:
            raise _OAuthError("invalid_grant", "The refresh token is unknown, expired or already used.")
        grant = record.grant
        requested = tuple(_field(form, "scope").split())
        if requested:
            if not set(requested) <= set(grant.scope):
                raise _OAuthError("invalid_scope", "A refresh may narrow the scope, never widen it.")
            grant = replace(grant, scope=requested)
        del self._refresh[token]  # rotation: each refresh token works once
        return self._issue(grant, with_nonce=False)

    def _issue(self, grant: _Grant, *, with_nonce: bool) -> dict[str, Any]:
        """Access, ID and refresh tokens for a grant. A refreshed ID token carries no nonce (Core errata §12.2)."""
        now = int(self._clock())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": grant.user.subject,
            "aud": grant.client_id,
            "azp": grant.client_id,
            "iat": now,
            "nbf": now,
            "exp": now + TOKEN_TTL_S,
            "auth_time": grant.auth_time,
            "sid": grant.sid,
            **_user_claims(grant.user, grant.scope),
        }
        access_claims = {**claims, "client_id": grant.client_id, "scope": " ".join(grant.scope)}
        access_claims["jti"] = secrets.token_urlsafe(16)
        # RFC 9068 `typ`, so an access token is never mistaken for an ID token (and vice versa).
        access_token = self._sign(access_claims, typ="at+jwt")
        id_claims = {**claims, "at_hash": _half_hash(access_token)}
        if with_nonce and grant.nonce is not None:
            id_claims["nonce"] = grant.nonce
        refresh_token = secrets.token_urlsafe(32)
        self._refresh[refresh_token] = _Refresh(grant, now + REFRESH_TTL_S)
        return {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": TOKEN_TTL_S,
            "id_token": self._sign(id_claims, typ="JWT"),
            "refresh_token": refresh_token,
            "scope": " ".join(grant.scope),
        }

    def _sign(self, claims: dict[str, Any], *, typ: str) -> str:
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid, "typ": typ})

    # -- userinfo and logout ----------------------------------------------------------------

    async def userinfo(self, request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _bearer_refusal("Send the access token as 'Authorization: Bearer <token>'.", error=None)
        try:
            token = token.strip()
            if jwt.get_unverified_header(token).get("typ") != "at+jwt":
                raise jwt.InvalidTokenError("not an access token")
            claims = jwt.decode(
                token,
                self._key.public_key(),
                algorithms=["RS256"],
                issuer=self.issuer,
                audience=list(self._clients),
                options={"require": ["exp", "iat", "sub", "sid"]},
            )
        except jwt.InvalidTokenError:
            return _bearer_refusal("The access token is not valid.", error="invalid_token")
        if claims["sid"] not in self._sessions:
            return _bearer_refusal("The access token belongs to a session that was signed out.", error="invalid_token")
        released = ("sub", *(c for claims_ in SCOPE_CLAIMS.values() for c in claims_))
        return web.json_response({name: claims[name] for name in released if name in claims}, headers=_NO_STORE)

    async def logout(self, request: web.Request) -> web.Response:
        """RP-initiated logout: end the hinted session; redirect only to a URI registered for that client."""
        params = request.query
        client_id = params.get("client_id")
        hint = params.get("id_token_hint")
        if hint:
            try:
                claims = jwt.decode(
                    hint,
                    self._key.public_key(),
                    algorithms=["RS256"],
                    issuer=self.issuer,
                    options={"verify_aud": False, "verify_exp": False},  # a hint may have expired
                )
            except jwt.InvalidTokenError:
                log.info("development provider: logout with an invalid id_token_hint")
                return _page("signed_out", 200)
            audience = claims.get("aud")
            hinted_client = audience[0] if isinstance(audience, list) and audience else audience
            if client_id not in (None, hinted_client):
                return _page("signed_out", 200)
            client_id = hinted_client if isinstance(hinted_client, str) else None
            if isinstance(claims.get("sid"), str):
                self._end_session(claims["sid"])
        client = self._clients.get(client_id or "")
        target = params.get("post_logout_redirect_uri")
        if client is not None and target in client.post_logout_redirect_uris:
            return _redirect(target, state=params.get("state"))
        return _page("signed_out", 200)

    def _end_session(self, sid: str) -> None:
        """Forget the session and every refresh token it was given."""
        self._sessions.discard(sid)
        self._refresh = {token: rec for token, rec in self._refresh.items() if rec.grant.sid != sid}

    def _prune(self) -> None:
        """Drop whatever has expired; called per request, as dev mode sees little traffic."""
        now = self._clock()
        self._pending = {k: v for k, v in self._pending.items() if v.expires_at > now}
        self._codes = {k: v for k, v in self._codes.items() if v.expires_at > now}
        self._refresh = {k: v for k, v in self._refresh.items() if v.expires_at > now}
        self._spent = {k: v for k, v in self._spent.items() if v[1] > now}


def _make_user(username: str, groups: str) -> _User:
    subject = username.lower()  # usernames, like emails, are case-insensitive
    email = subject if "@" in subject else f"{subject}@example.local"
    group_names = tuple(dict.fromkeys(g.strip() for g in groups.split(",") if g.strip()))
    return _User(name=username, subject=subject, email=email, groups=group_names)


def _user_claims(user: _User, scope: tuple[str, ...]) -> dict[str, Any]:
    values: dict[str, Any] = {
        "email": user.email,
        "email_verified": True,
        "name": user.name,
        "preferred_username": user.subject,
        "groups": list(user.groups),
    }
    return {name: values[name] for s in scope for name in SCOPE_CLAIMS.get(s, ())}


def _thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK thumbprint: a stable `kid` derived from the key itself."""
    canonical = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def _half_hash(token: str) -> str:
    """`at_hash`: the left half of the token's SHA-256, base64url (OIDC Core §3.1.3.6)."""
    return _b64url(hashlib.sha256(token.encode("ascii")).digest()[:16])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _field(form: MultiDictProxy[Any], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _redirect(uri: str, **params: str | None) -> web.Response:
    # Appended by hand: the registered URI is matched exactly, so it must reach the browser unchanged.
    query = urlencode({k: v for k, v in params.items() if v is not None})
    location = f"{uri}{'&' if '?' in uri else '?'}{query}" if query else uri
    return web.Response(status=302, headers={"Location": location, **_NO_STORE})


def _page(page: str, status: int, **context: str) -> web.Response:
    body = _TEMPLATES.get_template("dev_login.html").render(page=page, **context)
    return web.Response(status=status, text=body, content_type="text/html", headers=_PAGE_HEADERS)


def _sign_in_form(
    request: web.Request, request_id: str, client_id: str, error: str = "", username: str = "", groups: str = ""
) -> web.Response:
    # The form posts back to this very path, wherever the provider is mounted.
    context = {"action": request.path, "request_id": request_id, "client_id": client_id}
    return _page("signin", 400 if error else 200, error=error, username=username, groups=groups, **context)


def _bearer_refusal(description: str, *, error: str | None) -> web.Response:
    challenge = 'Bearer realm="development provider"' + (f', error="{error}"' if error else "")
    payload = {"error": error or "invalid_request", "error_description": description}
    return web.json_response(payload, status=401, headers={"WWW-Authenticate": challenge, **_NO_STORE})
