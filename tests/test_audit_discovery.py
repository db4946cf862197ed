"""`notebook.discovered` through the real gateway on the fake Kubernetes API: one event for a Notebook
made with kubectl, exactly once across restarts and replicas (Redis, or a file beside the audit log
without it), none for the Notebooks the gateway creates itself (they have `notebook.create`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis

from gateway.audit import AuditLog, discovery
from gateway.audit.chain import Sealer
from gateway.audit.discovery import FileLedger, NotebookDiscovery, RedisLedger
from gateway.audit.filesink import ChainedFile
from gateway.kube.kubeflow_names import CREATOR_ANNOTATION as CREATOR
from tests.fakes.kube_api import FakeKubeAPI
from tests.test_audit_request import events
from tests.test_backend_kubernetes import IMAGE, notebook_body

from .conftest import Client, RedisServer, wait_until

Factory = Callable[..., Any]


@pytest.fixture(autouse=True)
def short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settle sightings at once instead of after 10 s (the window another replica has to claim its own)."""
    monkeypatch.setattr(discovery, "GRACE_S", 0.0)


@pytest.fixture
def gateways(gateway_factory: Factory, kube_api: FakeKubeAPI, tmp_path: Path) -> Factory:
    """Builds a gateway on the fake cluster writing its audit log to `audit_dir`."""
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")

    async def build(audit_dir: Path, **settings: Any) -> Client:
        client: Client = await gateway_factory(
            backend="kubernetes", kubeconfig=kubeconfig, audit_dir=audit_dir, **settings
        )
        return client

    return build


def kubectl_create(kube_api: FakeKubeAPI, name: str, **annotations: str) -> str:
    """A Notebook created directly in the API server, as `kubectl apply` would; returns its uid."""
    created = kube_api.create("notebooks", notebook_body(name, **annotations), namespace="alice")
    uid: str = created["metadata"]["uid"]
    return uid


def discovered(*directories: Path) -> list[tuple[str, str]]:
    return [(e["notebook"], e["details"]["uid"]) for d in directories for e in events(d, "notebook.discovered")]


async def test_a_notebook_made_with_kubectl_is_recorded_once_across_restarts_with_redis(
    gateways: Factory, kube_api: FakeKubeAPI, own_redis_server: RedisServer, tmp_path: Path
) -> None:
    audit_dir, shared = tmp_path / "audit", {"session_store": "redis", "redis_url": own_redis_server.url}
    first = await gateways(audit_dir, **shared)
    uid = kubectl_create(kube_api, "by-kubectl", **{CREATOR: "mallory@example.com"})
    await wait_until(lambda: discovered(audit_dir))
    [event] = events(audit_dir, "notebook.discovered")
    assert (event["actor"], event["namespace"], event["notebook"], event["outcome"]) == (
        "-",
        "alice",
        "by-kubectl",
        "allowed",
    )
    assert event["details"]["uid"] == uid and event["details"]["creator"] == "mallory@example.com"
    assert event["details"]["via"] == "kubernetes-api"
    await first.close()
    await gateways(audit_dir, **shared)  # a restart: it lists by-kubectl again
    later = kubectl_create(kube_api, "after-restart")  # settled after everything the list found
    await wait_until(lambda: len(discovered(audit_dir)) == 2)
    assert discovered(audit_dir) == [("by-kubectl", uid), ("after-restart", later)]
    async with redis.Redis.from_url(own_redis_server.url) as client:
        assert await client.ttl(f"{discovery.LEDGER_PREFIX}:{uid}") > 300 * 24 * 3600  # remembered for long


async def test_two_replicas_record_a_kubectl_notebook_once_between_them(
    gateways: Factory, kube_api: FakeKubeAPI, own_redis_server: RedisServer, tmp_path: Path
) -> None:
    shared = {"session_store": "redis", "redis_url": own_redis_server.url}
    one, two = tmp_path / "one", tmp_path / "two"
    await gateways(one, **shared)
    await gateways(two, **shared)
    uids = [kubectl_create(kube_api, f"nb{i}") for i in range(5)]
    await wait_until(lambda: len(discovered(one, two)) >= 5)
    marker = kubectl_create(kube_api, "marker")  # created last, so settled last by both
    await wait_until(lambda: sum(uid == marker for _, uid in discovered(one, two)) == 1)
    assert sorted(uid for _, uid in discovered(one, two)) == sorted([*uids, marker])


async def test_without_redis_a_file_beside_the_audit_log_remembers_across_restarts(
    gateways: Factory, kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    audit_dir = tmp_path / "audit"
    first = await gateways(audit_dir)  # dev: memory sessions
    uid = kubectl_create(kube_api, "by-kubectl")
    await wait_until(lambda: discovered(audit_dir))
    await first.close()
    assert uid in (audit_dir / discovery.LEDGER_FILE).read_text()
    await gateways(audit_dir)
    later = kubectl_create(kube_api, "after-restart")
    await wait_until(lambda: len(discovered(audit_dir)) == 2)
    assert discovered(audit_dir) == [("by-kubectl", uid), ("after-restart", later)]
    assert events(audit_dir, "notebook.discovered")[0]["details"]["creator"] is None  # no annotation: none claimed


async def test_notebooks_the_gateway_creates_are_not_discovered_even_after_a_restart(
    gateways: Factory, kube_api: FakeKubeAPI, own_redis_server: RedisServer, tmp_path: Path
) -> None:
    audit_dir, shared = tmp_path / "audit", {"session_store": "redis", "redis_url": own_redis_server.url}
    first = await gateways(audit_dir, **shared)
    for name in ("nb1", "nb2", "nb3"):
        resp = await first.post("/api/namespaces/alice/notebooks", json={"name": name, "image": IMAGE})
        assert resp.status == 200, await resp.text()
    marker = kubectl_create(kube_api, "marker")
    await wait_until(lambda: discovered(audit_dir))
    await first.close()
    await gateways(audit_dir, **shared)
    later = kubectl_create(kube_api, "after-restart")
    await wait_until(lambda: len(discovered(audit_dir)) == 2)
    assert discovered(audit_dir) == [("marker", marker), ("after-restart", later)]
    assert [e["notebook"] for e in events(audit_dir, "notebook.create")] == ["nb1", "nb2", "nb3"]


async def test_a_kubectl_notebook_deleted_at_once_is_still_recorded(
    gateways: Factory, kube_api: FakeKubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discovery, "GRACE_S", 0.5)  # long enough for the delete to come first
    audit_dir = tmp_path / "audit"
    await gateways(audit_dir)
    uid = kubectl_create(kube_api, "short-lived")
    kube_api.delete("notebooks", "alice", "short-lived")
    await wait_until(lambda: discovered(audit_dir))
    assert discovered(audit_dir) == [("short-lived", uid)]


async def test_a_watch_event_that_overtakes_the_gateways_own_create_is_not_discovered(tmp_path: Path) -> None:
    """The watch may deliver a new Notebook before the API server's answer to the create reaches the
    gateway: it waits while that name is being created, then it is the gateway's (or, if the create
    failed, somebody else's)."""
    audit = AuditLog(ChainedFile(tmp_path / "audit", Sealer(), 1 << 20), stdout=False)
    await audit.open()
    ledger = FileLedger(tmp_path / "audit" / discovery.LEDGER_FILE)
    found = NotebookDiscovery(audit, ledger, grace_s=0.0)
    found.creating("alice", "nb1")
    found.creating("alice", "nb2")
    found.seen("alice", "nb1", "uid-1", creator="alice@example.com", created=None)  # the watch came first
    found.seen("alice", "nb2", "uid-2", creator="bob@example.com", created=None)  # bob's kubectl won the name
    await found.settle()
    found.created("alice", "nb1", "uid-1")
    found.created("alice", "nb2", None)  # the gateway's create got 409 AlreadyExists
    await found.settle()
    await audit.close()
    assert discovered(tmp_path / "audit") == [("nb2", "uid-2")]
    assert await FileLedger(ledger.path).claim(["uid-1", "uid-2"], "discovered") == set()  # both settled for good


class Clock:
    """A monotonic clock the test moves by hand, so the replicas' grace window is walked through, not skipped."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_two_replicas_the_window_lets_the_creator_claim_its_notebook_first(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Replica B sees a Notebook on its watch before replica A, which is creating it, has its API answer. Inside
    the window B records nothing; A's claim lands; when B's window ends the ledger says "created", not
    discovered. A Notebook nobody claims is recorded once the window ends, and not a moment before."""
    clock, client = Clock(), redis.Redis.from_url(redis_server.url)
    window_s = 10.0  # the production window (the autouse fixture shortens the module constant for the others)
    ledger = RedisLedger(client, prefix=f"test:window:{tmp_path.name}")  # shared by both replicas, as in a cluster
    logs, replicas = [], []
    for name in ("a", "b"):
        log = AuditLog(ChainedFile(tmp_path / name, Sealer(), 1 << 20), stdout=False)
        await log.open()
        logs.append(log)
        replicas.append(NotebookDiscovery(log, ledger, grace_s=window_s, clock=clock))
    a, b = replicas
    try:
        a.creating("alice", "nb1")
        b.seen("alice", "nb1", "uid-1", creator="alice@example.com", created=None)  # B's watch: A's Notebook
        b.seen("alice", "kubectl", "uid-2", creator=None, created=None)  # made outside the gateway
        clock.now += window_s / 2
        assert await b.settle() == pytest.approx(window_s / 2)  # nothing due yet: wait out the rest
        a.created("alice", "nb1", "uid-1")  # A's API answer arrives inside B's window
        await a.settle()
        clock.now += window_s / 2 - 0.01
        await b.settle()
        assert discovered(tmp_path / "b") == []  # still inside the window
        clock.now += 0.01
        await b.settle()
    finally:
        for log in logs:
            await log.close()
        await client.aclose()
    assert discovered(tmp_path / "a", tmp_path / "b") == [("kubectl", "uid-2")]
