"""Signing in through the gateway: against a real OpenID provider (node `oidc-provider`), the
built-in dev provider, and a fake one for every token a provider should never send."""

from __future__ import annotations

import html
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from gateway import keys
from gateway.app import create_app
from gateway.authz.rules import PolicyDoc
from gateway.cookies import SESSION_COOKIE
from tests.conftest import Client, RedisServer, make_settings, own_namespace_rule, unused_port, wait_until
from tests.fakes.idp import ALICE as FAKE_ALICE
from tests.fakes.idp import BOB as FAKE_BOB
from tests.fakes.idp import FakeIdP, Mint, Refresh
from tests.fakes.kube_api import FakeKubeAPI
from tests.fakes.node_idp import ALICE, BOB, PASSWORD, NodeIdP, StartNodeIdP, sign_in
from tests.fakes.tls import local_tls
from tests.fakes.upstream import FakeUpstream
from tests.test_api import RecordingAudit

BROWSER = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
StartGateway = Callable[..., Awaitable[Client]]


@pytest.fixture
def start_gateway(aiohttp_client: Any, tmp_path: Path, upstream: FakeUpstream) -> StartGateway:
    """A gateway on a port chosen up front (the provider must know its callback URL), routing
    /notebook/alice/nb1/ to the fake upstream."""
    routes = tmp_path / "routes.toml"
    routes.write_text(f'[[route]]\nnamespace = "alice"\nname = "nb1"\nurl = "{upstream.url}"\n')
    # alice owns namespace alice (self-service never hands out a namespace a route is in).
    (tmp_path / "policy.csv").write_text(PolicyDoc.of_rules([own_namespace_rule(ALICE)]).text)

    async def start(port: int, **overrides: Any) -> Client:
        public = f"http://127.0.0.1:{port}"
        values: dict[str, Any] = {
            "public_url": public,
            "routes_file": routes,
            "cookie_secret": "s" * 32,
            "session_store": "memory",
            # Authorization is on: alice owns namespace alice; others get their own at sign-in.
            "auto_profile": True,
            "policy_file": tmp_path / "policy.csv",
            **overrides,
        }
        app = create_app(make_settings(**values))
        client: Client = await aiohttp_client(app, server_kwargs={"port": port}, headers={"Origin": public})
        return client

    return start


async def complete(client: Client, callback: URL) -> web.StreamResponse:
    """Deliver the provider's redirect to the gateway, as the browser would."""
    async with client.session.get(callback, allow_redirects=False, headers=BROWSER) as resp:
        await resp.read()
        return resp  # type: ignore[return-value]


async def sign_in_fake(client: Client, idp: FakeIdP, rd: str = "/") -> web.StreamResponse:
    callback = await sign_in(client.session, client.make_url(f"/oauth2/start?rd={rd}"), "", "")
    return await complete(client, callback)


def headers_of(echoed: dict[str, Any]) -> dict[str, str]:
    """The headers the fake notebook received, by lower-case name."""
    return {name.lower(): value for name, value in echoed["headers"]}


def has_session(client: Client) -> bool:
    return any(cookie.key == SESSION_COOKIE for cookie in client.session.cookie_jar)


# --- the real provider -------------------------------------------------------------------------


@pytest.fixture
def node(node_idp: StartNodeIdP) -> tuple[NodeIdP, int]:
    port = unused_port()
    public = f"http://127.0.0.1:{port}"
    idp = node_idp(
        redirect_uris=[f"{public}/oauth2/callback"],
        post_logout_redirect_uris=[f"{public}/"],
        backchannel_logout_uri=f"{public}/oauth2/backchannel-logout",
    )
    return idp, port


def node_settings(idp: NodeIdP) -> dict[str, Any]:
    return {"oidc_issuer": idp.issuer, "oidc_client_id": idp.client_id, "oidc_client_secret": idp.client_secret}


async def test_a_user_signs_in_with_a_real_provider_and_reaches_their_notebook(
    node: tuple[NodeIdP, int], start_gateway: StartGateway
) -> None:
    idp, port = node
    client = await start_gateway(port, **node_settings(idp))
    callback = await sign_in(
        client.session, client.make_url("/oauth2/start?rd=/notebook/alice/nb1/echo"), ALICE, PASSWORD
    )
    resp = await complete(client, callback)
    assert resp.status == 302 and resp.headers["Location"] == "/notebook/alice/nb1/echo"
    info = await (await client.get("/oauth2/userinfo")).json()
    assert (info["user"], info["groups"]) == (ALICE, ["ml-team", "staff"])
    echoed = headers_of(await (await client.get("/notebook/alice/nb1/echo", headers={"kubeflow-userid": "x"})).json())
    assert echoed["kubeflow-userid"] == ALICE
    assert echoed["kubeflow-groups"] == "ml-team,staff"
    assert SESSION_COOKIE not in echoed.get("cookie", "")


async def test_two_users_get_their_own_identities(node: tuple[NodeIdP, int], start_gateway: StartGateway) -> None:
    idp, port = node
    client = await start_gateway(port, **node_settings(idp))
    await complete(client, await sign_in(client.session, client.make_url("/oauth2/start"), BOB, PASSWORD))
    info = await (await client.get("/oauth2/userinfo")).json()
    assert (info["user"], info["groups"]) == (BOB, ["staff"])


async def test_a_wrong_password_creates_no_session(node: tuple[NodeIdP, int], start_gateway: StartGateway) -> None:
    idp, port = node
    client = await start_gateway(port, **node_settings(idp))
    with pytest.raises(AssertionError, match="Invalid"):
        await sign_in(client.session, client.make_url("/oauth2/start"), ALICE, "wrong")
    assert not has_session(client)
    assert (await client.get("/oauth2/userinfo")).status == 401


async def test_sign_out_ends_the_session_and_visits_the_provider(
    node: tuple[NodeIdP, int], start_gateway: StartGateway
) -> None:
    idp, port = node
    client = await start_gateway(port, **node_settings(idp))
    await complete(client, await sign_in(client.session, client.make_url("/oauth2/start"), ALICE, PASSWORD))
    cookie = {SESSION_COOKIE: client.session.cookie_jar.filter_cookies(client.make_url("/"))[SESSION_COOKIE].value}
    resp = await client.post("/oauth2/sign_out", allow_redirects=False)
    end_session = URL(resp.headers["Location"])
    assert end_session.query["post_logout_redirect_uri"] == f"http://127.0.0.1:{port}/"
    assert end_session.query["id_token_hint"]
    # The old cookie, replayed, is worth nothing now.
    assert (await client.get("/oauth2/userinfo", cookies=cookie)).status == 401


# --- the development provider ------------------------------------------------------------------


async def test_dev_mode_signs_in_any_user_through_its_own_provider(start_gateway: StartGateway) -> None:
    port = unused_port()
    client = await start_gateway(port, dev_provider=True, bootstrap_admins=("carol@example.local",))
    start = await client.get("/notebook/alice/nb1/echo", headers=BROWSER, allow_redirects=False)
    assert start.status == 302 and start.headers["Location"].startswith("/oauth2/start")
    callback = await sign_in(
        client.session, client.make_url(start.headers["Location"]), "Carol", "any", fields={"groups": "ml-team, ops"}
    )
    assert (await complete(client, callback)).headers["Location"] == "/notebook/alice/nb1/echo"
    echoed = headers_of(await (await client.get("/notebook/alice/nb1/echo")).json())
    assert echoed["kubeflow-userid"] == "carol@example.local"
    assert echoed["kubeflow-groups"] == "ml-team,ops"


# --- tokens and callbacks that must be refused ---------------------------------------------------


@pytest.fixture
async def fake(aiohttp_server: Any) -> FakeIdP:
    return await FakeIdP.start(aiohttp_server)


def fake_settings(idp: FakeIdP) -> dict[str, Any]:
    return {"oidc_issuer": idp.issuer, "oidc_client_id": idp.client_id, "oidc_client_secret": idp.client_secret}


# Each forgery or misuse, and the reason the user and the audit log must be told: a 401 alone would look
# the same whichever check caught it (or if a different check refused the token by luck).
BAD_ID_TOKENS = {
    Mint.UNKNOWN_KID: "signed with a key the provider does not publish",
    Mint.SAME_KID_OTHER_KEY: "signature verification failed",
    Mint.ALG_NONE: "algorithm 'none' is not accepted",
    Mint.HS256_PUBLIC_KEY: "algorithm 'hs256' is not accepted",
    Mint.WRONG_AUD: "audience",
    Mint.WRONG_ISS: "issuer",
    Mint.EXPIRED: "expired",
    Mint.NBF_FUTURE: "not yet valid (nbf)",
    Mint.IAT_FUTURE: "(iat)",
    Mint.WRONG_NONCE: "nonce does not match",
    Mint.MISSING_NONCE: "nonce does not match",
    Mint.AZP_OTHER: "issued to another client (azp)",
    Mint.MULTI_AUD_NO_AZP: "several audiences and no authorized party",
}


@pytest.mark.parametrize("mint", BAD_ID_TOKENS, ids=lambda m: m.value)
async def test_a_bad_id_token_is_refused_with_its_reason_and_creates_no_session(
    mint: Mint, fake: FakeIdP, start_gateway: StartGateway, tmp_path: Path
) -> None:
    client = await start_gateway(unused_port(), audit_dir=tmp_path / "audit", **fake_settings(fake))
    fake.mint = mint
    resp = await sign_in_fake(client, fake)
    assert resp.status == 401
    assert not has_session(client)
    page = html.unescape(await cast(aiohttp.ClientResponse, resp).text()).lower()
    assert BAD_ID_TOKENS[mint] in page and "invalid_token" in page
    [failed] = audit_events(tmp_path / "audit", "auth.login")
    assert failed["outcome"] == "failed" and BAD_ID_TOKENS[mint] in failed["reason"].lower()


async def test_a_good_token_with_several_audiences_and_our_azp_is_accepted(
    fake: FakeIdP, start_gateway: StartGateway
) -> None:
    client = await start_gateway(unused_port(), **fake_settings(fake))
    fake.mint = Mint.MULTI_AUD_WITH_AZP
    assert (await sign_in_fake(client, fake)).status == 302
    assert has_session(client)


async def test_the_gateway_always_uses_pkce_s256(fake: FakeIdP, start_gateway: StartGateway) -> None:
    client = await start_gateway(unused_port(), **fake_settings(fake))
    await sign_in_fake(client, fake)
    authorization = fake.authorizations[-1]
    assert authorization.code_challenge_method == "S256" and authorization.code_challenge
    assert fake.requests_to("/token")[-1].form["code_verifier"]


async def test_a_replayed_state_is_refused(fake: FakeIdP, start_gateway: StartGateway) -> None:
    client = await start_gateway(unused_port(), **fake_settings(fake))
    callback = await sign_in(client.session, client.make_url("/oauth2/start"), "", "")
    assert (await complete(client, callback)).status == 302
    client.session.cookie_jar.clear()
    replay = await complete(client, callback)
    assert replay.status == 400 and not has_session(client)


async def test_a_callback_in_another_browser_is_refused(
    fake: FakeIdP, start_gateway: StartGateway, aiohttp_client: Any
) -> None:
    client = await start_gateway(unused_port(), **fake_settings(fake))
    callback = await sign_in(client.session, client.make_url("/oauth2/start"), "", "")
    client.session.cookie_jar.clear()  # the victim's browser never started this sign-in
    resp = await complete(client, callback)
    assert resp.status == 400 and not has_session(client)


async def test_a_rotated_signing_key_is_fetched_once_and_accepted(fake: FakeIdP, start_gateway: StartGateway) -> None:
    client = await start_gateway(unused_port(), **fake_settings(fake))
    await sign_in_fake(client, fake)
    client.session.cookie_jar.clear()
    fake.rotate_key(keep_old=False)
    assert (await sign_in_fake(client, fake)).status == 302
    assert len(fake.requests_to("/jwks")) == 2


async def test_forged_key_ids_do_not_make_every_sign_in_refetch_the_keys(
    fake: FakeIdP, start_gateway: StartGateway
) -> None:
    client = await start_gateway(unused_port(), **fake_settings(fake))
    fake.mint = Mint.UNKNOWN_KID
    for _ in range(3):
        client.session.cookie_jar.clear()
        assert (await sign_in_fake(client, fake)).status == 401
    assert len(fake.requests_to("/jwks")) == 1  # one look for the unknown key, then a pause


@pytest.mark.parametrize("rd", ["//evil.example/", "https://evil.example/", "/\\evil.example", "/%09/evil.example"])
async def test_sign_in_never_returns_to_another_site(rd: str, fake: FakeIdP, start_gateway: StartGateway) -> None:
    client = await start_gateway(unused_port(), **fake_settings(fake))
    resp = await sign_in_fake(client, fake, rd=str(URL.build(query={"rd": rd}).query_string).removeprefix("rd="))
    assert resp.headers["Location"] == "/"


async def test_failed_sign_ins_are_rate_limited_per_client(fake: FakeIdP, start_gateway: StartGateway) -> None:
    client = await start_gateway(unused_port(), login_failures_max=3, **fake_settings(fake))
    for _ in range(3):
        assert (await client.get("/oauth2/callback?state=forged&code=x")).status == 400
    limited = await client.get("/oauth2/start", allow_redirects=False)
    assert limited.status == 429 and int(limited.headers["Retry-After"]) > 0


async def test_behind_an_unlisted_ingress_one_client_cannot_lock_out_the_others(
    fake: FakeIdP, start_gateway: StartGateway
) -> None:
    # No GATEWAY_TRUSTED_PROXIES: every request arrives from the ingress's one address (127.0.0.1 here).
    client = await start_gateway(unused_port(), login_failures_max=3, **fake_settings(fake))
    attacker = {"X-Forwarded-For": "203.0.113.9"}
    for _ in range(10):
        assert (await client.get("/oauth2/callback?state=forged&code=x", headers=attacker)).status in (400, 429)
    assert (await client.get("/oauth2/start", headers=attacker, allow_redirects=False)).status == 429
    resp = await sign_in_from(client, "198.51.100.7")  # someone else behind the same ingress
    assert resp.status == 302 and has_session(client)


async def test_a_provider_outage_is_not_counted_as_the_users_failure(
    fake: FakeIdP, start_gateway: StartGateway
) -> None:
    client = await start_gateway(unused_port(), login_failures_max=2, **fake_settings(fake))
    fake.token_down = True
    for _ in range(3):
        assert (await sign_in_fake(client, fake)).status == 502
    fake.token_down = False
    assert (await sign_in_fake(client, fake)).status == 302 and has_session(client)


async def test_a_provider_outage_keeps_sessions_but_sign_in_says_why(
    fake: FakeIdP, start_gateway: StartGateway
) -> None:
    client = await start_gateway(unused_port(), **fake_settings(fake))
    await sign_in_fake(client, fake)
    assert fake.server is not None
    await fake.server.close()
    assert (await client.get("/oauth2/userinfo")).status == 200
    other = await start_gateway(unused_port(), **fake_settings(fake))  # never saw the provider
    resp = await other.get("/oauth2/start", headers=BROWSER, allow_redirects=False)
    assert resp.status == 502
    assert "identity provider" in await resp.text()


# --- failed sign-ins: per client address, and per user when the provider vouches for the user -----

PROXIED = {"trusted_proxies": ("127.0.0.1/32",)}  # the test client stands in for a load balancer


async def sign_in_from(client: Client, ip: str) -> aiohttp.ClientResponse:
    """The whole browser round trip through the fake provider, as a client at `ip` behind a trusted proxy."""
    headers = {**BROWSER, "X-Forwarded-For": ip}
    start = await client.get("/oauth2/start", headers=headers, allow_redirects=False)
    if start.status != 302:
        return start
    async with client.session.get(start.headers["Location"], allow_redirects=False) as authorize:
        callback = URL(authorize.headers["Location"])
    async with client.session.get(callback, headers=headers, allow_redirects=False) as resp:
        await resp.read()
        return resp


def bearer_from(token: str, ip: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-Forwarded-For": ip}


def audit_events(directory: Path, action: str) -> list[dict[str, Any]]:
    lines = b"".join(p.read_bytes() for p in sorted(directory.glob("audit-*.jsonl"))).splitlines()
    return [event for event in map(json.loads, lines) if event["action"] == action]


async def test_a_user_refused_too_often_is_limited_by_name_whatever_the_address(
    fake: FakeIdP, start_gateway: StartGateway, tmp_path: Path
) -> None:
    client = await start_gateway(
        unused_port(), login_failures_max=2, audit_dir=tmp_path / "audit", **PROXIED, **fake_settings(fake)
    )
    fake.user, fake.claims = FAKE_BOB, {"email_verified": False}  # the provider vouches for bob, unverified
    for ip in ("203.0.113.1", "203.0.113.2"):
        refused = await sign_in_from(client, ip)
        assert refused.status == 403 and not has_session(client)
    fake.claims = {}  # bob verifies his address, but his name is over the limit for the window
    limited = await sign_in_from(client, "203.0.113.3")
    assert limited.status == 429 and int(limited.headers["Retry-After"]) > 0
    assert not has_session(client)
    fake.user = FAKE_ALICE  # the addresses themselves are not limited: each failed once
    assert (await sign_in_from(client, "203.0.113.3")).status == 302 and has_session(client)
    failed = audit_events(tmp_path / "audit", "auth.login")
    assert [(e["actor"], e["outcome"]) for e in failed] == [
        (FAKE_BOB.email, "failed"), (FAKE_BOB.email, "failed"), (FAKE_ALICE.email, "allowed")
    ]  # fmt: skip
    assert [(e["actor"], e["reason"]) for e in audit_events(tmp_path / "audit", "auth.rate_limited")] == [
        (FAKE_BOB.email, "user")
    ]


async def test_an_api_client_with_refused_tokens_is_limited_by_name(fake: FakeIdP, start_gateway: StartGateway) -> None:
    client = await start_gateway(unused_port(), login_failures_max=2, **PROXIED, **fake_settings(fake))
    expired = fake.access_token(user=FAKE_BOB, mint=Mint.EXPIRED)  # signed by the provider: bob's for sure
    for ip in ("203.0.113.1", "203.0.113.2"):
        assert (await client.get("/oauth2/userinfo", headers=bearer_from(expired, ip))).status == 401
    fresh = fake.access_token(user=FAKE_BOB)
    limited = await client.get("/oauth2/userinfo", headers=bearer_from(fresh, "203.0.113.3"))
    assert limited.status == 429 and int(limited.headers["Retry-After"]) > 0
    alice = fake.access_token(user=FAKE_ALICE)
    assert (await client.get("/oauth2/userinfo", headers=bearer_from(alice, "203.0.113.3"))).status == 200


async def test_forged_tokens_count_against_the_address_not_the_name_they_carry(
    fake: FakeIdP, start_gateway: StartGateway
) -> None:
    client = await start_gateway(unused_port(), login_failures_max=2, **PROXIED, **fake_settings(fake))
    forged = fake.access_token(user=FAKE_BOB, mint=Mint.SAME_KID_OTHER_KEY)  # anyone can write "bob"
    for _ in range(2):
        assert (await client.get("/oauth2/userinfo", headers=bearer_from(forged, "203.0.113.66"))).status == 401
    limited = await client.get("/oauth2/userinfo", headers=bearer_from(forged, "203.0.113.66"))
    assert limited.status == 429
    bob = fake.access_token(user=FAKE_BOB)  # bob himself, elsewhere, is not locked out by the forger
    resp = await client.get("/oauth2/userinfo", headers=bearer_from(bob, "203.0.113.7"))
    assert resp.status == 200 and (await resp.json())["user"] == FAKE_BOB.email


# --- who may sign in at all ------------------------------------------------------------------------


async def test_only_allowed_domains_and_groups_sign_in(fake: FakeIdP, start_gateway: StartGateway) -> None:
    client = await start_gateway(
        unused_port(), oidc_allowed_email_domains="example.com", oidc_allowed_groups="ml-team", **fake_settings(fake)
    )
    fake.user = FAKE_BOB  # example.com, but only in "staff"
    refused = await sign_in_from(client, "203.0.113.5")
    assert refused.status == 403 and "groups" in await refused.text() and not has_session(client)
    bob = fake.access_token(user=FAKE_BOB)  # the same rules hold for the provider's bearer tokens
    assert (await client.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {bob}"})).status == 403
    fake.user = FAKE_ALICE  # example.com and ml-team
    assert (await sign_in_fake(client, fake)).status == 302 and has_session(client)


async def test_leaving_the_allowed_groups_ends_the_session_at_the_next_refresh(
    fake: FakeIdP, start_gateway: StartGateway
) -> None:
    client = await start_gateway(unused_port(), oidc_allowed_groups="ml-team", **fake_settings(fake))
    fake.access_token_ttl_s = 30  # inside the refresh margin: the next request refreshes
    await sign_in_fake(client, fake)
    assert (await client.get("/oauth2/userinfo")).status == 200
    fake.claims = {"groups": ["staff"]}  # an admin took alice out of ml-team at the provider
    assert (await client.get("/oauth2/userinfo")).status == 401


# --- bearer tokens from another issuer (e.g. the cluster's service-account tokens) ------------------

CLUSTER_ISSUER = "https://kubernetes.default.svc.cluster.local"
RUNNER = "system:serviceaccount:ml:runner"


@pytest.fixture
async def cluster(aiohttp_server: Any, tmp_path: Path) -> tuple[FakeIdP, dict[str, Any]]:
    """A Kubernetes-like issuer: keys over HTTPS with a private CA, only to a bearer token, at an address that is
    not its issuer URL. Returns it and the gateway's `bearer_issuers` entry for it."""
    tls = local_tls(tmp_path)
    idp = await FakeIdP.start(aiohttp_server, ssl=tls.server_context)
    idp.jwks_bearer = "gateway-service-account-token"
    (tmp_path / "sa-token").write_text(idp.jwks_bearer + "\n")
    entry = {
        "issuer": CLUSTER_ISSUER,
        "audiences": ["notebook-gateway-api"],
        "username_prefix": "",
        "jwks_url": f"{idp.issuer}/jwks",
        "ca_file": str(tls.ca_file),
        "token_file": str(tmp_path / "sa-token"),
    }
    return idp, entry


def service_account_token(idp: FakeIdP, *, audience: str = "notebook-gateway-api", **claims: Any) -> str:
    sa = {
        "sub": RUNNER,
        "iss": CLUSTER_ISSUER,
        "kubernetes.io": {"namespace": "ml", "serviceaccount": {"name": "runner"}},
    }
    token = idp.access_token(audience=audience, claims=sa | claims)
    return token


async def test_service_account_tokens_from_the_cluster_identify_api_clients(
    fake: FakeIdP, cluster: tuple[FakeIdP, dict[str, Any]], start_gateway: StartGateway
) -> None:
    issuer, entry = cluster
    client = await start_gateway(unused_port(), bearer_issuers=(entry,), **fake_settings(fake))
    token = service_account_token(issuer)
    resp = await client.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200 and (await resp.json())["user"] == RUNNER
    assert issuer.requests_to("/jwks")[-1].headers["Authorization"] == "Bearer gateway-service-account-token"


@pytest.mark.parametrize("case", ["another audience", "claims the provider", "unknown issuer", "email claim"])
async def test_tokens_from_another_issuer_are_checked_as_strictly(
    case: str, fake: FakeIdP, cluster: tuple[FakeIdP, dict[str, Any]], start_gateway: StartGateway
) -> None:
    issuer, entry = cluster
    prefixed = {**entry, "username_prefix": "cluster:", "username_claim": "email"}
    client = await start_gateway(unused_port(), bearer_issuers=(prefixed,), **fake_settings(fake))
    match case:
        case "another audience":
            token, status = service_account_token(issuer, audience="some-other-service"), 401
            reason = "audience"
        case "claims the provider":  # the cluster's key must not vouch for the provider's users
            token, status = service_account_token(issuer, iss=fake.issuer, aud=fake.client_id), 401
            reason = "signed with a key the provider does not publish"
        case "unknown issuer":
            token, status = service_account_token(issuer, iss="https://issuer.example"), 401
            reason = "issuer is not one this gateway accepts"
        case _:  # a valid token naming alice's address is the cluster's "alice", not the provider's alice
            token, status, reason = service_account_token(issuer, email=FAKE_ALICE.email), 200, ""
    resp = await client.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == status
    if status == 401:
        body = await resp.json()
        assert body["error"] == "invalid_token" and reason in body["message"].lower()
    else:
        assert (await resp.json())["user"] == f"cluster:{FAKE_ALICE.email}"


async def test_a_gateway_without_the_clusters_ca_does_not_trust_its_keys(
    fake: FakeIdP, cluster: tuple[FakeIdP, dict[str, Any]], start_gateway: StartGateway
) -> None:
    issuer, entry = cluster
    client = await start_gateway(unused_port(), bearer_issuers=({**entry, "ca_file": None},), **fake_settings(fake))
    token = service_account_token(issuer)
    resp = await client.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert resp.status >= 500 and not issuer.requests_to("/jwks")  # TLS failed before any request was made


# --- who gets a login page and who gets a 401 ----------------------------------------------------


async def test_anonymous_requests_are_refused_by_kind(fake: FakeIdP, start_gateway: StartGateway) -> None:
    client = await start_gateway(unused_port(), **fake_settings(fake))
    browser = await client.get("/notebook/alice/nb1/lab?x=1", headers=BROWSER, allow_redirects=False)
    assert browser.status == 302
    assert URL(browser.headers["Location"]).query["rd"] == "/notebook/alice/nb1/lab?x=1"
    for headers in ({"Accept": "application/json"}, {**BROWSER, "X-Requested-With": "XMLHttpRequest"},
                    {"Accept": "text/html", "Sec-Fetch-Mode": "cors"}):  # fmt: skip
        resp = await client.get("/notebook/alice/nb1/api/kernels", headers=headers, allow_redirects=False)
        assert resp.status == 401 and (await resp.json())["error"] == "login_required"
    ws = await client.get("/notebook/alice/nb1/ws", headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    assert ws.status == 401


# --- sessions over time: refresh, back-channel logout, Redis --------------------------------------


async def test_tokens_about_to_expire_are_refreshed(fake: FakeIdP, start_gateway: StartGateway) -> None:
    client = await start_gateway(unused_port(), **fake_settings(fake))
    fake.access_token_ttl_s = 30  # inside the refresh margin: the next request refreshes
    await sign_in_fake(client, fake)
    assert (await client.get("/oauth2/userinfo")).status == 200
    assert fake.requests_to("/token")[-1].form["grant_type"] == "refresh_token"


async def test_a_refused_refresh_ends_the_session_but_an_outage_does_not(
    fake: FakeIdP, start_gateway: StartGateway
) -> None:
    client = await start_gateway(unused_port(), **fake_settings(fake))
    fake.access_token_ttl_s = 30
    await sign_in_fake(client, fake)
    fake.refresh = Refresh.SERVER_ERROR
    assert (await client.get("/oauth2/userinfo")).status == 200
    fake.refresh = Refresh.DISCONNECT
    assert (await client.get("/oauth2/userinfo")).status == 200
    fake.refresh = Refresh.INVALID_GRANT
    assert (await client.get("/oauth2/userinfo")).status == 401


async def test_back_channel_logout_ends_that_session(fake: FakeIdP, start_gateway: StartGateway) -> None:
    client = await start_gateway(unused_port(), **fake_settings(fake))
    fake.claims = {"sid": "provider-session-1"}
    await sign_in_fake(client, fake)
    forged = fake.logout_token(sid="provider-session-1", mint=Mint.SAME_KID_OTHER_KEY)
    assert (await client.post("/oauth2/backchannel-logout", data={"logout_token": forged})).status == 400
    assert (await client.get("/oauth2/userinfo")).status == 200
    token = fake.logout_token(sid="provider-session-1")
    assert (await client.post("/oauth2/backchannel-logout", data={"logout_token": token})).status == 200
    assert (await client.get("/oauth2/userinfo")).status == 401


async def test_bearer_tokens_identify_api_clients_and_never_reach_the_notebook(
    fake: FakeIdP, start_gateway: StartGateway
) -> None:
    # A bearer token never passes through sign-in, so no profile is made: alice's access is granted here.
    client = await start_gateway(unused_port(), bootstrap_admins=(FAKE_ALICE.email,), **fake_settings(fake))
    token = fake.access_token(user=FAKE_ALICE)
    resp = await client.get("/notebook/alice/nb1/echo", headers={"Authorization": f"Bearer {token}"})
    echoed = headers_of(await resp.json())
    assert echoed["kubeflow-userid"] == FAKE_ALICE.email
    assert "authorization" not in echoed
    wrong = fake.access_token(user=FAKE_ALICE, mint=Mint.WRONG_AUD)
    assert (await client.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {wrong}"})).status == 401


async def test_cross_site_changes_with_the_session_cookie_are_refused(
    fake: FakeIdP, start_gateway: StartGateway
) -> None:
    client = await start_gateway(unused_port(), **fake_settings(fake))
    await sign_in_fake(client, fake)
    evil = await client.post("/notebook/alice/nb1/echo", headers={"Origin": "https://evil.example"})
    assert evil.status == 403
    ours = await client.post("/notebook/alice/nb1/echo")  # the client sends our Origin by default
    assert ours.status == 200


async def test_another_site_cannot_sign_a_user_out(fake: FakeIdP, start_gateway: StartGateway) -> None:
    client = await start_gateway(unused_port(), **fake_settings(fake))
    await sign_in_fake(client, fake)
    evil = {"Origin": "https://evil.example"}
    assert (await client.post("/oauth2/sign_out", headers=evil, allow_redirects=False)).status == 403
    cross_site = {"Sec-Fetch-Site": "cross-site"}
    assert (await client.get("/oauth2/sign_out", headers=cross_site, allow_redirects=False)).status == 403
    assert (await client.get("/oauth2/userinfo")).status == 200
    assert (await client.get("/oauth2/sign_out", allow_redirects=False)).status == 302  # a link on our pages
    assert (await client.get("/oauth2/userinfo")).status == 401


async def test_sessions_live_in_redis_across_gateway_restarts_and_redis_outages(
    fake: FakeIdP, start_gateway: StartGateway, own_redis_server: RedisServer
) -> None:
    port = unused_port()
    redis_settings = {"session_store": "redis", "redis_url": own_redis_server.url, **fake_settings(fake)}
    first = await start_gateway(port, **redis_settings)
    await sign_in_fake(first, fake)
    cookies = {SESSION_COOKIE: first.session.cookie_jar.filter_cookies(first.make_url("/"))[SESSION_COOKIE].value}
    await first.close()
    second = await start_gateway(port, **redis_settings)  # a new process, as after a restart
    assert (await second.get("/oauth2/userinfo", cookies=cookies)).status == 200
    own_redis_server.stop()

    async def refused() -> bool:
        # The session cache stops answering within 0.5 s of its channel going quiet (docs/operators.md).
        down = await second.get("/notebook/alice/nb1/echo", cookies=cookies)
        assert down.status in (200, 503)
        return down.status == 503 and (await down.json())["error"] == "service_unavailable"

    await wait_until(refused, timeout_s=1.0)
    own_redis_server.start()
    assert (await second.get("/notebook/alice/nb1/echo", cookies=cookies)).status == 200


# --- what a first sign-in sets up: asked of the onboarding component, each step audited ------------

ONBOARDING_ACTIONS = ("auth.login", "policy.grant", "profile.create")


async def test_a_first_sign_in_is_set_up_in_order_and_each_step_audited(
    gateway_factory: Callable[..., Awaitable[Client]], kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    audit = RecordingAudit()
    client = await gateway_factory(
        user="carol@example.com",
        owns_namespace=False,
        backend="kubernetes",
        kubeconfig=kube_api.write_kubeconfig(tmp_path / "kubeconfig"),
        auto_profile=True,
        first_user_admin=True,
        configure=lambda app: app.__setitem__(keys.AUDIT, audit),
    )
    steps = [(e.action, e.namespace, e.outcome, e.details.get("via")) for e in audit.events]
    assert [step for step in steps if step[0] in ONBOARDING_ACTIONS] == [
        ("auth.login", None, "allowed", None),
        ("policy.grant", None, "allowed", "first-user"),
        ("policy.grant", None, "allowed", "auto-profile"),
        ("profile.create", "kubeflow-carol-example-com", "allowed", "auto-profile"),
    ]
    assert kube_api.get("namespaces", "", "kubeflow-carol-example-com") is not None
    assert (await (await client.get("/oauth2/userinfo")).json())["firstUserAdmin"] is True


async def test_a_profile_namespace_that_cannot_be_made_is_audited_and_the_sign_in_goes_on(
    gateway_factory: Callable[..., Awaitable[Client]], kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    audit = RecordingAudit()
    # The cluster refuses the namespace (an admission webhook, a quota on namespaces, the gateway's own RBAC).
    kube_api.fail_next("POST", "namespaces", 403, "Forbidden", 'admission webhook "namespaces" denied the request')
    client = await gateway_factory(
        user="alice@example.com",
        owns_namespace=False,
        backend="kubernetes",
        kubeconfig=kube_api.write_kubeconfig(tmp_path / "kubeconfig"),
        auto_profile=True,
        configure=lambda app: app.__setitem__(keys.AUDIT, audit),
    )
    [created] = [e for e in audit.events if e.action == "profile.create"]
    assert (created.namespace, created.outcome, created.actor) == (
        "kubeflow-alice-example-com",
        "failed",
        "alice@example.com",
    )
    assert created.reason
    assert (await client.get("/oauth2/userinfo")).status == 200  # signed in all the same
