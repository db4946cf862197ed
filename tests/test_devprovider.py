"""The development OpenID provider, mounted at /dev-idp on a real loopback server and driven over HTTP."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from gateway.auth.devprovider import DevClient, create_dev_provider
from tests.conftest import unused_port

Client = TestClient[web.Request, web.Application]

CLIENT_ID, SECRET = "gateway", "s3cret-value"
CALLBACK = "http://127.0.0.1:8080/oauth2/callback"
SIGNED_OUT = "http://127.0.0.1:8080/signed-out"


class Clock:
    """The provider's injected clock, moved by hand to test expiry."""

    def __init__(self) -> None:
        self.now = time.time()  # starts at the real time: the tokens are checked by pyjwt against it

    def __call__(self) -> float:
        return self.now


class IdP:
    """A test client for the provider plus the issuer it was mounted under."""

    def __init__(self, client: Client, issuer: str, clock: Clock) -> None:
        self.http, self.issuer, self.clock = client, issuer, clock

    async def authorize(self, **overrides: str) -> aiohttp.ClientResponse:
        params = {
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": CALLBACK,
            "scope": "openid email profile groups",
            "state": "st-123",
            "nonce": "n-456",
            "code_challenge": challenge(VERIFIER),
            "code_challenge_method": "S256",
            **overrides,
        }
        return await self.http.get("/dev-idp/authorize", params=params, allow_redirects=False)

    async def sign_in(self, username: str = "alice", groups: str = "", password: str = "pw") -> aiohttp.ClientResponse:
        page = await (await self.authorize()).text()
        found = re.search(r'name="request_id" value="([^"]+)"', page)
        assert found is not None
        form = {"request_id": found.group(1), "username": username, "password": password, "groups": groups}
        return await self.http.post("/dev-idp/authorize", data=form, allow_redirects=False)

    async def code(self, username: str = "alice", groups: str = "") -> str:
        resp = await self.sign_in(username, groups)
        return parse_qs(urlsplit(resp.headers["Location"]).query)["code"][0]

    async def token(self, secret: str = SECRET, **form: str) -> aiohttp.ClientResponse:
        headers = {"Authorization": aiohttp.encode_basic_auth(CLIENT_ID, secret)}  # client_secret_basic
        return await self.http.post("/dev-idp/token", data=form, headers=headers)

    async def exchange(self, code: str, verifier: str = "") -> aiohttp.ClientResponse:
        form = {"redirect_uri": CALLBACK, "code_verifier": verifier or VERIFIER}
        return await self.token(grant_type="authorization_code", code=code, **form)

    async def verify(self, token: str, **checks: Any) -> dict[str, Any]:
        keys = jwt.PyJWKSet.from_dict(await (await self.http.get("/dev-idp/jwks")).json())
        key = keys[jwt.get_unverified_header(token)["kid"]]
        claims: dict[str, Any] = jwt.decode(token, key, algorithms=["RS256"], issuer=self.issuer, **checks)
        return claims


VERIFIER = secrets.token_urlsafe(48)


def challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@pytest.fixture
async def idp(aiohttp_client: AiohttpClient) -> IdP:
    port, clock = unused_port(), Clock()
    issuer = f"http://127.0.0.1:{port}/dev-idp"
    client = DevClient(CLIENT_ID, SECRET, redirect_uris=(CALLBACK,), post_logout_redirect_uris=(SIGNED_OUT,))
    parent = web.Application()
    parent.add_subapp("/dev-idp", create_dev_provider(issuer, {CLIENT_ID: client}, clock=clock))
    # A real loopback server on a port chosen up front, so the issuer names where it really listens.
    return IdP(await aiohttp_client(parent, server_kwargs={"port": port}), issuer, clock)


async def test_discovery_names_endpoints_under_the_issuer(idp: IdP) -> None:
    doc = await (await idp.http.get("/dev-idp/.well-known/openid-configuration")).json()
    assert doc["issuer"] == idp.issuer
    assert doc["token_endpoint"] == f"{idp.issuer}/token"
    assert doc["end_session_endpoint"] == f"{idp.issuer}/logout"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    jwks = await (await idp.http.get("/dev-idp/jwks")).json()
    assert [key["kty"] for key in jwks["keys"]] == ["RSA"] and "d" not in jwks["keys"][0]


async def test_authorize_shows_a_clearly_labelled_development_form(idp: IdP) -> None:
    resp = await idp.authorize()
    page = await resp.text()
    assert resp.status == 200
    assert "Development sign-in — accepts any username and password. Never use in production." in page
    for label in ("Username", "Password", "Groups"):
        assert f">{label}</label>" in page
    assert ">Sign in</button>" in page


async def test_full_flow_gives_an_id_token_that_verifies_with_the_jwks(idp: IdP) -> None:
    resp = await idp.sign_in("Alice@Example.COM", groups="admins, team-a,,admins")
    assert resp.status == 302
    location = urlsplit(resp.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == CALLBACK
    query = parse_qs(location.query)
    assert query["state"] == ["st-123"]
    tokens = await (await idp.exchange(query["code"][0])).json()
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 3600
    claims = await idp.verify(tokens["id_token"], audience=CLIENT_ID)
    assert (claims["nonce"], claims["azp"], claims["sub"]) == ("n-456", CLIENT_ID, "alice@example.com")
    assert claims["email"] == "alice@example.com" and claims["email_verified"] is True
    assert claims["groups"] == ["admins", "team-a"]


async def test_plain_username_gets_a_local_email_and_the_access_token_works_at_userinfo(idp: IdP) -> None:
    tokens = await (await idp.exchange(await idp.code("Bob", groups="data"))).json()
    access = await idp.verify(tokens["access_token"], audience=CLIENT_ID)
    assert "nonce" not in access and access["email"] == "bob@example.local"
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    info = await (await idp.http.get("/dev-idp/userinfo", headers=headers)).json()
    assert info["sub"] == "bob" and info["groups"] == ["data"] and info["preferred_username"] == "bob"
    # An ID token is not an access token.
    resp = await idp.http.get("/dev-idp/userinfo", headers={"Authorization": f"Bearer {tokens['id_token']}"})
    assert resp.status == 401


async def test_wrong_verifier_is_invalid_grant(idp: IdP) -> None:
    resp = await idp.exchange(await idp.code(), verifier=secrets.token_urlsafe(48))
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_grant"


async def test_replayed_code_is_refused_and_revokes_what_it_gave(idp: IdP) -> None:
    code = await idp.code()
    first = await (await idp.exchange(code)).json()
    replay = await idp.exchange(code)
    assert replay.status == 400 and (await replay.json())["error"] == "invalid_grant"
    refresh = await idp.token(grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert refresh.status == 400 and (await refresh.json())["error"] == "invalid_grant"


async def test_code_expires_after_60_seconds(idp: IdP) -> None:
    code = await idp.code()
    idp.clock.now += 61
    resp = await idp.exchange(code)
    assert resp.status == 400 and (await resp.json())["error"] == "invalid_grant"


async def test_wrong_client_secret_is_invalid_client(idp: IdP) -> None:
    resp = await idp.token(secret="not-it", grant_type="authorization_code", code=await idp.code())
    assert resp.status == 401
    assert (await resp.json())["error"] == "invalid_client"
    assert resp.headers["WWW-Authenticate"].startswith("Basic")


async def test_unregistered_redirect_uri_gets_an_error_page_not_a_redirect(idp: IdP) -> None:
    resp = await idp.authorize(redirect_uri="https://evil.example/cb")
    assert resp.status == 400 and "Location" not in resp.headers
    assert "redirect_uri is not registered" in await resp.text()
    unknown = await idp.authorize(client_id="someone-else")
    assert unknown.status == 400 and "Location" not in unknown.headers


async def test_missing_pkce_challenge_is_an_oauth_error_redirect(idp: IdP) -> None:
    for overrides in ({"code_challenge": ""}, {"code_challenge_method": "plain"}):
        resp = await idp.authorize(**overrides)
        assert resp.status == 302
        query = parse_qs(urlsplit(resp.headers["Location"]).query)
        assert query["error"] == ["invalid_request"] and query["state"] == ["st-123"]


async def test_empty_username_shows_the_form_again_escaped(idp: IdP) -> None:
    resp = await idp.sign_in(username="   ")
    assert resp.status == 400 and "Enter a username and a password" in await resp.text()
    resp = await idp.sign_in(username='<script>"x"</script>', password="")
    page = await resp.text()
    assert "<script>" not in page and "&lt;script&gt;" in page


async def test_refresh_gives_new_tokens_and_rotates_the_refresh_token(idp: IdP) -> None:
    first = await (await idp.exchange(await idp.code(groups="g1"))).json()
    form = {"client_id": CLIENT_ID, "client_secret": SECRET, "grant_type": "refresh_token"}  # client_secret_post
    resp = await idp.http.post("/dev-idp/token", data={**form, "refresh_token": first["refresh_token"]})
    second = await resp.json()
    assert resp.status == 200 and second["refresh_token"] != first["refresh_token"]
    claims = await idp.verify(second["id_token"], audience=CLIENT_ID)
    assert claims["groups"] == ["g1"] and "nonce" not in claims
    reused = await idp.http.post("/dev-idp/token", data={**form, "refresh_token": first["refresh_token"]})
    assert reused.status == 400 and (await reused.json())["error"] == "invalid_grant"


async def test_logout_redirects_to_the_registered_uri_and_ends_the_session(idp: IdP) -> None:
    tokens = await (await idp.exchange(await idp.code())).json()
    params = {"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": SIGNED_OUT, "state": "bye"}
    resp = await idp.http.get("/dev-idp/logout", params=params, allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == f"{SIGNED_OUT}?state=bye"
    refresh = await idp.token(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert refresh.status == 400 and (await refresh.json())["error"] == "invalid_grant"
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert (await idp.http.get("/dev-idp/userinfo", headers=headers)).status == 401


async def test_logout_to_an_unregistered_uri_only_says_signed_out(idp: IdP) -> None:
    tokens = await (await idp.exchange(await idp.code())).json()
    params = {"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": "https://evil.example/"}
    resp = await idp.http.get("/dev-idp/logout", params=params, allow_redirects=False)
    assert resp.status == 200 and "You are signed out" in await resp.text()


def test_only_a_public_clients_loopback_redirect_matches_on_any_port() -> None:
    cli = DevClient("notebook-gateway-cli", None, ("http://127.0.0.1/callback",))
    assert cli.allows_redirect("http://127.0.0.1:54321/callback")
    assert cli.allows_redirect("http://127.0.0.1/callback")
    for other in (
        "http://127.0.0.1:54321/elsewhere",
        "https://127.0.0.1:54321/callback",
        "http://localhost.evil.example:54321/callback",
        "http://10.0.0.1:54321/callback",
        "http://127.0.0.1:54321/callback?next=https://evil.example",
    ):
        assert not cli.allows_redirect(other), other
    gateway = DevClient("notebook-gateway", "secret", ("http://127.0.0.1:8080/oauth2/callback",))
    assert not gateway.allows_redirect("http://127.0.0.1:9999/oauth2/callback")  # confidential: exact match only
