"""`OIDCClient`: discovery, PKCE, code exchange, token checks and refresh, over an injected aiohttp session.

Tokens are checked with pyjwt against a JWKS we fetch ourselves, as OpenID Connect Core §3.1.3.7 asks:
pin `iss`, check `aud`, `azp` and `nonce`, accept only asymmetric algorithms the provider advertises, and
refetch the JWKS once when a `kid` is unknown.

Why no OAuth client library: authlib was imported here for one helper (the PKCE challenge, two lines of
hashlib). Its async client would bring httpx beside aiohttp, a second HTTP stack with its own pools,
timeouts and TLS settings, while this client shares the gateway's aiohttp session and its failure
semantics (`IdPUnavailable` -> 503, `RefreshRejected` ends the session, a token refused after its
signature checked out still names its user for the sign-in limits). Its claims validation would replace
pyjwt's, which we keep for the extra issuers' JWKS anyway. The protocol steps are few and each is tested
against a real provider (tests/test_oidc_providers.py, tests/test_signin.py) and a hostile fake one.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import secrets
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

import aiohttp
from yarl import URL

from ..errors import IdPUnavailable, InvalidToken, RefreshRejected, TokenRequestRefused

if TYPE_CHECKING:
    import jwt

# pyjwt (and with it cryptography, about 10 MiB) is imported by the functions that read a token, at the first
# sign-in or bearer request: a replica serving signed-in sessions never needs it (tests/test_lazy_imports.py).

log = logging.getLogger(__name__)

# Never `none`, never HS* (a provider's public key must not double as an HMAC secret).
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LEEWAY_S = 60  # clock skew we tolerate between us and the provider
DISCOVERY_TTL_S = 3600.0
JWKS_REFETCH_MIN_S = 5.0  # after a refetch that did not find a kid, wait this long before another


def _signed_but_refused() -> tuple[type[Exception], ...]:
    """Refusals pyjwt can only reach once the signature has checked out (its decode verifies the signature
    first): the token is the issuer's, only its claims are wrong."""
    import jwt

    return (
        jwt.ExpiredSignatureError,
        jwt.ImmatureSignatureError,
        jwt.InvalidAudienceError,
        jwt.InvalidIssuerError,
        jwt.InvalidIssuedAtError,
        jwt.MissingRequiredClaimError,
    )


@dataclass(frozen=True, slots=True)
class Provider:
    """The parts of a provider's discovery document we use."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None
    userinfo_endpoint: str | None
    algorithms: frozenset[str]
    device_authorization_endpoint: str | None = None  # RFC 8628, for the CLI's `login --device`


@dataclass(frozen=True, slots=True)
class Trust:
    """What checking a token needs: the exact issuer, where its keys are, the algorithms it may use."""

    issuer: str
    jwks_uri: str
    algorithms: frozenset[str]


@dataclass(frozen=True, slots=True)
class TokenSet:
    id_token: str | None
    access_token: str | None
    refresh_token: str | None
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class DeviceAuthorization:
    """The provider's answer to a device authorization request (RFC 8628 §3.2)."""

    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_at: float
    interval_s: float


@dataclass(frozen=True, slots=True)
class PendingLogin:
    """What the browser's sign-in must come back with: kept server-side, keyed by `state`."""

    state: str
    nonce: str
    verifier: str

    @classmethod
    def new(cls) -> PendingLogin:
        return cls(secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(64))

    @property
    def challenge(self) -> str:
        return s256_challenge(self.verifier)


class TokenVerifier:
    """Checks the JWTs of one issuer: signature against its published keys, then the claims.

    Keys come from the issuer's discovery document, or from `jwks_url` when it is given (some issuers,
    such as a Kubernetes API server, publish keys at an address the gateway reaches differently from
    the one they advertise). `ca_file` trusts a private CA; `token_file` is sent as a bearer token when
    fetching (read each time: projected service-account tokens rotate)."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        issuer: str,
        jwks_url: str | None = None,
        ca_file: Path | None = None,
        token_file: Path | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.http = http
        self.issuer = issuer.rstrip("/")  # for finding the verifier of a token; `trust()` pins it exactly
        self._exact_issuer = issuer
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._jwks_url, self._token_file = jwks_url, token_file
        self._ssl: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
        self._provider: Provider | None = None
        self._provider_fetched_at = 0.0
        self._keys: dict[str, jwt.PyJWK] = {}
        self._last_miss = -JWKS_REFETCH_MIN_S  # when a refetch last failed to find a token's kid
        self._lock = asyncio.Lock()

    async def provider(self) -> Provider:
        """The discovery document, fetched once an hour; the issuer in it must be ours exactly."""
        if self._provider is not None and time.monotonic() - self._provider_fetched_at < DISCOVERY_TTL_S:
            return self._provider
        async with self._lock:
            if self._provider is None or time.monotonic() - self._provider_fetched_at >= DISCOVERY_TTL_S:
                doc = await self._get_json(f"{self.issuer}/.well-known/openid-configuration")
                self._provider = _parse_discovery(doc, self.issuer)
                self._provider_fetched_at = time.monotonic()
            return self._provider

    async def trust(self) -> Trust:
        if self._jwks_url is not None:  # no discovery: the key types in the set bound the algorithms
            return Trust(self._exact_issuer, self._jwks_url, ASYMMETRIC_ALGORITHMS)
        provider = await self.provider()
        return Trust(provider.issuer, provider.jwks_uri, provider.algorithms)

    async def verify(self, token: str, *, audience: str | frozenset[str], nonce: str | None) -> dict[str, Any]:
        """Check a JWT's signature and claims; raise `InvalidToken` with the reason otherwise.

        `nonce`: the expected nonce of an ID token from a sign-in; None for tokens that carry none
        (refreshed ID tokens, access tokens, logout tokens).
        """
        import jwt

        trust = await self.trust()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"The token is malformed: {exc}") from None
        alg = header.get("alg")
        if alg not in ASYMMETRIC_ALGORITHMS or alg not in trust.algorithms:
            raise InvalidToken(f"The token's algorithm {alg!r} is not accepted.")
        key = await self._key(header.get("kid"))
        audiences = [audience] if isinstance(audience, str) else sorted(audience)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=audiences,
                issuer=trust.issuer,
                leeway=LEEWAY_S,
                options={"require": ["iss", "aud", "exp", "iat"]},
            )
        except _signed_but_refused() as exc:  # pyjwt checks these only after the signature has checked out
            raise InvalidToken(f"The token was refused: {exc}", signed_claims=unverified_claims(token)) from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"The token was refused: {exc}") from None
        if claims["iat"] > time.time() + LEEWAY_S:
            raise InvalidToken("The token was issued in the future.", signed_claims=claims)
        token_audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        azp = claims.get("azp")
        if len(token_audiences) > 1 and azp is None:
            raise InvalidToken("The token has several audiences and no authorized party (azp).", signed_claims=claims)
        if azp is not None and azp not in audiences:
            raise InvalidToken("The token was issued to another client (azp).", signed_claims=claims)
        if nonce is not None and claims.get("nonce") != nonce:
            raise InvalidToken("The token's nonce does not match this sign-in.", signed_claims=claims)
        return claims

    async def _key(self, kid: object) -> jwt.PyJWK:
        if not isinstance(kid, str | None):
            raise InvalidToken("The token's key id is malformed.")
        unknown = kid is not None and kid not in self._keys
        # The provider may have rotated its keys: look once more. A forged kid would make every
        # request refetch, so after a refetch that still lacked the kid, wait a while before the next.
        if not self._keys or (unknown and time.monotonic() - self._last_miss >= JWKS_REFETCH_MIN_S):
            await self._load_keys()
            if kid is not None and kid not in self._keys:
                self._last_miss = time.monotonic()
        if kid is None:
            if len(self._keys) != 1:
                raise InvalidToken("The token names no key and the provider has several.")
            return next(iter(self._keys.values()))
        if kid not in self._keys:
            raise InvalidToken("The token was signed with a key the provider does not publish.")
        return self._keys[kid]

    async def _load_keys(self) -> None:
        import jwt

        jwks = await self._get_json((await self.trust()).jwks_uri)
        try:
            key_set = jwt.PyJWKSet.from_dict(jwks)
        except jwt.PyJWTError as exc:
            raise IdPUnavailable(f"The identity provider's key set is unusable: {exc}") from None
        self._keys = {key.key_id or "": key for key in key_set.keys if key.public_key_use in (None, "sig")}

    async def _get_json(self, url: str) -> dict[str, Any]:
        headers = {}
        if self._token_file is not None:
            try:
                headers["Authorization"] = f"Bearer {self._token_file.read_text().strip()}"
            except OSError as exc:
                raise IdPUnavailable(f"The token for {self.issuer} could not be read: {exc.strerror}") from None
        try:
            async with self.http.get(url, headers=headers, ssl=self._ssl, timeout=self.timeout) as resp:
                if resp.status != 200:
                    raise IdPUnavailable(f"The identity provider answered {resp.status} for {url}.")
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise IdPUnavailable(f"The identity provider did not answer: {type(exc).__name__}") from None
        if not isinstance(data, dict):
            raise IdPUnavailable(f"The identity provider sent something other than JSON from {url}.")
        return data


class OIDCClient(TokenVerifier):
    """One relying party at one provider. Discovery is lazy and cached, so the gateway starts (and
    existing sessions keep working) while the provider is down; only signing in needs it.

    A confidential client (the gateway) authenticates with client_secret_basic; a public one (the CLI's
    `login`, `client_secret=None`) only names itself, and PKCE alone binds its code (RFC 8252)."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        issuer: str,
        client_id: str,
        client_secret: str | None,
        redirect_uri: str,
        scopes: tuple[str, ...],
        timeout_s: float = 10.0,
    ) -> None:
        super().__init__(http, issuer=issuer, timeout_s=timeout_s)
        self.client_id, self._client_secret = client_id, client_secret
        self.redirect_uri, self.scopes = redirect_uri, scopes

    async def authorization_url(self, login: PendingLogin) -> str:
        provider = await self.provider()
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": " ".join(self.scopes),
            "state": login.state,
            "nonce": login.nonce,
            "code_challenge": login.challenge,
            "code_challenge_method": "S256",
        }
        return str(URL(provider.authorization_endpoint).update_query(query))

    async def exchange(self, code: str, login: PendingLogin) -> tuple[TokenSet, dict[str, Any]]:
        """Trade a code for tokens and return them with the checked ID token's claims."""
        tokens = await self._token_request(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.redirect_uri,
                "code_verifier": login.verifier,
            }
        )
        if tokens.id_token is None:
            raise InvalidToken("The identity provider returned no ID token.")
        claims = await self.verify(tokens.id_token, audience=self.client_id, nonce=login.nonce)
        return tokens, claims

    async def refresh(self, refresh_token: str) -> tuple[TokenSet, dict[str, Any] | None]:
        """New tokens for a refresh token. `RefreshRejected` is final; `IdPUnavailable` is not."""
        tokens = await self._token_request({"grant_type": "refresh_token", "refresh_token": refresh_token})
        claims = None
        if tokens.id_token is not None:
            claims = await self.verify(tokens.id_token, audience=self.client_id, nonce=None)
        return tokens, claims

    async def device_authorization(self) -> DeviceAuthorization:
        """Start the device flow (RFC 8628): a code for the person to enter at the provider's page."""
        provider = await self.provider()
        if provider.device_authorization_endpoint is None:
            raise IdPUnavailable("The identity provider does not offer the device flow.")
        form = {"client_id": self.client_id, "scope": " ".join(self.scopes)}
        try:
            async with self.http.post(
                provider.device_authorization_endpoint,
                data=form,
                headers={"Accept": "application/json"},
                timeout=self.timeout,
            ) as resp:
                data = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise IdPUnavailable(f"The identity provider did not answer: {type(exc).__name__}") from None
        if status != 200 or not isinstance(data, dict):
            error = data.get("error", status) if isinstance(data, dict) else status
            raise IdPUnavailable(f"The identity provider refused the device authorization: {error}.")
        try:
            return DeviceAuthorization(
                device_code=str(data["device_code"]),
                user_code=str(data["user_code"]),
                verification_uri=str(data["verification_uri"]),
                verification_uri_complete=data.get("verification_uri_complete"),
                expires_at=time.time() + float(data["expires_in"]),
                interval_s=float(data.get("interval", 5)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IdPUnavailable(f"The identity provider's device authorization lacks {exc}.") from None

    async def device_token(self, device: DeviceAuthorization) -> tuple[TokenSet, dict[str, Any]]:
        """One poll of the token endpoint for a device code: `TokenRequestRefused` with
        `authorization_pending` or `slow_down` while the person has not finished."""
        grant = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": device.device_code}
        tokens = await self._token_request(grant)
        if tokens.id_token is None:
            raise InvalidToken("The identity provider returned no ID token.")
        return tokens, await self.verify(tokens.id_token, audience=self.client_id, nonce=None)

    async def verify_logout_token(self, token: str) -> dict[str, Any]:
        """A back-channel logout token: signed like an ID token, with the logout event and no nonce."""
        claims = await self.verify(token, audience=self.client_id, nonce=None)
        events = claims.get("events")
        if not isinstance(events, dict) or BACKCHANNEL_LOGOUT_EVENT not in events:
            raise InvalidToken("The logout token has no back-channel logout event.")
        if "nonce" in claims:
            raise InvalidToken("A logout token must not carry a nonce.")
        if not claims.get("sub") and not claims.get("sid"):
            raise InvalidToken("The logout token names neither a user (sub) nor a session (sid).")
        if not claims.get("jti"):
            raise InvalidToken("The logout token has no jti.")
        return claims

    async def end_session_url(self, id_token_hint: str | None, post_logout_redirect_uri: str) -> str | None:
        """Where to send the browser to end the provider's session, if the provider says."""
        try:
            provider = await self.provider()
        except IdPUnavailable:
            return None  # our session is gone already; the provider's will expire by itself
        if provider.end_session_endpoint is None:
            return None
        query = {"post_logout_redirect_uri": post_logout_redirect_uri, "client_id": self.client_id}
        if id_token_hint:
            query["id_token_hint"] = id_token_hint
        return str(URL(provider.end_session_endpoint).update_query(query))

    async def _token_request(self, form: dict[str, str]) -> TokenSet:
        provider = await self.provider()
        headers = {"Accept": "application/json"}
        if self._client_secret is None:
            form = {**form, "client_id": self.client_id}
        else:
            secret = _form_quote(self._client_secret)
            headers["Authorization"] = aiohttp.encode_basic_auth(_form_quote(self.client_id), secret)
        try:
            async with self.http.post(
                provider.token_endpoint, data=form, headers=headers, timeout=self.timeout
            ) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise IdPUnavailable(f"The identity provider did not answer: {type(exc).__name__}") from None
        try:
            data = json.loads(body)
        except ValueError:
            data = {}
        if status >= 500 or not isinstance(data, dict):
            raise IdPUnavailable(f"The identity provider's token endpoint failed ({status}).")
        if status != 200:
            error = str(data.get("error", "error"))
            if form["grant_type"] == "refresh_token" and error == "invalid_grant":
                raise RefreshRejected()
            raise TokenRequestRefused(error)
        expires_in = data.get("expires_in")
        return TokenSet(
            id_token=data.get("id_token"),
            access_token=data.get("access_token"),
            refresh_token=data.get("refresh_token"),
            expires_at=time.time() + float(expires_in) if isinstance(expires_in, int | float) else None,
        )


def _parse_discovery(doc: dict[str, Any], issuer: str) -> Provider:
    if doc.get("issuer", "").rstrip("/") != issuer:
        raise IdPUnavailable(f"The provider says its issuer is {doc.get('issuer')!r}, not {issuer!r}.")
    try:
        advertised = doc.get("id_token_signing_alg_values_supported") or ["RS256"]
        return Provider(
            issuer=str(doc["issuer"]),
            authorization_endpoint=str(doc["authorization_endpoint"]),
            token_endpoint=str(doc["token_endpoint"]),
            jwks_uri=str(doc["jwks_uri"]),
            end_session_endpoint=doc.get("end_session_endpoint"),
            userinfo_endpoint=doc.get("userinfo_endpoint"),
            algorithms=frozenset(str(a) for a in advertised) & ASYMMETRIC_ALGORITHMS,
            device_authorization_endpoint=doc.get("device_authorization_endpoint"),
        )
    except KeyError as exc:
        raise IdPUnavailable(f"The provider's discovery document lacks {exc}.") from None


def s256_challenge(verifier: str) -> str:
    """PKCE's S256 code challenge (RFC 7636 §4.2): BASE64URL(SHA256(ASCII(verifier))), unpadded."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def unverified_claims(token: str) -> dict[str, Any]:
    """A JWT's payload, read without checking anything: only to choose how to check it, or to name
    the user of a token whose signature has already been checked."""
    import jwt

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"The token is malformed: {exc}") from None
    return claims if isinstance(claims, dict) else {}


def _form_quote(value: str) -> str:
    """client_secret_basic wants the id and secret form-urlencoded before Basic (RFC 6749 §2.3.1)."""
    return quote_plus(value)
