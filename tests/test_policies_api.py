"""The admins' API through the real gateway: grant, revoke, replace, explain, access; namespace
admins kept inside their namespaces; changes seen by a second gateway on the same file; and a
revoked role cutting an open WebSocket."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from gateway import keys
from gateway.identity import Identity
from tests.conftest import BROWSER_HEADERS, Client, wait_until
from tests.fakes.node_idp import sign_in
from tests.fakes.upstream import FakeUpstream
from tests.test_api import RecordingAudit

# Every JSON answer these tests see must match /api/openapi.json (tests/openapi_check.py).
pytestmark = pytest.mark.usefixtures("openapi_checked")

Factory = Callable[..., Any]
Routes = Callable[[dict[tuple[str, str], str]], Path]
BOB_EDIT = {"subject": "user:bob@example.com", "namespace": "alice", "role": "edit"}
ALICE_ADMIN = {"subject": "user:alice@example.com", "namespace": "alice", "role": "admin"}


@pytest.fixture
def gateways(gateway_factory: Factory, routes_file: Routes, upstream: FakeUpstream) -> Factory:
    """The real gateway, signed in as alice, with the fake notebook at /notebook/alice/nb1/."""
    routes = routes_file({("alice", "nb1"): upstream.url})

    async def build(**settings: Any) -> Client:
        client: Client = await gateway_factory(routes_file=routes, **settings)
        return client

    return build


@contextlib.asynccontextmanager
async def signed_in(gateway: Client, username: str, groups: str = "") -> AsyncIterator[aiohttp.ClientSession]:
    """Another browser, signed in as `username` on the same gateway."""
    jar = aiohttp.CookieJar(unsafe=True)
    origin = str(gateway.make_url("/").origin())
    async with aiohttp.ClientSession(cookie_jar=jar, headers={"Origin": origin}, base_url=origin) as browser:
        callback = await sign_in(browser, gateway.make_url("/oauth2/start"), username, "pw", fields={"groups": groups})
        async with browser.get(callback, allow_redirects=False, headers=BROWSER_HEADERS) as resp:
            assert resp.status == 302
        yield browser


async def test_a_new_user_gets_a_namespace_of_their_own_listed_in_userinfo(gateways: Factory) -> None:
    gateway: Client = await gateways(owns_namespace=False)
    info = await (await gateway.get("/oauth2/userinfo")).json()
    # Not `alice`: a static route is in it. Named as Kubeflow names profiles.
    assert info["namespaces"] == [{"namespace": "kubeflow-alice-example-com", "role": "admin"}]
    assert info["firstUserAdmin"] is False


async def test_a_namespace_admin_grants_and_revokes_there_idempotently_and_audited(gateways: Factory) -> None:
    audit = RecordingAudit()
    gateway: Client = await gateways(configure=lambda app: app.__setitem__(keys.AUDIT, audit))
    granted = await gateway.post("/api/policies", json=BOB_EDIT)
    body = await granted.json()
    assert (granted.status, body["changed"], body["rule"]["notebook"]) == (200, True, None)
    assert granted.headers["ETag"] == f'"{body["version"]}"'
    assert (await (await gateway.post("/api/policies", json=BOB_EDIT)).json())["changed"] is False
    listed = await (await gateway.get("/api/policies", params={"namespace": "alice"})).json()
    assert (listed["version"], len(listed["rules"])) == (body["version"], 2)
    assert (await (await gateway.delete("/api/policies", json=BOB_EDIT)).json())["changed"] is True
    assert (await (await gateway.delete("/api/policies", json=BOB_EDIT)).json())["changed"] is False
    events = [(e.action, e.actor, e.namespace, e.details["changed"]) for e in audit.events if e.action != "auth.login"]
    assert events == [  # alice owns namespace alice already: her sign-in granted nothing
        ("policy.grant", "alice@example.com", "alice", True),
        ("policy.grant", "alice@example.com", "alice", False),
        ("policy.revoke", "alice@example.com", "alice", True),
        ("policy.revoke", "alice@example.com", "alice", False),
    ]
    assert audit.events[-1].details["version_before"] == audit.events[-1].details["version_after"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/policies", {"subject": "user:alice@example.com", "namespace": "*", "role": "cluster-admin"}),
        ("POST", "/api/policies", {"subject": "group:me", "namespace": "*", "role": "auditor"}),
        ("POST", "/api/policies", {"subject": "user:alice@example.com", "namespace": "*", "role": "edit"}),
        ("POST", "/api/policies", {**BOB_EDIT, "namespace": "bob"}),
        ("DELETE", "/api/policies", {**ALICE_ADMIN, "namespace": "bob"}),
        ("PUT", "/api/policies", {"rules": []}),
        ("GET", "/api/policies", None),
        ("GET", "/api/policies?namespace=bob", None),
        ("GET", "/api/namespaces/bob/access", None),
        ("POST", "/api/policies/check", {"user": "x", "namespace": "bob", "action": "view"}),
    ],
)
async def test_a_namespace_admin_cannot_reach_outside_or_escalate(
    gateways: Factory, method: str, path: str, body: object
) -> None:
    gateway: Client = await gateways()
    resp = await gateway.request(method, path, json=body, headers={"If-Match": "*"})
    assert resp.status == 403, await resp.text()
    assert "admin" in (await resp.json())["message"]
    listed = await (await gateway.get("/api/policies", params={"namespace": "alice"})).json()
    assert [rule["role"] for rule in listed["rules"]] == ["admin"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**BOB_EDIT, "namespace": "*", "role": "admin"}, "role"),
        ({**BOB_EDIT, "role": "cluster-admin"}, "namespace"),
        ({"namespace": "alice", "role": "edit"}, "subject"),
        ({**BOB_EDIT, "subject": "bob@example.com"}, "subject"),
        ({**BOB_EDIT, "notebook": "Not A Name"}, "notebook"),
        ([BOB_EDIT], None),
    ],
)
async def test_a_bad_rule_is_a_400_with_its_reason(gateways: Factory, body: object, field: str | None) -> None:
    gateway: Client = await gateways()
    resp = await gateway.post("/api/policies", json=body)
    assert resp.status == 400
    error = await resp.json()
    assert error.get("field") == field and error["message"]


async def test_replacing_every_rule_needs_the_current_version(gateways: Factory) -> None:
    gateway: Client = await gateways(bootstrap_admins=("alice@example.com",))
    first = await (await gateway.get("/api/policies")).json()
    assert first["bootstrap_admins"] == ["user:alice@example.com"]
    rules = {"rules": [BOB_EDIT, {"subject": "group:sec", "namespace": "*", "role": "auditor"}]}
    assert (await gateway.put("/api/policies", json=rules)).status == 428
    await gateway.post("/api/policies", json=BOB_EDIT)  # now `first` is stale
    stale = await gateway.put("/api/policies", json=rules, headers={"If-Match": f'"{first["version"]}"'})
    assert stale.status == 412
    current = (await (await gateway.get("/api/policies")).json())["version"]
    replaced = await gateway.put("/api/policies", json=rules, headers={"If-Match": current})
    assert (replaced.status, (await replaced.json())["removed"], (await replaced.json())["added"]) == (200, 1, 1)
    after = await (await gateway.get("/api/policies")).json()
    assert [rule["subject"] for rule in after["rules"]] == ["user:bob@example.com", "group:sec"]


async def test_check_explains_a_decision_with_the_rules_and_their_source(gateways: Factory, tmp_path: Path) -> None:
    gateway: Client = await gateways(policy_file=tmp_path / "policy.csv")
    await gateway.post("/api/policies", json={"subject": "group:ml-team", "namespace": "alice", "role": "edit"})
    asked = {"user": "Carol@Example.com", "groups": ["ml-team"], "namespace": "alice", "action": "connect"}
    answer = await (await gateway.post("/api/policies/check", json=asked)).json()
    assert (answer["allowed"], answer["decision"]) == (True, "allow")
    [rule] = answer["rules"]
    assert (rule["subject"], rule["role"], rule["source"]) == ("group:ml-team", "edit", "file")
    assert (rule["location"], rule["line"]) == (str(tmp_path / "policy.csv"), 5)
    denied = await (await gateway.post("/api/policies/check", json={**asked, "action": "manage"})).json()
    assert (denied["allowed"], denied["rules"]) == (False, [])
    assert "no role" in denied["reason"]
    bad = await gateway.post("/api/policies/check", json={**asked, "action": "fly"})
    assert (bad.status, (await bad.json())["field"]) == (400, "action")


async def test_access_shows_who_holds_which_role_directly_and_through_groups(gateways: Factory) -> None:
    gateway: Client = await gateways(bootstrap_admins=("root@example.com",))
    await gateway.post("/api/policies", json={"subject": "group:ml-team", "namespace": "alice", "role": "view"})
    access = await (await gateway.get("/api/namespaces/alice/access")).json()
    assert [(a["subject"], a["kind"], a["role"], a["namespace"], a["source"]) for a in access["access"]] == [
        ("user:alice@example.com", "user", "admin", "alice", "memory"),
        ("group:ml-team", "group", "view", "alice", "memory"),
        ("user:root@example.com", "user", "cluster-admin", "*", "bootstrap"),
    ]


async def test_another_user_is_refused_until_granted_and_view_does_not_connect(
    gateways: Factory, upstream: FakeUpstream
) -> None:
    gateway: Client = await gateways()
    async with signed_in(gateway, "bob@example.com") as bob:
        refused = await bob.get("/api/namespaces/alice/notebooks")
        assert refused.status == 403
        assert "no role that allows you to view in namespace alice" in (await refused.json())["message"]
        await gateway.post("/api/policies", json={**BOB_EDIT, "role": "view"})
        assert (await bob.get("/api/namespaces/alice/notebooks")).status == 200
        assert (await bob.get("/notebook/alice/nb1/echo")).status == 403
        await gateway.post("/api/policies", json=BOB_EDIT)
        assert (await bob.get("/notebook/alice/nb1/echo")).status == 200


async def test_two_gateways_on_one_file_see_each_others_changes_within_a_second(
    gateways: Factory, tmp_path: Path
) -> None:
    shared = {"policy_file": tmp_path / "policy.csv", "policy_reload_interval_s": 0.1}
    one: Client = await gateways(**shared)
    two: Client = await gateways(**shared)  # alice's namespace, granted by `one`, is already there

    async def bob_listed_by_two() -> bool:
        listed = await (await two.get("/api/policies", params={"namespace": "alice"})).json()
        return "user:bob@example.com" in [rule["subject"] for rule in listed["rules"]]

    assert (await one.post("/api/policies", json=BOB_EDIT)).status == 200
    await wait_until(bob_listed_by_two, timeout_s=1.0)
    assert (await two.delete("/api/policies", json=BOB_EDIT)).status == 200
    await wait_until(lambda: not one.app[keys.POLICIES].authorizer.snapshot.by_subject.get("user:bob@example.com"))


async def test_revoking_a_role_through_the_api_closes_an_open_websocket(
    gateways: Factory, upstream: FakeUpstream
) -> None:
    gateway: Client = await gateways()
    async with gateway.ws_connect("/notebook/alice/nb1/ws") as ws:
        await ws.send_str("still here")
        assert await ws.receive_str() == "still here"
        assert (await gateway.delete("/api/policies", json=ALICE_ADMIN)).status == 200
        closed = await ws.receive(timeout=5)
        assert (closed.type, closed.data, closed.extra) == (WSMsgType.CLOSE, 1008, "access revoked")
    await wait_until(lambda: upstream.state.ws_open == 0)


async def test_an_edit_on_disk_closes_an_open_websocket_within_the_reload_interval(
    gateways: Factory, upstream: FakeUpstream, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.csv"
    gateway: Client = await gateways(policy_file=policy, policy_reload_interval_s=0.1)
    app: web.Application = gateway.app
    async with gateway.ws_connect("/notebook/alice/nb1/ws") as ws:
        policy.write_text(policy.read_text().replace("alice, *, admin, allow", "alice, *, view, allow"))
        closed = await ws.receive(timeout=5)
        assert (closed.type, closed.data) == (WSMsgType.CLOSE, 1008)
    assert app[keys.POLICIES].authorizer.namespaces(Identity("alice@example.com")) == {"alice": "view"}


async def test_a_malformed_file_on_disk_blocks_changes_until_fixed(gateways: Factory, tmp_path: Path) -> None:
    policy = tmp_path / "policy.csv"
    gateway: Client = await gateways(policy_file=policy)
    good = policy.read_text()
    policy.write_text(good + "p, user:bob@example.com, alice\n")
    refused = await gateway.post("/api/policies", json=BOB_EDIT)
    assert refused.status == 409
    assert "line 5: expected 6 fields" in (await refused.json())["message"]
    assert (await gateway.get("/api/namespaces/alice/notebooks")).status == 200  # the last good policy holds
    policy.write_text(good)
    assert (await gateway.post("/api/policies", json=BOB_EDIT)).status == 200


@pytest.mark.parametrize("brk", ["\n", "\r", "\x85", "\u2028", "\u2029", "\x0b", "\x1c"])
async def test_no_grant_a_namespace_admin_makes_can_leave_the_policy_file_unloadable(
    gateways: Factory, tmp_path: Path, brk: str
) -> None:
    policy = tmp_path / "policy.csv"
    gateway: Client = await gateways(policy_file=policy)
    resp = await gateway.post("/api/policies", json={**BOB_EDIT, "subject": f"user:bob{brk}x@example.com"})
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["field"] == "subject"
    assert (await gateway.post("/api/policies", json=BOB_EDIT)).status == 200  # the file still reads
    assert "user:bob@example.com, alice" in policy.read_text()


async def test_a_namespace_admin_cannot_remove_a_deny_a_cluster_admin_aimed_at_them(gateways: Factory) -> None:
    gateway: Client = await gateways(bootstrap_admins=("root@example.com",))
    deny = {"subject": "user:alice@example.com", "namespace": "alice", "role": "edit", "effect": "deny"}
    async with signed_in(gateway, "root@example.com") as root:
        async with root.post("/api/policies", json=deny) as granted:
            assert granted.status == 200
            rule = (await granted.json())["rule"]
    lifted = await gateway.delete("/api/policies", json=deny)
    assert lifted.status == 403
    assert "only a cluster-admin may remove" in (await lifted.json())["message"]
    assert (await gateway.get("/notebook/alice/nb1/echo")).status == 403  # the deny still holds
    assert rule["guard"] == "cluster"
    unguarded = await gateway.post("/api/policies", json={**BOB_EDIT, "effect": "deny", "guard": "cluster"})
    assert unguarded.status == 403  # and a namespace admin cannot set a guard they could not lift
