"""One conformance suite for every `PolicyStore`: memory, a file, and a ConfigMap on the fake API
server (through the official client). What only one of them does is tested beside it:
test_policies_store.py (the file) and test_policy_configmap.py (the ConfigMap)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.authz.configmap import DATA_KEY, ConfigMapPolicyStore
from gateway.authz.rules import PolicyDoc, PolicyError, Rule, make_rule
from gateway.authz.stores import FilePolicyStore, MemoryPolicyStore, PolicyStore
from gateway.errors import PreconditionFailed
from tests.fakes.kube_api import FakeKubeAPI, kube_client

BOB = make_rule("user:bob@example.com", "team-a", "edit")
HEADER = "# Notebook Gateway policies"


@dataclass
class Place:
    """A store under test, and what else can reach the place it keeps the policy in."""

    store: PolicyStore
    # Another store on the same file or ConfigMap (another replica); None: memory is this process's only.
    another: Callable[[], Awaitable[PolicyStore]] | None = None
    # Writes policy text behind the stores' backs (an editor, kubectl); None for memory.
    write: Callable[[str], None] | None = None


@pytest.fixture(params=["memory", "file", "configmap"])
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "configmap":
        # Started here, outside the event loop: an async fixture cannot start another one by name.
        request.getfixturevalue("kube_api")
    return str(request.param)


@pytest.fixture
async def place(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Place]:
    opened: list[PolicyStore] = []

    async def opening(store: PolicyStore) -> PolicyStore:
        await store.open()
        opened.append(store)
        return store

    if kind == "memory":
        yield Place(await opening(MemoryPolicyStore()))
    elif kind == "file":
        path = tmp_path / "policy.csv"

        def edit_file(text: str) -> None:
            path.write_text(text)

        yield Place(await opening(FilePolicyStore(path)), lambda: opening(FilePolicyStore(path)), edit_file)
    else:
        kube_api: FakeKubeAPI = request.getfixturevalue("kube_api")
        async with kube_client(kube_api, tmp_path) as client:  # one client for every store, as in app.py

            def configmap() -> Awaitable[PolicyStore]:
                return opening(ConfigMapPolicyStore(client, "policies", "alice"))

            def write(text: str) -> None:
                kube_api.patch("configmaps", "alice", "policies", {"data": {DATA_KEY: text}})

            yield Place(await configmap(), configmap, write)
            for store in reversed(opened):
                await store.close()
            return
    for store in reversed(opened):
        await store.close()


def grant(doc: PolicyDoc) -> PolicyDoc:
    return doc.with_rule(BOB)


def granting(rule: Rule) -> Callable[[PolicyDoc], PolicyDoc]:
    return lambda doc: doc.with_rule(rule)


async def next_change(store: PolicyStore, timeout_s: float = 5.0) -> PolicyDoc:
    """The next change `changed()` reports (a ConfigMap's arrives through its watch, a moment later)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        doc = await store.changed()
        if doc is not None:
            return doc
        await asyncio.sleep(0.02)
    raise AssertionError(f"no change noticed within {timeout_s}s")


async def no_change_for_a_while(store: PolicyStore) -> None:
    """`changed()` stays None for a quarter of a second (long enough for a watch event to arrive)."""
    for _ in range(10):
        assert await store.changed() is None
        await asyncio.sleep(0.025)


async def test_a_new_store_holds_only_the_header(place: Place) -> None:
    doc = await place.store.load()
    assert doc.rules == () and doc.text.startswith(HEADER)
    assert (await place.store.load()).version == doc.version  # reading changes nothing
    await no_change_for_a_while(place.store)  # nor is the store's own creation of the file or ConfigMap a change


async def test_an_update_returns_before_and_after_and_is_what_load_reads(place: Place) -> None:
    first = await place.store.load()
    before, after = await place.store.update(grant)
    assert (before.rules, before.version) == ((), first.version)
    assert after.rules == (BOB,) and after.version != before.version
    loaded = await place.store.load()
    assert (loaded.rules, loaded.version) == (after.rules, after.version)


async def test_an_edit_that_changes_nothing_keeps_the_version(place: Place) -> None:
    _, granted = await place.store.update(grant)
    before, after = await place.store.update(grant)  # bob has that role already
    assert before.version == after.version == granted.version
    assert (await place.store.load()).version == granted.version


async def test_a_stale_version_changes_nothing(place: Place) -> None:
    store = place.store
    first = await store.load()
    _, current = await store.update(grant)
    with pytest.raises(PreconditionFailed, match=current.version):
        await store.update(lambda doc: doc.without_rule(BOB), if_match=first.version)
    assert (await store.load()).rules == (BOB,)
    _, emptied = await store.update(lambda doc: doc.without_rule(BOB), if_match=current.version)
    assert emptied.rules == ()


async def test_concurrent_updates_through_one_store_lose_nothing(place: Place) -> None:
    rules = [make_rule(f"user:u{n}@example.com", "team-a", "view") for n in range(20)]
    await asyncio.gather(*(place.store.update(granting(rule)) for rule in rules))
    assert set((await place.store.load()).rules) == set(rules)


async def test_the_stores_own_writes_are_not_reported_as_changes(place: Place) -> None:
    await place.store.load()
    await place.store.update(grant)
    await no_change_for_a_while(place.store)


async def test_another_stores_write_is_noticed_once(place: Place) -> None:
    if place.another is None:
        pytest.skip("a memory store is this process's alone: nobody else can change it")
    await place.store.load()
    other = await place.another()
    _, after = await other.update(grant)
    changed = await next_change(place.store)
    assert (changed.rules, changed.version) == ((BOB,), after.version)
    await no_change_for_a_while(place.store)


async def test_a_malformed_outside_edit_is_reported_once_and_the_next_good_one_is_seen(place: Place) -> None:
    if place.write is None:
        pytest.skip("a memory store is this process's alone: nobody else can change it")
    await place.store.load()
    place.write(BOB.to_line() + "\n")
    assert (await next_change(place.store)).rules == (BOB,)
    place.write("p, user:bob@example.com, team-a\n")
    with pytest.raises(PolicyError, match="line 1: expected 6 fields"):
        await next_change(place.store)
    await no_change_for_a_while(place.store)
    place.write("")
    assert (await next_change(place.store)).rules == ()


async def test_two_stores_on_one_place_lose_no_update_they_reported_done(place: Place) -> None:
    if place.another is None:
        pytest.skip("a memory store is this process's alone: nobody else can change it")
    one, two = place.store, await place.another()
    await one.load()
    rules = [make_rule(f"user:u{n}@example.com", "team-a", "view") for n in range(16)]
    results = await asyncio.gather(
        *((one if n % 2 else two).update(granting(rule)) for n, rule in enumerate(rules)),
        return_exceptions=True,
    )
    # A ConfigMap write that loses every retry to the other replica is refused (412), never half done.
    refused = [result for result in results if isinstance(result, BaseException)]
    assert all(isinstance(error, PreconditionFailed) for error in refused), refused
    done = {rule for rule, result in zip(rules, results, strict=True) if not isinstance(result, BaseException)}
    assert done and done <= set((await one.load()).rules)
