"""A small fake OpenID provider (an aiohttp app) for what a real one will not do on request.

It signs tokens wrongly on demand (`Mint`), rotates keys, fails refreshes, and records every request it gets.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from ssl import SSLContext
from typing import Any
from urllib.parse import unquote

import jwt
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pytest_aiohttp import AiohttpServer
from yarl import URL

OTHER_CLIENT = "another-client"
EVIL_ISSUER = "http://evil.example"
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"


class Mint(enum.Enum):
    """How the next token is made. Only VALID and MULTI_AUD_WITH_AZP are tokens a relying party may accept."""

    VALID = "valid"
    UNKNOWN_KID = "unknown_kid"  # signed with a key the JWKS does not have, under a new kid
    SAME_KID_OTHER_KEY = "same_kid_other_key"  # the served kid, but signed with another key
    ALG_NONE = "alg_none"  # unsigned, `alg: none`
    HS256_PUBLIC_KEY = "hs256_public_key"  # HMAC with the served public key (PEM) as the secret
    WRONG_AUD = "wrong_aud"
    WRONG_ISS = "wrong_iss"
    EXPIRED = "expired"  # exp an hour ago: beyond any sane leeway
    NBF_FUTURE = "nbf_future"
    IAT_FUTURE = "iat_future"
    WRONG_NONCE = "wrong_nonce"
    MISSING_NONCE = "missing_nonce"
    AZP_OTHER = "azp_other"  # aud is our client, azp another one
    MULTI_AUD_NO_AZP = "multi_aud_no_azp"
    MULTI_AUD_WITH_AZP = "multi_aud_with_azp"  # valid (OIDC Core 3.1.3.7): azp names our client


class Refresh(enum.Enum):
    """What the token endpoint answers to a refresh_token grant."""

    OK = "ok"  # new ID, access and refresh tokens (the old refresh token is spent)
    INVALID_GRANT = "invalid_grant"  # fatal: the session must end
    SERVER_ERROR = "server_error"  # 500: transient
    DISCONNECT = "disconnect"  # the connection closes with no answer: transient


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private: rsa.RSAPrivateKey = field(repr=False)

    @classmethod
    def generate(cls, kid: str | None = None) -> SigningKey:
        return cls(kid or secrets.token_hex(8), rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        return jwk | {"kid": self.kid, "use": "sig", "alg": "RS256"}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@dataclass(frozen=True, slots=True)
class FakeUser:
    sub: str
    email: str
    groups: tuple[str, ...] = ()
    name: str = ""

    def claims(self) -> dict[str, Any]:
        return {"sub": self.sub, "email": self.email, "email_verified": True, "groups": list(self.groups)} | (
            {"name": self.name} if self.name else {}
        )


ALICE = FakeUser("id-alice", "alice@example.com", ("ml-team", "staff"), "Alice Example")
BOB = FakeUser("id-bob", "bob@example.com", ("staff",), "Bob Example")


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request the fake received (form is empty unless it was a urlencoded POST)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    form: dict[str, str]


@dataclass(slots=True)
class Authorization:
    """What /authorize was asked, kept under the code it issued, until /token redeems the code."""

    code: str
    client_id: str
    redirect_uri: str
    state: str | None
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    scope: str
    user: FakeUser


class FakeIdP:
    """The fake provider. Tests set the knobs (`mint`, `claims`, `user`, `check_pkce`, `refresh`, ...) as they go.

    Start it with `await FakeIdP.start(aiohttp_server)`; `issuer` is the server's URL, without a trailing slash.
    """

    def __init__(self, *, client_id: str = "notebook-gateway", client_secret: str | None = None) -> None:
        self.client_id = client_id
        self.client_secret = client_secret or secrets.token_urlsafe(24)
        self.issuer = ""
        self.server: TestServer | None = None
        # Knobs.
        self.mint = Mint.VALID  # applies to the ID tokens /token issues (code and refresh grants)
        self.claims: dict[str, Any] = {}  # merged into those ID tokens, e.g. {"email": "Alice@Example.COM"}
        self.user = ALICE  # whom /authorize signs in, without asking
        self.check_pkce = True  # False: /token ignores code_verifier (to see that the gateway checks on its own)
        self.refresh = Refresh.OK
        self.authorize_error: str | None = None  # e.g. "access_denied": /authorize redirects back with it
        self.id_token_ttl_s = 3600
        self.access_token_ttl_s = 3600
        self.discovery_overrides: dict[str, Any] = {}
        self.token_down = False  # True: /token answers 503, as a provider in trouble
        self.jwks_bearer: str | None = None  # set: /jwks answers only to this bearer token (as a Kubernetes API does)
        # State and records.
        self.keys: list[SigningKey] = [SigningKey.generate()]  # all served in the JWKS; the last one signs
        self.other_key = SigningKey.generate()  # never served
        self.requests: list[Recorded] = []
        self.authorizations: list[Authorization] = []
        self.logouts: list[dict[str, str]] = []
        self._codes: dict[str, Authorization] = {}
        self._refresh_tokens: dict[str, FakeUser] = {}

    @classmethod
    async def start(
        cls,
        aiohttp_server: AiohttpServer,
        *,
        client_id: str = "notebook-gateway",
        client_secret: str | None = None,
        port: int | None = None,
        ssl: SSLContext | None = None,
    ) -> FakeIdP:
        idp = cls(client_id=client_id, client_secret=client_secret)
        idp.server = await aiohttp_server(idp.app(), port=port, **({"ssl": ssl} if ssl else {}))
        idp.issuer = str(idp.server.make_url("")).rstrip("/")
        return idp

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        app.router.add_route("*", "/userinfo", self._userinfo)
        app.router.add_route("*", "/logout", self._logout)
        return app

    # --- helpers for tests ---------------------------------------------------------------------------------------

    @property
    def signing_key(self) -> SigningKey:
        return self.keys[-1]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.public_jwk() for key in self.keys]}

    def rotate_key(self, *, keep_old: bool = True) -> SigningKey:
        """A new key under a new kid signs from now on, and the next JWKS fetch serves it."""
        key = SigningKey.generate()
        self.keys = [*self.keys, key] if keep_old else [key]
        return key

    def requests_to(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    def sign(self, claims: dict[str, Any], *, mint: Mint = Mint.VALID, typ: str = "JWT") -> str:
        """Apply `mint` to the claims and sign them (or fail to sign them) as it says."""
        now = int(time.time())
        claims = dict(claims)
        match mint:
            case Mint.WRONG_AUD:
                claims["aud"] = OTHER_CLIENT
            case Mint.WRONG_ISS:
                claims["iss"] = EVIL_ISSUER
            case Mint.EXPIRED:
                claims |= {"iat": now - 7200, "exp": now - 3600}
            case Mint.NBF_FUTURE:
                claims["nbf"] = now + 3600
            case Mint.IAT_FUTURE:
                claims |= {"iat": now + 3600, "exp": now + 7200}
            case Mint.WRONG_NONCE:
                claims["nonce"] = "not-the-nonce"
            case Mint.MISSING_NONCE:
                claims.pop("nonce", None)
            case Mint.AZP_OTHER:
                claims["azp"] = OTHER_CLIENT
            case Mint.MULTI_AUD_NO_AZP:
                claims["aud"] = [self.client_id, OTHER_CLIENT]
                claims.pop("azp", None)
            case Mint.MULTI_AUD_WITH_AZP:
                claims |= {"aud": [self.client_id, OTHER_CLIENT], "azp": self.client_id}
        headers = {"kid": self.signing_key.kid, "typ": typ}
        match mint:
            case Mint.UNKNOWN_KID:
                return jwt.encode(claims, self.other_key.private, "RS256", {**headers, "kid": "unknown-kid"})
            case Mint.SAME_KID_OTHER_KEY:
                return jwt.encode(claims, self.other_key.private, "RS256", headers)
            case Mint.ALG_NONE:
                return jwt.encode(claims, "", "none", headers)
            case Mint.HS256_PUBLIC_KEY:
                # PyJWT refuses to do this (rightly), so the token is put together by hand.
                signing_input = f"{b64(json.dumps({'alg': 'HS256', **headers}))}.{b64(json.dumps(claims))}"
                mac = hmac.new(self.signing_key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
                return f"{signing_input}.{b64(mac)}"
        return jwt.encode(claims, self.signing_key.private, "RS256", headers)

    def id_token(
        self,
        *,
        nonce: str | None = None,
        user: FakeUser | None = None,
        mint: Mint = Mint.VALID,
        ttl_s: int | None = None,
        claims: Mapping[str, Any] | None = None,
    ) -> str:
        """An ID token for `user` (default: `self.user`) to our client; `claims` are merged in, then `mint` applies."""
        now = int(time.time())
        base = {
            "iss": self.issuer,
            "aud": self.client_id,
            "iat": now,
            "exp": now + (ttl_s if ttl_s is not None else self.id_token_ttl_s),
            "auth_time": now,
        } | (user or self.user).claims()
        if nonce is not None:
            base["nonce"] = nonce
        return self.sign(base | dict(claims or {}), mint=mint)

    def access_token(
        self,
        *,
        user: FakeUser | None = None,
        audience: str | list[str] | None = None,
        mint: Mint = Mint.VALID,
        ttl_s: int | None = None,
        scope: str = "openid email profile groups",
        claims: Mapping[str, Any] | None = None,
    ) -> str:
        """A JWT access token (RFC 9068 `at+jwt`) for bearer calls; `aud` defaults to our client id."""
        now = int(time.time())
        base = {
            "iss": self.issuer,
            "aud": audience or self.client_id,
            "client_id": self.client_id,
            "iat": now,
            "exp": now + (ttl_s if ttl_s is not None else self.access_token_ttl_s),
            "jti": secrets.token_hex(8),
            "scope": scope,
        } | (user or self.user).claims()
        return self.sign(base | dict(claims or {}), mint=mint, typ="at+jwt")

    def logout_token(
        self,
        *,
        sub: str | None = None,
        sid: str | None = None,
        mint: Mint = Mint.VALID,
        claims: Mapping[str, Any] | None = None,
    ) -> str:
        """A back-channel logout token (OIDC Back-Channel Logout 2.4): sub and/or sid, the event, no nonce."""
        now = int(time.time())
        base: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.client_id,
            "iat": now,
            "exp": now + 120,
            "jti": secrets.token_hex(8),
            "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
        }
        base |= {k: v for k, v in (("sub", sub), ("sid", sid)) if v is not None}
        return self.sign(base | dict(claims or {}), mint=mint, typ="logout+jwt")

    # --- the provider's endpoints --------------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        form: dict[str, str] = {}
        if request.content_type == "application/x-www-form-urlencoded":
            form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append(Recorded(request.method, request.path, dict(request.query), dict(request.headers), form))
        return await handler(request)

    async def _discovery(self, request: web.Request) -> web.Response:
        doc = {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "end_session_endpoint": f"{self.issuer}/logout",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": ["openid", "email", "profile", "groups", "offline_access"],
            "claims_supported": ["sub", "email", "email_verified", "name", "groups"],
            "backchannel_logout_supported": True,
            "backchannel_logout_session_supported": True,
        }
        return web.json_response(doc | self.discovery_overrides)

    async def _jwks(self, request: web.Request) -> web.Response:
        if self.jwks_bearer is not None and request.headers.get("Authorization") != f"Bearer {self.jwks_bearer}":
            return web.json_response({"kind": "Status", "code": 401, "reason": "Unauthorized"}, status=401)
        return web.json_response(self.jwks())

    async def _authorize(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("client_id") != self.client_id or not q.get("redirect_uri"):
            return web.Response(status=400, text="unknown client_id or no redirect_uri")
        back = URL(q["redirect_uri"])
        if self.authorize_error:
            raise web.HTTPFound(back.update_query(error=self.authorize_error, **state_of(q)))
        grant = Authorization(
            code=secrets.token_urlsafe(16),
            client_id=q["client_id"],
            redirect_uri=q["redirect_uri"],
            state=q.get("state"),
            nonce=q.get("nonce"),
            code_challenge=q.get("code_challenge"),
            code_challenge_method=q.get("code_challenge_method"),
            scope=q.get("scope", ""),
            user=self.user,
        )
        self.authorizations.append(grant)
        self._codes[grant.code] = grant
        raise web.HTTPFound(back.update_query(code=grant.code, **state_of(q)))

    async def _token(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        if self.token_down:
            return oauth_error("temporarily_unavailable", status=503)
        if not self._client_authenticated(request, {k: str(v) for k, v in form.items()}):
            return oauth_error("invalid_client", status=401)
        if form.get("grant_type") == "authorization_code":
            return self._redeem_code({k: str(v) for k, v in form.items()})
        if form.get("grant_type") == "refresh_token":
            return await self._redeem_refresh_token(request, str(form.get("refresh_token", "")))
        return oauth_error("unsupported_grant_type")

    def _client_authenticated(self, request: web.Request, form: dict[str, str]) -> bool:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            user, _, password = base64.b64decode(credentials).decode().partition(":")
            # RFC 6749 2.3.1: both halves are form-urlencoded before they are joined.
            client_id, secret = unquote(user.replace("+", " ")), unquote(password.replace("+", " "))
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        return client_id == self.client_id and hmac.compare_digest(secret, self.client_secret)

    def _redeem_code(self, form: dict[str, str]) -> web.Response:
        grant = self._codes.pop(form.get("code", ""), None)  # single use: a replayed code is refused
        if grant is None or form.get("redirect_uri") != grant.redirect_uri:
            return oauth_error("invalid_grant")
        if self.check_pkce:
            verifier = form.get("code_verifier", "")
            expected = b64(hashlib.sha256(verifier.encode()).digest())
            if grant.code_challenge_method != "S256" or not verifier or grant.code_challenge != expected:
                return oauth_error("invalid_grant", "PKCE verification failed")
        return web.json_response(self._tokens(grant.user, nonce=grant.nonce, scope=grant.scope))

    async def _redeem_refresh_token(self, request: web.Request, token: str) -> web.StreamResponse:
        match self.refresh:
            case Refresh.INVALID_GRANT:
                return oauth_error("invalid_grant")
            case Refresh.SERVER_ERROR:
                return oauth_error("server_error", status=500)
            case Refresh.DISCONNECT:
                assert request.transport is not None
                request.transport.close()
                return web.Response()  # never written: the connection is already gone
        user = self._refresh_tokens.pop(token, None)
        if user is None:
            return oauth_error("invalid_grant")
        return web.json_response(self._tokens(user, nonce=None, scope="openid email profile groups"))

    def _tokens(self, user: FakeUser, *, nonce: str | None, scope: str) -> dict[str, Any]:
        refresh_token = secrets.token_urlsafe(24)
        self._refresh_tokens[refresh_token] = user
        return {
            "token_type": "Bearer",
            "access_token": self.access_token(user=user),
            "expires_in": self.access_token_ttl_s,
            "id_token": self.id_token(nonce=nonce, user=user, mint=self.mint, claims=self.claims),
            "refresh_token": refresh_token,
            "scope": scope,
        }

    async def _userinfo(self, request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        keys = {key.kid: key.private.public_key() for key in self.keys}
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            if scheme.lower() != "bearer" or kid not in keys:
                raise jwt.InvalidTokenError("not a bearer token of ours")
            claims = jwt.decode(token, keys[kid], ["RS256"], audience=self.client_id, issuer=self.issuer)
        except jwt.InvalidTokenError:
            return web.json_response({"error": "invalid_token"}, status=401)
        return web.json_response({k: v for k, v in claims.items() if k in ("sub", "email", "email_verified", "groups")})

    async def _logout(self, request: web.Request) -> web.Response:
        self.logouts.append(dict(request.query))
        if target := request.query.get("post_logout_redirect_uri"):
            raise web.HTTPFound(URL(target).update_query(state_of(request.query)))
        return web.Response(text="signed out", content_type="text/html")


def state_of(query: Any) -> dict[str, str]:
    return {"state": query["state"]} if "state" in query else {}


def oauth_error(error: str, description: str | None = None, *, status: int = 400) -> web.Response:
    body = {"error": error} | ({"error_description": description} if description else {})
    return web.json_response(body, status=status)


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
