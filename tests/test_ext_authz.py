"""`/oauth2/auth`: the gateway as the sign-in check for other apps (nginx auth_request, Istio ext_authz)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from yarl import URL

from gateway import keys
from tests.conftest import RedisServer, session_headers, unused_port, wait_until
from tests.fakes.nginx import nginx_binary, start_nginx
from tests.fakes.upstream import FakeUpstream
from tests.test_api import RecordingAudit

Factory = Callable[..., Any]
BROWSER = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}


@pytest.fixture
def gateway(gateway_factory: Factory, routes_file: Callable[[dict[tuple[str, str], str]], Any]) -> Factory:
    """A gateway with no notebooks of its own: here it only vouches for users of other apps."""
    no_routes = routes_file({})

    async def build(**kwargs: Any) -> Any:
        return await gateway_factory(routes_file=no_routes, **kwargs)

    return build


async def test_a_signed_in_user_is_vouched_for_with_headers_an_upstream_app_can_use(
    gateway: Factory,
) -> None:
    client = await gateway(user="Alice@Example.com", groups="ml-team,staff")
    resp = await client.get("/oauth2/auth")
    assert resp.status == 202
    assert resp.headers["X-Auth-Request-User"] == resp.headers["kubeflow-userid"] == "alice@example.com"
    assert resp.headers["X-Auth-Request-Groups"] == resp.headers["kubeflow-groups"] == "ml-team,staff"
    # By default no token leaves the gateway: a page on this host could fetch this answer and read it.
    assert "Authorization" not in resp.headers
    assert "eyJ" not in str(resp.headers)


async def test_the_id_token_for_istio_is_an_explicit_choice(gateway: Factory) -> None:
    client = await gateway(user="Alice@Example.com", ext_authz_id_token=True)
    resp = await client.get("/oauth2/auth/")
    # The ID token, for Istio's RequestAuthentication to check and read `kubeflow-userid` from.
    scheme, _, id_token = resp.headers["Authorization"].partition(" ")
    assert scheme == "Bearer"
    assert jwt.decode(id_token, options={"verify_signature": False})["email"] == "alice@example.com"


async def test_nobody_signed_in_gets_401_and_a_browser_is_sent_to_sign_in_and_back(
    gateway: Factory,
) -> None:
    client = await gateway(user=None)
    assert (await client.get("/oauth2/auth", headers=BROWSER)).status == 401  # nginx: never a redirect
    envoy = await client.get("/oauth2/auth/pipeline/#/runs?ns=team-a", headers=BROWSER, allow_redirects=False)
    assert envoy.status == 302
    assert URL(envoy.headers["Location"]).query["rd"] == "/pipeline/"  # the fragment never reaches a server
    api = await client.get("/oauth2/auth/pipeline/apis/v2beta1/runs", headers={"Accept": "application/json"})
    assert api.status == 401 and (await api.json())["error"] == "login_required"
    off_site = await client.get("/oauth2/auth/https:/evil.example", headers=BROWSER, allow_redirects=False)
    assert URL(off_site.headers["Location"]).query["rd"] == "/"
    odd = await client.get("/oauth2/auth//evil.example/", headers=BROWSER, allow_redirects=False)
    assert odd.status == 400  # the one path parse refuses it before anything else looks


async def test_a_bearer_token_is_checked_as_for_any_request(gateway: Factory) -> None:
    client = await gateway(ext_authz_id_token=True)
    id_token = (await client.get("/oauth2/auth")).headers["Authorization"].removeprefix("Bearer ")
    async with aiohttp.ClientSession() as other:  # no cookie: the token alone
        ok = await other.get(client.make_url("/oauth2/auth/"), headers={"Authorization": f"Bearer {id_token}"})
        assert ok.status == 200 and ok.headers["kubeflow-userid"] == "alice@example.com"
        assert "Authorization" not in ok.headers  # it already has its token
        forged = id_token[:-4] + ("AAAA" if not id_token.endswith("AAAA") else "BBBB")
        bad = await other.get(client.make_url("/oauth2/auth/"), headers={"Authorization": f"Bearer {forged}"})
        assert bad.status == 401


async def test_forged_tokens_at_the_check_meet_the_same_limits_and_are_audited(gateway: Factory) -> None:
    audit = RecordingAudit()
    client = await gateway(
        login_failures_max=2, ext_authz_id_token=True, configure=lambda app: app.__setitem__(keys.AUDIT, audit)
    )
    id_token = (await client.get("/oauth2/auth")).headers["Authorization"].removeprefix("Bearer ")
    forged = {"Authorization": f"Bearer {id_token[:-4]}{'AAAA' if not id_token.endswith('AAAA') else 'BBBB'}"}
    async with aiohttp.ClientSession() as other:  # no cookie: the token alone
        for _ in range(2):
            assert (await other.get(client.make_url("/oauth2/auth/"), headers=forged)).status == 401
        limited = await other.get(client.make_url("/oauth2/auth"), headers=forged)
        assert limited.status == 429 and int(limited.headers["Retry-After"]) > 0
    [refused] = [e for e in audit.events if e.action == "auth.rate_limited"]
    assert (refused.actor, refused.reason, refused.outcome) == ("-", "ip", "denied")  # a forged name is nobody's


async def test_an_app_can_require_groups(gateway: Factory) -> None:
    staff = await gateway(groups="staff")
    assert (await staff.get("/oauth2/auth?allowed_groups=ml-team,admins")).status == 403
    member = await gateway(user="bob@example.com", groups="ml-team")
    assert (await member.get("/oauth2/auth?allowed_groups=ml-team,admins")).status == 202


async def test_with_redis_down_the_check_fails_closed(gateway: Factory, own_redis_server: RedisServer) -> None:
    client = await gateway(session_store="redis", redis_url=own_redis_server.url)
    headers = session_headers(client)
    assert (await client.get("/oauth2/auth/", headers=headers)).status == 200
    own_redis_server.stop()

    async def refused() -> bool:
        # The session cache stops answering within 0.5 s of its channel going quiet (docs/operators.md).
        down = await client.get("/oauth2/auth/", headers=headers)
        assert down.status in (200, 503)
        return down.status == 503 and "X-Auth-Request-User" not in down.headers

    await wait_until(refused, timeout_s=1.0)
    own_redis_server.start()
    assert (await client.get("/oauth2/auth/", headers=headers)).status == 200


# -- behind a real nginx, as `auth_request` uses it ------------------------------------------------

NGINX_HTTP = """
    access_log off;
    server {{
        listen 127.0.0.1:{port};
        location = /_check {{
            internal;
            proxy_pass http://127.0.0.1:{gateway_port}/oauth2/auth;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }}
        location / {{
            auth_request /_check;
            auth_request_set $user $upstream_http_x_auth_request_user;
            auth_request_set $groups $upstream_http_x_auth_request_groups;
            proxy_set_header kubeflow-userid $user;
            proxy_set_header kubeflow-groups $groups;
            proxy_pass http://127.0.0.1:{upstream_port};
        }}
    }}
"""

NginxFactory = Callable[[int, int], int]


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[NginxFactory]:
    """Starts nginx with `auth_request` against a gateway, in front of an upstream; returns its port."""
    nginx_binary()  # skip (or fail in CI) before anything starts
    procs: list[subprocess.Popen[bytes]] = []

    def start(gateway_port: int, upstream_port: int) -> int:
        port = unused_port()
        http = NGINX_HTTP.format(port=port, gateway_port=gateway_port, upstream_port=upstream_port)
        procs.append(start_nginx(tmp_path / "nginx", port, http))
        return port

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


async def test_nginx_auth_request_lets_a_signed_in_user_through_with_their_name(
    gateway: Factory, nginx: NginxFactory, aiohttp_server: Any
) -> None:
    upstream = await FakeUpstream.start(aiohttp_server)
    client = await gateway(groups="ml-team")
    assert client.port is not None
    port = nginx(client.port, URL(upstream.url).port or 80)
    through = URL(f"http://127.0.0.1:{port}/apps/pipeline/ui/echo")  # another app behind nginx
    async with aiohttp.ClientSession() as anonymous:
        assert (await anonymous.get(through, headers={"kubeflow-userid": "root"})).status == 401
    signed_in = await client.session.get(through, headers={"kubeflow-userid": "root"})  # our cookie, and a lie
    assert signed_in.status == 200
    echoed = {name.lower(): value for name, value in (await signed_in.json())["headers"]}
    assert (echoed["kubeflow-userid"], echoed["kubeflow-groups"]) == ("alice@example.com", "ml-team")
