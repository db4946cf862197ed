"""`Authenticator`: who a request is, from its session cookie or bearer token; and the sign-in steps
(start, finish, sign out) that the `/oauth2/*` routes call. No aiohttp.web here."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..cookies import CookieSigner
from ..errors import BadRequest
from ..identity import Identity
from ..sessions import Session, SessionStore, new_session_id
from .oidc import IdPUnavailable, InvalidToken, OIDCClient, PendingLogin, RefreshRejected

log = logging.getLogger(__name__)

LOGIN_TTL_S = 600.0  # a sign-in must come back from the provider within ten minutes
REFRESH_MARGIN_S = 60.0  # refresh this long before the tokens expire
BEARER_CACHE_SIZE = 10_000


class InvalidCallback(BadRequest):
    code = "invalid_callback"
    default_message = "This sign-in could not be completed; please sign in again."


@dataclass(frozen=True, slots=True)
class ClaimRules:
    username_claim: str = "email"
    groups_claim: str = "groups"

    def identity(self, claims: dict[str, Any], method: str) -> Identity:
        """Our identity for a provider's claims. Emails are case-insensitive, so they are lower-cased."""
        username = claims.get(self.username_claim)
        if not isinstance(username, str) or not username.strip():
            raise InvalidToken(f"The token has no usable {self.username_claim!r} claim.")
        username = username.strip()
        if "@" in username:
            username = username.lower()
        email = claims.get("email")
        groups = claims.get(self.groups_claim) or []
        if isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, list):
            raise InvalidToken(f"The token's {self.groups_claim!r} claim is not a list.")
        return Identity(
            subject=username,
            email=email.lower() if isinstance(email, str) else None,
            groups=tuple(sorted({str(g) for g in groups if str(g)})),
            method=method,
        )


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
        on_refresh_failed: Callable[[Session, str, bool], None] | None = None,
    ) -> None:
        self.oidc, self.sessions, self.signer, self.rules = oidc, sessions, signer, rules
        self.bearer_audiences = bearer_audiences | {oidc.client_id}
        # Told (session, reason, whether the session ended) when a refresh fails: the audit log's hook.
        self.on_refresh_failed = on_refresh_failed
        self._bearer_cache: dict[str, tuple[float, Identity]] = {}  # token -> (exp, identity)

    async def from_bearer(self, token: str) -> Identity:
        """An API client's identity; `InvalidToken` (401) when the token does not check out.

        A verified token is remembered until it expires (a JWT stays valid until `exp` wherever it
        is checked), so a script's repeated calls cost one signature check, not one per request."""
        now = time.time()
        cached = self._bearer_cache.get(token)
        if cached is not None and cached[0] > now:
            return cached[1]
        claims = await self.oidc.verify(token, audience=self.bearer_audiences, nonce=None)
        identity = self.rules.identity(claims, method="bearer")
        if len(self._bearer_cache) >= BEARER_CACHE_SIZE:
            self._bearer_cache.clear()  # crude but bounded; a full cache only costs re-verification
        self._bearer_cache[token] = (float(claims["exp"]), identity)
        return identity

    async def from_cookie(self, cookie: str | None) -> Session | None:
        """The live session a cookie names, refreshed when its tokens are about to expire."""
        session_id = self.signer.unsign(cookie)
        if session_id is None:
            return None
        session = await self.sessions.load(session_id)
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
        identity = self.rules.identity(claims, "session") if claims else session.identity
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

    async def finish(self, *, state: str, code: str, binding_cookie: str | None) -> tuple[Session, str]:
        """Complete a sign-in: the pending login is taken (once), the code exchanged, the ID token
        checked; returns the new session and where the user was going."""
        pending = await self.sessions.take_login(state) if state else None
        if pending is None:
            raise InvalidCallback("This sign-in is unknown, expired or already used; please sign in again.")
        if self.signer.unsign(binding_cookie) != pending["binding"]:
            raise InvalidCallback("This sign-in was started in another browser; please sign in again.")
        if not code:
            raise InvalidCallback("The identity provider returned no authorization code.")
        login = PendingLogin(state, pending["nonce"], pending["verifier"])
        tokens, claims = await self.oidc.exchange(code, login)
        identity = self.rules.identity(claims, method="session")
        now = time.time()
        session = Session(
            id=new_session_id(),
            identity=identity,
            created_at=now,
            last_seen=now,
            id_token=tokens.id_token,
            refresh_token=tokens.refresh_token,
            tokens_expire_at=tokens.expires_at or (float(claims["exp"]) if "exp" in claims else None),
            provider_sid=_str_claim(claims, "sid"),
            provider_sub=_str_claim(claims, "sub"),
        )
        await self.sessions.save(session)
        return session, pending["return_to"]

    async def sign_out(self, session: Session | None, post_logout_redirect_uri: str) -> str | None:
        """End the session everywhere; return the provider's end-session URL, if it has one."""
        if session is None:
            return None
        await self.sessions.delete(session.id)
        return await self.oidc.end_session_url(session.id_token, post_logout_redirect_uri)

    async def back_channel_logout(self, logout_token: str) -> int:
        """End the sessions a provider's logout token names (by `sid`, `sub`, or both)."""
        claims = await self.oidc.verify_logout_token(logout_token)
        return await self.sessions.delete_for(
            provider_sub=_str_claim(claims, "sub"), provider_sid=_str_claim(claims, "sid")
        )


def _str_claim(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) and value else None
