"""Infrastructure checks: the node `oidc-provider` and the FakeIdP look to a relying party as they claim to."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer
from yarl import URL

from gateway.auth.oidc import s256_challenge
from tests.conftest import wait_until
from tests.fakes import node_idp as node_idp_module
from tests.fakes.idp import FakeIdP, Mint, Refresh, b64
from tests.fakes.node_idp import ALICE, BOB, GROUPS, PASSWORD, NodeIdP, SignInFailed, StartNodeIdP, sign_in, sign_out

CALLBACK = "http://127.0.0.1:9/oauth2/callback"  # never requested: sign_in stops before it
SIGNED_OUT = "http://127.0.0.1:9/signed-out"
SCOPE = "openid email profile groups offline_access"
node_idp = node_idp_module.node_idp  # the fixture, as other modules get it from conftest


@pytest.fixture(scope="module")
def op() -> Iterator[NodeIdP]:
    """One node provider for this module's tests (starting node takes a moment)."""
    with NodeIdP(redirect_uris=[CALLBACK], post_logout_redirect_uris=[SIGNED_OUT]) as idp:
        yield idp


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


async def get_json(http: aiohttp.ClientSession, url: str, **kwargs: Any) -> dict[str, Any]:
    async with http.request("GET" if "data" not in kwargs else "POST", url, **kwargs) as resp:
        body: dict[str, Any] = await resp.json()
        return body


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(client_id, secret)}


def authorize_url(config: dict[str, Any], client_id: str, *, nonce: str, verifier: str | None) -> URL:
    query = {"client_id": client_id, "redirect_uri": CALLBACK, "response_type": "code", "scope": SCOPE}
    query |= {"state": "s1", "nonce": nonce}
    if verifier is not None:
        query |= {"code_challenge": b64(hashlib.sha256(verifier.encode()).digest()), "code_challenge_method": "S256"}
    return URL(config["authorization_endpoint"]).with_query(query)


def verify(token: str, jwks: dict[str, Any], *, issuer: str, client_id: str, nonce: str | None) -> dict[str, Any]:
    """What a strict relying party checks: kid in the JWKS, RS256, iss, aud, times, nonce, azp."""
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]  # KeyError: unknown kid
    claims = jwt.decode(token, key, ["RS256"], audience=client_id, issuer=issuer, options={"require": ["exp", "iat"]})
    if claims.get("nonce") != nonce:
        raise jwt.InvalidTokenError("nonce mismatch")
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if claims.get("azp", client_id if len(audiences) == 1 else None) != client_id:
        raise jwt.InvalidTokenError("azp is not this client")
    return claims


async def code_flow(op: NodeIdP, browser: aiohttp.ClientSession, user: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sign `user` in at the node provider and redeem the code; returns (token response, verified ID token)."""
    config = await get_json(browser, f"{op.issuer}/.well-known/openid-configuration")
    nonce, verifier = secrets.token_urlsafe(16), secrets.token_urlsafe(48)
    callback = await sign_in(
        browser, authorize_url(config, op.client_id, nonce=nonce, verifier=verifier), user, PASSWORD
    )
    assert callback.with_query(None) == URL(CALLBACK) and callback.query["state"] == "s1"
    form = {"grant_type": "authorization_code", "code": callback.query["code"], "redirect_uri": CALLBACK}
    auth = basic(op.client_id, op.client_secret)
    tokens = await get_json(browser, config["token_endpoint"], data=form | {"code_verifier": verifier}, headers=auth)
    jwks = await get_json(browser, config["jwks_uri"])
    return tokens, verify(tokens["id_token"], jwks, issuer=op.issuer, client_id=op.client_id, nonce=nonce)


async def test_node_discovery_advertises_what_the_gateway_uses(op: NodeIdP, browser: aiohttp.ClientSession) -> None:
    config = await get_json(browser, f"{op.issuer}/.well-known/openid-configuration")
    assert config["issuer"] == op.issuer
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert config["id_token_signing_alg_values_supported"] == ["RS256"]
    assert config["backchannel_logout_supported"] is True
    assert {"end_session_endpoint", "revocation_endpoint", "jwks_uri", "token_endpoint"} <= config.keys()


@pytest.mark.parametrize("user", [ALICE, BOB])
async def test_node_code_flow_gives_email_and_groups(op: NodeIdP, browser: aiohttp.ClientSession, user: str) -> None:
    tokens, claims = await code_flow(op, browser, user)
    assert claims["email"] == user
    assert claims["groups"] == list(GROUPS[user])
    assert tokens["refresh_token"]


async def test_node_refuses_a_wrong_password(op: NodeIdP, browser: aiohttp.ClientSession) -> None:
    config = await get_json(browser, f"{op.issuer}/.well-known/openid-configuration")
    url = authorize_url(config, op.client_id, nonce="n", verifier="v" * 43)
    with pytest.raises(SignInFailed, match="Invalid email or password"):
        await sign_in(browser, url, ALICE, "not-the-password")


async def test_node_requires_pkce(op: NodeIdP, browser: aiohttp.ClientSession) -> None:
    config = await get_json(browser, f"{op.issuer}/.well-known/openid-configuration")
    callback = await sign_in(browser, authorize_url(config, op.client_id, nonce="n", verifier=None), ALICE, PASSWORD)
    assert callback.query["error"] == "invalid_request"
    assert "code" not in callback.query


async def test_node_refresh_grant_issues_a_new_id_token(op: NodeIdP, browser: aiohttp.ClientSession) -> None:
    tokens, first = await code_flow(op, browser, ALICE)
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    auth = basic(op.client_id, op.client_secret)
    refreshed = await get_json(browser, f"{op.issuer}/token", data=form, headers=auth)
    jwks = await get_json(browser, f"{op.issuer}/jwks")
    claims = verify(refreshed["id_token"], jwks, issuer=op.issuer, client_id=op.client_id, nonce=first["nonce"])
    assert claims["email"] == ALICE and claims["sub"] == first["sub"]


async def test_node_sign_out_sends_a_logout_token_and_returns_to_the_client(
    aiohttp_server: AiohttpServer, browser: aiohttp.ClientSession, node_idp: StartNodeIdP
) -> None:
    logout_tokens: list[str] = []

    async def backchannel(request: web.Request) -> web.Response:
        logout_tokens.append(str((await request.post())["logout_token"]))
        return web.Response()

    app = web.Application()
    app.router.add_post("/oauth2/backchannel-logout", backchannel)
    rp = await aiohttp_server(app)
    uri = str(rp.make_url("/oauth2/backchannel-logout"))
    idp = node_idp(redirect_uris=[CALLBACK], post_logout_redirect_uris=[SIGNED_OUT], backchannel_logout_uri=uri)
    tokens, claims = await code_flow(idp, browser, BOB)
    query = {"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": SIGNED_OUT, "state": "bye"}
    back = await sign_out(browser, URL(f"{idp.issuer}/session/end").with_query(query))
    await wait_until(lambda: logout_tokens)
    assert back == URL(SIGNED_OUT).with_query(state="bye")
    assert jwt.decode(logout_tokens[0], options={"verify_signature": False})["sid"] == claims["sid"]


@pytest.fixture
async def fake(aiohttp_server: AiohttpServer) -> FakeIdP:
    return await FakeIdP.start(aiohttp_server)


async def test_fake_code_flow_records_the_request_and_checks_pkce(fake: FakeIdP, http: aiohttp.ClientSession) -> None:
    config = await get_json(http, f"{fake.issuer}/.well-known/openid-configuration")
    verifier = "v" * 43
    async with http.get(
        authorize_url(config, fake.client_id, nonce="n1", verifier=verifier), allow_redirects=False
    ) as r:
        callback = URL(r.headers["Location"])
    assert fake.authorizations[0].nonce == "n1" and callback.query["state"] == "s1"
    form = {"grant_type": "authorization_code", "code": callback.query["code"], "redirect_uri": CALLBACK}
    auth = basic(fake.client_id, fake.client_secret)
    refused = await get_json(http, config["token_endpoint"], data=form | {"code_verifier": "w" * 43}, headers=auth)
    assert refused["error"] == "invalid_grant"
    assert fake.requests_to("/token")[0].form["code_verifier"] == "w" * 43


BAD_MINTS = {
    Mint.UNKNOWN_KID: KeyError,
    Mint.SAME_KID_OTHER_KEY: jwt.InvalidSignatureError,
    Mint.ALG_NONE: jwt.InvalidAlgorithmError,
    Mint.HS256_PUBLIC_KEY: jwt.InvalidAlgorithmError,
    Mint.WRONG_AUD: jwt.InvalidAudienceError,
    Mint.WRONG_ISS: jwt.InvalidIssuerError,
    Mint.EXPIRED: jwt.ExpiredSignatureError,
    Mint.NBF_FUTURE: jwt.ImmatureSignatureError,
    Mint.IAT_FUTURE: jwt.ImmatureSignatureError,
    Mint.WRONG_NONCE: jwt.InvalidTokenError,
    Mint.MISSING_NONCE: jwt.InvalidTokenError,
    Mint.AZP_OTHER: jwt.InvalidTokenError,
    Mint.MULTI_AUD_NO_AZP: jwt.InvalidTokenError,
}


@pytest.mark.parametrize("mint", BAD_MINTS, ids=lambda m: m.value)
async def test_fake_bad_mints_fail_verification(fake: FakeIdP, http: aiohttp.ClientSession, mint: Mint) -> None:
    jwks = await get_json(http, f"{fake.issuer}/jwks")
    token = fake.id_token(nonce="n1", mint=mint)
    with pytest.raises(BAD_MINTS[mint]):
        verify(token, jwks, issuer=fake.issuer, client_id=fake.client_id, nonce="n1")


@pytest.mark.parametrize("mint", [Mint.VALID, Mint.MULTI_AUD_WITH_AZP], ids=lambda m: m.value)
async def test_fake_good_mints_pass_verification(fake: FakeIdP, http: aiohttp.ClientSession, mint: Mint) -> None:
    jwks = await get_json(http, f"{fake.issuer}/jwks")
    claims = verify(
        fake.id_token(nonce="n1", mint=mint), jwks, issuer=fake.issuer, client_id=fake.client_id, nonce="n1"
    )
    assert claims["email"] == "alice@example.com"


async def test_fake_hs256_token_is_keyed_with_the_public_key(fake: FakeIdP) -> None:
    signing_input, _, signature = fake.id_token(mint=Mint.HS256_PUBLIC_KEY).rpartition(".")
    expected = hmac.new(fake.signing_key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    assert signature == b64(expected)
    assert jwt.get_unverified_header(signing_input + ".")["alg"] == "HS256"


async def test_fake_rotated_key_is_served_on_the_next_fetch(fake: FakeIdP, http: aiohttp.ClientSession) -> None:
    old_jwks = await get_json(http, f"{fake.issuer}/jwks")
    fake.rotate_key()
    token = fake.id_token()
    with pytest.raises(KeyError):
        verify(token, old_jwks, issuer=fake.issuer, client_id=fake.client_id, nonce=None)
    new_jwks = await get_json(http, f"{fake.issuer}/jwks")
    assert verify(token, new_jwks, issuer=fake.issuer, client_id=fake.client_id, nonce=None)["sub"] == "id-alice"
    assert len(fake.requests_to("/jwks")) == 2


@pytest.mark.parametrize(("refresh", "status"), [(Refresh.INVALID_GRANT, 400), (Refresh.SERVER_ERROR, 500)])
async def test_fake_refresh_failures(fake: FakeIdP, http: aiohttp.ClientSession, refresh: Refresh, status: int) -> None:
    fake.refresh = refresh
    form = {"grant_type": "refresh_token", "refresh_token": "whatever"}
    auth = basic(fake.client_id, fake.client_secret)
    async with http.post(f"{fake.issuer}/token", data=form, headers=auth) as resp:
        assert resp.status == status
        assert (await resp.json())["error"] == refresh.value


async def test_fake_refresh_disconnect_is_a_connection_error(fake: FakeIdP, http: aiohttp.ClientSession) -> None:
    fake.refresh = Refresh.DISCONNECT
    form = {"grant_type": "refresh_token", "refresh_token": "whatever"}
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await http.post(f"{fake.issuer}/token", data=form, headers=basic(fake.client_id, fake.client_secret))


async def test_fake_logout_token_and_end_session(fake: FakeIdP, http: aiohttp.ClientSession) -> None:
    jwks = await get_json(http, f"{fake.issuer}/jwks")
    claims = verify(fake.logout_token(sid="s-1"), jwks, issuer=fake.issuer, client_id=fake.client_id, nonce=None)
    assert claims["events"] == {"http://schemas.openid.net/event/backchannel-logout": {}} and claims["sid"] == "s-1"
    url = URL(f"{fake.issuer}/logout").with_query(id_token_hint="t", post_logout_redirect_uri=SIGNED_OUT, state="x")
    async with http.get(url, allow_redirects=False) as resp:
        assert resp.headers["Location"] == f"{SIGNED_OUT}?state=x"
    assert fake.logouts == [{"id_token_hint": "t", "post_logout_redirect_uri": SIGNED_OUT, "state": "x"}]


def test_the_pkce_challenge_is_rfc_7636s_example() -> None:
    # RFC 7636 Appendix B: the one worked example of S256 in the specification.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert s256_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
