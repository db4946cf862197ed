"""Fail closed before the act: while a running gateway's audit file cannot be written, every change
through the API (policies, profiles, configurations, notebook servers) is refused with 503 and
nothing changes; once it can be written again the same change goes through, recorded once."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp

from gateway.audit.verify import verify
from tests.fakes.kube_api import FakeKubeAPI
from tests.test_audit_request import events
from tests.test_backend_kubernetes import IMAGE
from tests.test_configurations_api import FORM

from .conftest import Client

Factory = Callable[..., Any]
ROOT = "root@example.com"
BOB_EDIT = {"subject": "user:bob@example.com", "namespace": "alice", "role": "edit"}
NOTEBOOKS = "/api/namespaces/alice/notebooks"


@contextlib.contextmanager
def audit_unwritable(directory: Path) -> Iterator[None]:
    """A file where the running gateway's audit directory was (its volume went away), then put back."""
    away = directory.with_name(directory.name + "-away")
    directory.rename(away)
    directory.write_text("a file where the audit directory should be")
    try:
        yield
    finally:
        directory.unlink()
        away.rename(directory)


async def refused(resp: aiohttp.ClientResponse) -> bool:
    """A 503 saying the audit log cannot be written."""
    return resp.status == 503 and bool((await resp.json())["error"] == "audit_unavailable")


async def test_a_policy_change_is_refused_before_it_is_made(
    gateway_factory: Factory, routes_file: Any, tmp_path: Path
) -> None:
    audit_dir, policy_file = tmp_path / "audit", tmp_path / "policy.csv"
    client: Client = await gateway_factory(
        user=ROOT, bootstrap_admins=(ROOT,), audit_dir=audit_dir, policy_file=policy_file, routes_file=routes_file({})
    )
    assert (await client.post("/api/policies", json=BOB_EDIT)).status == 200
    before = await (await client.get("/api/policies")).json()
    stored = policy_file.read_bytes()
    with audit_unwritable(audit_dir):
        assert await refused(await client.post("/api/policies", json={**BOB_EDIT, "role": "admin"}))
        assert await refused(await client.delete("/api/policies", json=BOB_EDIT))
        replace = {"rules": [], "version": before["version"]}
        assert await refused(await client.put("/api/policies", json=replace, headers={"If-Match": before["version"]}))
        assert await (await client.get("/api/policies")).json() == before  # reads still work
    assert policy_file.read_bytes() == stored
    assert (await client.delete("/api/policies", json=BOB_EDIT)).status == 200  # the file can be written again
    actions = [(e["action"], e["details"]["rule"]["role"]) for e in events(audit_dir) if e["action"] == "policy.revoke"]
    assert actions == [("policy.revoke", "edit")]  # the refused changes left no event behind
    assert verify(audit_dir).ok


async def test_notebook_profile_and_configuration_changes_are_refused_before_they_are_made(
    gateway_factory: Factory, kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    audit_dir = tmp_path / "audit"
    client: Client = await gateway_factory(
        user=ROOT,
        bootstrap_admins=(ROOT,),
        backend="kubernetes",
        kubeconfig=kube_api.write_kubeconfig(tmp_path / "kubeconfig"),
        profiles="gateway",
        audit_dir=audit_dir,
    )
    assert (await client.post(NOTEBOOKS, json={"name": "nb1", "image": IMAGE})).status == 200
    with audit_unwritable(audit_dir):
        assert await refused(await client.post(NOTEBOOKS, json={"name": "nb2", "image": IMAGE}))
        assert await refused(await client.patch(f"{NOTEBOOKS}/nb1", json={"stopped": True}))
        assert await refused(await client.delete(f"{NOTEBOOKS}/nb1"))
        assert await refused(await client.post("/api/namespaces/alice/poddefaults", json=FORM))
        assert await refused(await client.post("/api/profiles", json={"name": "team-a", "owner": "a@example.com"}))
        assert await refused(await client.delete("/api/profiles/alice?confirm=alice"))
    nb1 = kube_api.get("notebooks", "alice", "nb1")
    assert nb1 is not None and "kubeflow-resource-stopped" not in nb1["metadata"]["annotations"]
    assert kube_api.get("notebooks", "alice", "nb2") is None
    assert kube_api.get("persistentvolumeclaims", "alice", "nb2-workspace") is None
    assert kube_api.objects("poddefaults", "alice") == []
    assert kube_api.get("namespaces", "", "team-a") is None and kube_api.get("namespaces", "", "alice") is not None
    assert (await client.patch(f"{NOTEBOOKS}/nb1", json={"stopped": True})).status == 200
    # The refused stop is on record as failed (its event waited for the file), then the real one.
    stops = [(e["outcome"], e["details"].get("error")) for e in events(audit_dir, "notebook.stop")]
    assert stops == [("failed", "audit_unavailable"), ("allowed", None)]
    assert verify(audit_dir).ok
