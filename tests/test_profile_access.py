"""gateway/profile_access.py on the fake API server: in kubeflow mode every Profile's namespace gets the
NetworkPolicy and Istio AuthorizationPolicy that admit the gateway to its notebooks, and keeps them:
put back when deleted or edited, made once the profile controller has made the namespace."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.profile_access import AUTHORIZATION_POLICY_NAME, ProfileAccess, authorization_policy
from gateway.profiles import NETWORK_POLICY_NAME, network_policy
from tests.fakes.kube_api import FakeKubeAPI, kube_client

from .conftest import wait_until

GATEWAY_NS = "kubeflow"


def add_profile(kube_api: FakeKubeAPI, name: str, *, namespace: bool = True) -> None:
    """A Profile, and (as Kubeflow's profile controller would make it) its namespace."""
    kube_api.create("profiles", {"metadata": {"name": name}, "spec": {"owner": {"kind": "User", "name": "o@x.org"}}})
    if namespace:
        kube_api.add_namespace(name)


def specs(kube_api: FakeKubeAPI, namespace: str) -> tuple[object, object]:
    policy = kube_api.get("networkpolicies", namespace, NETWORK_POLICY_NAME)
    authorization = kube_api.get("authorizationpolicies", namespace, AUTHORIZATION_POLICY_NAME)
    return (policy or {}).get("spec"), (authorization or {}).get("spec")


WANTED = (network_policy(GATEWAY_NS)["spec"], authorization_policy(GATEWAY_NS)["spec"])


@pytest.fixture
async def access(kube_api: FakeKubeAPI, tmp_path: Path) -> AsyncIterator[ProfileAccess]:
    async with kube_client(kube_api, tmp_path) as client:
        yield ProfileAccess(client, gateway_namespace=GATEWAY_NS)


@pytest.fixture
async def running(access: ProfileAccess) -> AsyncIterator[ProfileAccess]:
    """The loop, relisting rarely: what it does within a test, a watch made it do."""
    task = asyncio.create_task(access.reconcile(interval_s=300))
    yield access
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_every_profile_namespace_admits_the_gateway_and_only_it(
    access: ProfileAccess, kube_api: FakeKubeAPI
) -> None:
    add_profile(kube_api, "team-a")
    add_profile(kube_api, "team-b")
    assert await access.reconcile_once() == {
        "team-a": ["networkpolicies", "authorizationpolicies"],
        "team-b": ["networkpolicies", "authorizationpolicies"],
    }
    for namespace in ("team-a", "team-b"):
        assert specs(kube_api, namespace) == WANTED
    # Istio admits the gateway's ServiceAccount in its own namespace, as deploy/notebook-namespace-istio did.
    principals = WANTED[1]["rules"][0]["from"][0]["source"]["principals"]  # type: ignore[index]
    assert principals == ["cluster.local/ns/kubeflow/sa/notebook-gateway"]
    assert kube_api.objects("networkpolicies", "alice") == []  # a namespace with no Profile is left alone
    assert await access.reconcile_once() == {}  # nothing to do the second time


async def test_deleted_or_edited_policies_are_put_back_at_once(running: ProfileAccess, kube_api: FakeKubeAPI) -> None:
    add_profile(kube_api, "team-a")
    await wait_until(lambda: specs(kube_api, "team-a") == WANTED)
    kube_api.delete("networkpolicies", "team-a", NETWORK_POLICY_NAME)
    await wait_until(lambda: specs(kube_api, "team-a") == WANTED)
    # A tenant widens the Istio policy to every identity, and labels it: the spec comes back, the label stays.
    edit = {"metadata": {"labels": {"team": "a"}}, "spec": {"rules": [{}]}}
    kube_api.patch("authorizationpolicies", "team-a", AUTHORIZATION_POLICY_NAME, edit)
    await wait_until(lambda: specs(kube_api, "team-a") == WANTED)
    labels = kube_api.get("authorizationpolicies", "team-a", AUTHORIZATION_POLICY_NAME)["metadata"]["labels"]  # type: ignore[index]
    assert labels["team"] == "a"


async def test_a_profile_gets_them_once_its_namespace_exists(running: ProfileAccess, kube_api: FakeKubeAPI) -> None:
    add_profile(kube_api, "team-c", namespace=False)  # the profile controller has not got to it yet
    await wait_until(lambda: kube_api.get("profiles", "", "team-c") is not None)
    kube_api.add_namespace("team-c")
    await wait_until(lambda: specs(kube_api, "team-c") == WANTED, timeout_s=20)
