"""`Authenticator`: who a request is, from its session cookie or bearer token (`identify`, the one place
that decides it, with the failed sign-in limits applied to tokens); and the sign-in steps (start,
finish, sign out) that the `/oauth2/*` routes call. No aiohttp.web here: the edges hand it `Credentials`."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..cookies import CookieSigner
from ..errors import IdPUnavailable, InvalidCallback, InvalidToken, NotAllowed, RefreshRejected
from ..identity import Identity
from ..sessions import Revocation, Session, SessionStore, new_session_id, token_hash
from .attempts import SignInLimits
from .oidc import (
    OIDCClient,
    PendingLogin,
    TokenSet,
    TokenVerifier,
    unverified_claims,
)

log = logging.getLogger(__name__)

LOGIN_TTL_S = 600.0  # a sign-in must come back from the provider within ten minutes
REFRESH_MARGIN_S = 60.0  # refresh this long before the tokens expire
BEARER_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class ClaimRules:
    """How an issuer's claims become our `Identity`, and who among its users may sign in at all."""

    username_claim: str = "email"
    groups_claim: str = "groups"
    # Put before every username, so that another issuer's users cannot pose as the provider's.
    username_prefix: str = ""
    allowed_email_domains: frozenset[str] = field(default_factory=frozenset)
    allowed_groups: frozenset[str] = field(default_factory=frozenset)
    allow_unverified_email: bool = False

    def username(self, claims: dict[str, Any]) -> str | None:
        """The normalised username the claims name, if they name one. Emails are case-insensitive."""
        username = claims.get(self.username_claim)
        if not isinstance(username, str) or not username.strip():
            return None
        username = username.strip()
        return self.username_prefix + (username.lower() if "@" in username else username)

    def identity(self, claims: dict[str, Any], method: str) -> Identity:
        """Our identity for an issuer's claims; `InvalidToken` if they name nobody, `NotAllowed` if
        the user is outside the allowed domains or groups."""
        username = self.username(claims)
        if username is None:
            raise InvalidToken(f"The token has no usable {self.username_claim!r} claim.", signed_claims=claims)
        email = claims.get("email")
        email = email.lower() if isinstance(email, str) and email else None
        if email is not None and claims.get("email_verified") is False and not self.allow_unverified_email:
            if self.username_claim == "email":
                raise NotAllowed("Your email address is not verified at the identity provider.", username=username)
            email = None  # an unverified address is nobody's: do not pass it on
        groups = claims.get(self.groups_claim) or []
        if isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, list):
            raise InvalidToken(f"The token's {self.groups_claim!r} claim is not a list.", signed_claims=claims)
        identity = Identity(
            subject=username, email=email, groups=tuple(sorted({str(g) for g in groups if str(g)})), method=method
        )
        self._admit(identity)
        return identity

    def _admit(self, identity: Identity) -> None:
        if self.allowed_email_domains:
            domain = identity.email.rpartition("@")[2] if identity.email else None
            if domain not in self.allowed_email_domains:
                raise NotAllowed("Your email domain may not sign in to this gateway.", username=identity.subject)
        if self.allowed_groups and not self.allowed_groups.intersection(identity.groups):
            raise NotAllowed("None of your groups may sign in to this gateway.", username=identity.subject)


@dataclass(frozen=True, slots=True)
class BearerIssuer:
    """An issuer whose JWTs API clients may present: its verifier, the audiences that mean us, its rules."""

    verifier: TokenVerifier
    audiences: frozenset[str]
    rules: ClaimRules


@dataclass(frozen=True, slots=True)
class Verified:
    """A sign-in whose ID token checked out, before its session exists."""

    identity: Identity
    tokens: TokenSet
    claims: dict[str, Any]
    return_to: str


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request offers to say who it is, read from it by the edge."""

    cookie: str | None  # the session cookie's value
    authorization: str | None  # the Authorization header
    client_ip: str  # the peer, or the client behind a trusted proxy: what failed sign-ins count against

    @property
    def bearer_token(self) -> str | None:
        """The token of an `Authorization: Bearer` header, if there is one."""
        header = self.authorization or ""
        return header[7:].strip() if header[:7].lower() == "bearer " else None


@dataclass(frozen=True, slots=True)
class Started:
    """A sign-in in progress: where to send the browser, and the value for its binding cookie."""

    redirect_to: str
    browser_binding: str


class Authenticator:
    def __init__(
        self,
        oidc: OIDCClient,
        sessions: SessionStore,
        signer: CookieSigner,
        rules: ClaimRules,
        bearer_audiences: frozenset[str],
        limits: SignInLimits,
        on_refresh_failed: Callable[[Session, str, bool], None] | None = None,
        extra_issuers: Sequence[BearerIssuer] = (),
        clock: Callable[[], float] = time.time,  # stamps new sessions; the session store times them by the same
    ) -> None:
        self.oidc, self.sessions, self.signer, self.rules = oidc, sessions, signer, rules
        self.clock = clock
        self.limits = limits  # the browser flow's edge applies them too, around start and finish
        own = BearerIssuer(oidc, bearer_audiences | {oidc.client_id}, rules)
        # Bearer tokens are checked by the issuer they claim, and then that issuer pins `iss` exactly.
        self.bearer_issuers = {source.verifier.issuer: source for source in (own, *extra_issuers)}
        # Told (session, reason, whether the session ended) when a refresh fails: the audit log's hook.
        self.on_refresh_failed = on_refresh_failed
        self._bearer_cache: dict[str, tuple[float, Identity, Revocation]] = {}  # token -> (exp, identity, marks)

    async def identify(self, credentials: Credentials, *, touch: bool = True) -> tuple[Identity | None, Session | None]:
        """Who the request is: by its bearer token (with the limits applied), else by its session cookie;
        (None, None) when neither names anyone. `touch`: whether a cookie's use counts as activity.

        Raises what refuses a token: `InvalidToken` (401), `NotAllowed` (403), `SignInLimited` (429)."""
        token = credentials.bearer_token
        if token is not None:
            return await self._bearer_identity(token, credentials.client_ip), None
        session = await self.from_cookie(credentials.cookie, touch=touch)
        return (session.identity, session) if session is not None else (None, None)

    async def _bearer_identity(self, token: str, client_ip: str) -> Identity:
        """An API client's identity from its bearer token, with failures counted and the limits applied.
        A token verified before costs nothing here: the counters are read only for a new token."""
        cached = self._bearer_cache.get(token)
        if cached is not None and cached[0] > time.time():
            identity, marks = cached[1], cached[2]
        else:
            await self.limits.check(client_ip)
            try:
                identity, expires_at, marks = await self.verify_bearer(token)
            except (InvalidToken, NotAllowed) as exc:
                # Not audited here: a refused call to a notebook or the API is audited as access.denied.
                await self.limits.failed(client_ip, exc)
                raise
            await self.limits.check(client_ip, identity.subject)
            self._remember_bearer(token, identity, expires_at, marks)
        # Every time, cached or not: a sign-out on any replica ends the tokens of that session at once
        # (one Redis read; Redis down is a 503 like any session check, never a pass).
        if await self.sessions.revoked(marks):
            raise InvalidToken("This token belongs to a session that was signed out; sign in again for a new one.")
        return identity

    async def verify_bearer(self, token: str) -> tuple[Identity, float, Revocation]:
        """An API client's identity, when its token expires, and what would revoke it. `InvalidToken` (401)
        when the token does not check out, with `username` set when the issuer vouches for the user it
        names; `NotAllowed` (403) when the sign-in rules keep the user out."""
        issuer = unverified_claims(token).get("iss")
        source = self.bearer_issuers.get(issuer.rstrip("/")) if isinstance(issuer, str) else None
        if source is None:
            raise InvalidToken("The token's issuer is not one this gateway accepts.")
        try:
            claims = await source.verifier.verify(token, audience=source.audiences, nonce=None)
            identity = source.rules.identity(claims, method="bearer")
        except InvalidToken as exc:
            if exc.signed_claims is not None:
                exc.username = source.rules.username(exc.signed_claims)
            raise
        own = source.verifier is self.oidc  # the provider's `sid` and `sub` are what its logouts name
        iat = claims.get("iat")
        marks = Revocation(
            token_hash=token_hash(token),
            sid=_str_claim(claims, "sid") if own else None,
            sub=_str_claim(claims, "sub") if own else None,
            issued_at=float(iat) if isinstance(iat, int | float) else 0.0,
        )
        return identity, float(claims["exp"]), marks

    def _remember_bearer(self, token: str, identity: Identity, expires_at: float, marks: Revocation) -> None:
        if len(self._bearer_cache) >= BEARER_CACHE_SIZE:
            self._bearer_cache.clear()  # crude but bounded; a full cache only costs re-verification
        self._bearer_cache[token] = (expires_at, identity, marks)

    async def from_cookie(self, cookie: str | None, *, touch: bool = True) -> Session | None:
        """The live session a cookie names, refreshed when its tokens are about to expire. `touch`:
        whether this use counts as the user's activity (a page polling on its own does not)."""
        session_id = self.signer.unsign(cookie)
        if session_id is None:
            return None
        session = await self.sessions.load(session_id, touch=touch)
        if session is None:
            return None
        if (
            session.refresh_token
            and session.tokens_expire_at
            and session.tokens_expire_at - time.time() < REFRESH_MARGIN_S
        ):
            return await self._refresh(session)
        return session

    async def _refresh(self, session: Session) -> Session | None:
        assert session.refresh_token is not None
        try:
            tokens, claims = await self.oidc.refresh(session.refresh_token)
        except RefreshRejected:
            log.info("refresh refused for %s: ending the session", session.identity.subject)
            await self.sessions.delete(session.id)
            if self.on_refresh_failed is not None:
                self.on_refresh_failed(session, "the provider refused the refresh token", True)
            return None
        except (IdPUnavailable, InvalidToken) as exc:  # transient, or a provider glitch: keep the session
            log.warning("refresh failed for %s, keeping the session: %s", session.identity.subject, exc.message)
            if self.on_refresh_failed is not None:
                self.on_refresh_failed(session, exc.message, False)
            return session
        try:
            identity = self.rules.identity(claims, "session") if claims else session.identity
        except NotAllowed as exc:  # e.g. taken out of the allowed groups since signing in
            log.info("refreshed identity of %s is no longer allowed: ending the session", session.identity.subject)
            await self.sessions.delete(session.id)
            if self.on_refresh_failed is not None:
                self.on_refresh_failed(session, exc.message, True)
            return None
        except InvalidToken as exc:
            log.warning("refreshed ID token of %s unusable, keeping the session: %s", session.identity.subject, exc)
            return session
        session = replace(
            session,
            identity=identity,
            id_token=tokens.id_token or session.id_token,
            refresh_token=tokens.refresh_token or session.refresh_token,
            tokens_expire_at=tokens.expires_at,
        )
        await self.sessions.save(session)
        return session

    async def start(self, return_to: str) -> Started:
        login = PendingLogin.new()
        binding = secrets.token_urlsafe(24)
        redirect_to = await self.oidc.authorization_url(login)
        await self.sessions.put_login(
            login.state,
            {"nonce": login.nonce, "verifier": login.verifier, "return_to": return_to, "binding": binding},
            ttl_s=LOGIN_TTL_S,
        )
        return Started(redirect_to, self.signer.sign(binding))

    async def finish(self, *, state: str, code: str, binding_cookie: str | None) -> Verified:
        """Check a sign-in: the pending login is taken (once), the code exchanged, the ID token
        checked. `InvalidToken` carries the username when the provider signed the token it refused."""
        pending = await self.sessions.take_login(state) if state else None
        if pending is None:
            raise InvalidCallback("This sign-in is unknown, expired or already used; please sign in again.")
        if self.signer.unsign(binding_cookie) != pending["binding"]:
            raise InvalidCallback("This sign-in was started in another browser; please sign in again.")
        if not code:
            raise InvalidCallback("The identity provider returned no authorization code.")
        login = PendingLogin(state, pending["nonce"], pending["verifier"])
        try:
            tokens, claims = await self.oidc.exchange(code, login)
            identity = self.rules.identity(claims, method="session")
        except InvalidToken as exc:
            if exc.signed_claims is not None:
                exc.username = self.rules.username(exc.signed_claims)
            raise
        return Verified(identity, tokens, claims, pending["return_to"])

    async def open_session(self, verified: Verified) -> Session:
        now, claims, tokens = self.clock(), verified.claims, verified.tokens
        session = Session(
            id=new_session_id(),
            identity=verified.identity,
            created_at=now,
            last_seen=now,
            id_token=tokens.id_token,
            refresh_token=tokens.refresh_token,
            tokens_expire_at=tokens.expires_at or (float(claims["exp"]) if "exp" in claims else None),
            provider_sid=_str_claim(claims, "sid"),
            provider_sub=_str_claim(claims, "sub"),
        )
        await self.sessions.save(session)
        return session

    async def sign_out(self, session: Session | None, post_logout_redirect_uri: str) -> str | None:
        """End the session everywhere; return the provider's end-session URL, if it has one."""
        if session is None:
            return None
        # Its tokens end with it: the ID token (were it ever read, it is no API key) and, with the provider's
        # `sid`, every token of that provider session.
        await self.sessions.revoke(
            Revocation(
                token_hash=token_hash(session.id_token) if session.id_token else None,
                sid=session.provider_sid,
                issued_at=self.clock(),
            )
        )
        await self.sessions.delete(session.id)
        return await self.oidc.end_session_url(session.id_token, post_logout_redirect_uri)

    async def back_channel_logout(self, logout_token: str) -> int:
        """End the sessions a provider's logout token names (by `sid`, `sub`, or both)."""
        claims = await self.oidc.verify_logout_token(logout_token)
        sub, sid = _str_claim(claims, "sub"), _str_claim(claims, "sid")
        # A `sid` names one provider session: its tokens end. A `sub` alone ends every token of that user issued so far.
        await self.sessions.revoke(Revocation(sid=sid) if sid else Revocation(sub=sub, issued_at=time.time()))
        return await self.sessions.delete_for(provider_sub=sub, provider_sid=sid)


def _str_claim(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) and value else None
