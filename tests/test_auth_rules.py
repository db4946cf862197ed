"""Where a sign-in may return to, how claims become an identity, the failed sign-in counters and limits,
and that the sign-in components know nothing of requests."""

from __future__ import annotations

import ast
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as redis

from gateway.auth.attempts import SignInLimits
from gateway.auth.authenticator import ClaimRules
from gateway.errors import IdPUnavailable, InvalidToken, NotAllowed, SignInLimited
from gateway.ratelimit import FailureCounter, MemoryFailureCounter, RedisFailureCounter
from gateway.web.oauth import safe_return_path
from tests.conftest import RedisServer


@pytest.mark.parametrize(
    "rd",
    ["//evil.example", "/\\evil.example", "https://evil.example", "/%09/evil.example", "https://gw@evil.example",
     "/%2F%2Fevil.example", "/%5cevil.example", "evil", "/x\r\nSet-Cookie:a=b", "/https:/evil"],
)  # fmt: skip
def test_a_return_path_off_this_origin_falls_back_to_the_root(rd: str) -> None:
    assert safe_return_path(rd) == "/"


@pytest.mark.parametrize("rd", ["/", "/notebook/alice/nb1/lab?x=1", "/api/namespaces/alice/notebooks"])
def test_a_path_on_this_origin_is_kept(rd: str) -> None:
    assert safe_return_path(rd) == rd


def test_emails_are_case_insensitive_and_groups_a_sorted_set() -> None:
    identity = ClaimRules().identity({"email": " Alice@Example.COM ", "groups": ["b", "a", "b"]}, "session")
    assert (identity.subject, identity.groups) == ("alice@example.com", ("a", "b"))


def test_another_username_claim_can_be_chosen() -> None:
    rules = ClaimRules(username_claim="preferred_username", groups_claim="roles")
    identity = rules.identity({"preferred_username": "Alice", "roles": "admins"}, "bearer")
    assert (identity.subject, identity.groups, identity.method) == ("Alice", ("admins",), "bearer")


def test_a_token_without_the_username_claim_is_refused() -> None:
    with pytest.raises(InvalidToken):
        ClaimRules().identity({"sub": "123"}, "session")


def test_another_issuers_users_carry_its_prefix() -> None:
    rules = ClaimRules(username_claim="sub", username_prefix="k8s:")
    assert rules.identity({"sub": "system:serviceaccount:ml:runner"}, "bearer").subject == (
        "k8s:system:serviceaccount:ml:runner"
    )


def test_an_unverified_email_is_refused_as_a_username_and_dropped_otherwise() -> None:
    claims = {"email": "bob@example.com", "email_verified": False, "sub": "id-bob", "groups": []}
    with pytest.raises(NotAllowed) as refused:
        ClaimRules().identity(claims, "session")
    assert refused.value.username == "bob@example.com"
    assert ClaimRules(username_claim="sub").identity(claims, "session").email is None
    assert ClaimRules(allow_unverified_email=True).identity(claims, "session").subject == "bob@example.com"
    # A provider that says nothing about verification (many do not) is taken at its word.
    assert ClaimRules().identity({"email": "bob@example.com"}, "session").email == "bob@example.com"


def test_only_the_allowed_domains_and_groups_may_sign_in() -> None:
    rules = ClaimRules(allowed_email_domains=frozenset({"example.com"}), allowed_groups=frozenset({"ml-team"}))
    assert rules.identity({"email": "a@example.com", "groups": ["ml-team"]}, "session").subject == "a@example.com"
    for claims in (
        {"email": "a@example.com.evil.test", "groups": ["ml-team"]},
        {"email": "a@sub.example.com", "groups": ["ml-team"]},
        {"email": "a@example.com", "groups": ["staff"]},
        {"email": "a@example.com"},
    ):
        with pytest.raises(NotAllowed):
            rules.identity(claims, "session")


@pytest.fixture(params=["memory", "redis"])
async def counter(request: pytest.FixtureRequest) -> AsyncIterator[FailureCounter]:
    if request.param == "memory":
        yield MemoryFailureCounter(limit=3, window_s=60)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    client = redis.Redis.from_url(server.url)
    await client.delete(*(f"ngw:fail:{key}" for key in ("ip:198.51.100.7", "ip:198.51.100.8", "user:bob@example.com")))
    yield RedisFailureCounter(client, limit=3, window_s=60)
    await client.aclose()


async def test_failures_under_the_limit_do_not_block(counter: FailureCounter) -> None:
    for _ in range(2):
        await counter.fail("ip:198.51.100.7")
    assert await counter.retry_after_s("ip:198.51.100.7") == 0


async def test_reaching_the_limit_blocks_that_key_only(counter: FailureCounter) -> None:
    for _ in range(3):
        await counter.fail("ip:198.51.100.7")
    assert 0 < await counter.retry_after_s("ip:198.51.100.7") <= 60
    assert await counter.retry_after_s("ip:198.51.100.8") == 0


def vouched_refusal(username: str) -> InvalidToken:
    refused = InvalidToken("The token has expired.", signed_claims={"email": username})
    refused.username = username  # as the authenticator sets it once the signature checked out
    return refused


async def test_a_vouched_refusal_counts_against_the_user_wherever_they_come_from(counter: FailureCounter) -> None:
    limits = SignInLimits(counter)
    for _ in range(3):
        assert await limits.failed("198.51.100.7", vouched_refusal("bob@example.com")) == "bob@example.com"
    await limits.check("198.51.100.8")  # another address, no name yet: let through
    with pytest.raises(SignInLimited) as limited:
        await limits.check("198.51.100.8", "bob@example.com")
    assert (limited.value.by, limited.value.username, limited.value.status) == ("user", "bob@example.com", 429)
    assert int(limited.value.headers["Retry-After"]) > 0


async def test_a_forged_token_counts_against_the_address_only(counter: FailureCounter) -> None:
    limits = SignInLimits(counter)
    for _ in range(3):
        assert await limits.failed("198.51.100.7", InvalidToken("The token was refused.")) is None
    with pytest.raises(SignInLimited) as limited:
        await limits.check("198.51.100.7", "bob@example.com")
    assert limited.value.by == "ip"
    await limits.check("198.51.100.8", "bob@example.com")  # bob himself is not locked out


async def test_an_outage_of_ours_is_not_counted_as_the_clients_failure(counter: FailureCounter) -> None:
    limits = SignInLimits(counter)
    for _ in range(5):
        await limits.failed("198.51.100.7", IdPUnavailable())
    await limits.check("198.51.100.7")


def imported_modules(path: Path) -> set[str]:
    """The absolute names of the modules a file imports, relative imports resolved against gateway.auth."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "gateway.auth".rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_the_sign_in_components_know_nothing_of_requests() -> None:
    """gateway/auth/ decides who a request is from what the edges hand it (cookie, Authorization header,
    client address): it never reads a request, the app's keys, or the web package. The development
    provider is the one exception for aiohttp.web: it is a whole provider app of its own, mounted at /dev-idp."""
    offences = []
    for path in sorted((Path(__file__).parent.parent / "gateway" / "auth").glob("*.py")):
        for name in imported_modules(path):
            edge = name == "gateway.keys" or name == "gateway.web" or name.startswith("gateway.web.")
            web = name == "aiohttp.web" and path.name != "devprovider.py"
            if edge or web:
                offences.append(f"{path.name} imports {name}")
    assert offences == []
