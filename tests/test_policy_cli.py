"""`notebook-gateway policy check` and `policy lint`, run as an admin would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway import keys
from gateway.cli.main import main
from gateway.identity import Identity
from tests.fakes.kube_api import FakeKubeAPI

from .conftest import wait_until

EXAMPLE = Path(__file__).parent.parent / "policies" / "policy.csv"


def test_check_says_allowed_and_which_rule_decided(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["policy", "check", "--user", "carol", "--group", "ml-team", "--namespace", "team-a", "--action", "connect"]
    assert main([*argv, "--file", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("allowed: carol may connect in namespace team-a.\n")
    assert f"p, group:ml-team, team-a, *, edit, allow    ({EXAMPLE}:" in out


def test_check_says_denied_with_the_deny_rule_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["policy", "check", "--user", "Dave@Example.com", "--group", "ml-team", "--group", "contractors"]
    assert main([*argv, "--namespace", "team-a", "--action", "view", "--file", str(EXAMPLE), "--json"]) == 1
    answer = json.loads(capsys.readouterr().out)
    assert (answer["allowed"], answer["decision"]) == (False, "deny")
    assert [rule["subject"] for rule in answer["rules"]] == ["group:contractors"]


def test_check_on_one_notebook(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["policy", "check", "--user", "bob@example.com", "--namespace", "team-a", "--file", str(EXAMPLE)]
    assert main([*argv, "--action", "connect", "--notebook", "nb1"]) == 0
    assert main([*argv, "--action", "connect", "--notebook", "nb2"]) == 1
    assert (
        "denied: bob@example.com has no role that allows them to connect notebook server nb2" in capsys.readouterr().out
    )


def test_check_refuses_a_malformed_policy_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "policy.csv"
    bad.write_text("p, user:a, team-a\n")
    argv = ["policy", "check", "--user", "a", "--namespace", "team-a", "--action", "view", "--file", str(bad)]
    assert main(argv) == 2
    assert "line 1: expected 6 fields" in capsys.readouterr().err


def test_the_shipped_example_lints_clean(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "lint", str(EXAMPLE)]) == 0
    assert "no findings" in capsys.readouterr().out


def test_lint_reports_every_kind_of_problem_by_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "policy.csv"
    lines = [
        "# a comment",
        "p, user:bob@example.com, team-a, *, owner, allow",  # 2: unknown role
        "p, user:bob@example.com, team-a, *, cluster-admin, allow",  # 3: a cluster role in one namespace
        "p, group:ml, team-a, *, view, allow",
        "p, group:ml, team-a, *, view, allow",  # 5: duplicate
        "p, group:ml, team-a, *, edit, deny",  # takes away what lines 4 and 5 grant
        "p, group:ml, team-a, nb1, edit, allow",  # 7: never takes effect either
        "p, group:ml, team-b, *, edit, allow",  # fine: another namespace
        "p, user:carol, team-a",  # 9: syntax
    ]
    path.write_text("\n".join(lines) + "\n")
    assert main(["policy", "lint", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line.split(": ", 1)[0].rsplit(":", 1)[1] for line in out] == ["2", "3", "4", "5", "5", "7", "9"]
    assert "role must be one of" in out[0] and "cluster-admin is a cluster role" in out[1]
    assert "deny rule on line 6" in out[2] and "duplicate of line 4" in out[3]
    assert "expected 6 fields" in out[6]


def test_lint_of_a_missing_file_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "lint", str(tmp_path / "nope.csv")]) == 2
    assert "cannot read it" in capsys.readouterr().err


# -- against the cluster (the fake API server): the ConfigMap store and Kubeflow's roles -----------


def cluster_config(tmp_path: Path, kube_api: FakeKubeAPI, **settings: object) -> Path:
    """A --config file pointing at the fake API server (TOML, as an operator would write it)."""
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")
    lines = [f'kubeconfig = "{kubeconfig}"', *(f"{key} = {json.dumps(value)}" for key, value in settings.items())]
    path = tmp_path / "gateway.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def check(config: Path, *argv: str) -> int:
    """`policy check` in a thread of its own: it runs its own event loop, while this one serves the fake API."""
    return await asyncio.to_thread(main, ["--config", str(config), "policy", "check", *argv])


async def test_check_reads_the_policy_configmap(
    kube_api: FakeKubeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kube_api.add_namespace("kubeflow")
    text = "# header\np, user:bob@example.com, alice, *, edit, allow\n"
    kube_api.create("configmaps", {"metadata": {"name": "team-policies"}, "data": {"policy.csv": text}}, "kubeflow")
    config = cluster_config(
        tmp_path, kube_api, policy_store="configmap", policy_configmap="team-policies", policy_namespace="kubeflow"
    )
    assert await check(config, "--user", "bob@example.com", "--namespace", "alice", "--action", "connect") == 0
    out = capsys.readouterr().out
    assert out.startswith("allowed: bob@example.com may connect in namespace alice.\n")
    assert "p, user:bob@example.com, alice, *, edit, allow    (kubeflow/team-policies:2)" in out
    assert await check(config, "--user", "bob@example.com", "--namespace", "bob", "--action", "view") == 1


async def test_check_of_a_configmap_not_made_yet_decides_on_no_rules_and_creates_nothing(
    kube_api: FakeKubeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = cluster_config(tmp_path, kube_api, policy_store="configmap", policy_namespace="alice")
    assert await check(config, "--user", "bob@example.com", "--namespace", "alice", "--action", "view") == 1
    assert "has no role" in capsys.readouterr().out
    assert kube_api.objects("configmaps") == []  # a check only reads


async def test_check_includes_kubeflows_roles_as_the_gateway_does(
    kube_api: FakeKubeAPI,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    gateway_factory: Callable[..., Any],
    routes_file: Callable[..., Path],
) -> None:
    kube_api.create(
        "profiles", {"metadata": {"name": "alice"}, "spec": {"owner": {"kind": "User", "name": "alice@example.com"}}}
    )
    # As Kubeflow's profile controller leaves the namespace: a Profile counts only where it is the owner.
    kube_api.patch("namespaces", "", "alice", {"metadata": {"annotations": {"owner": "alice@example.com"}}})
    binding = {
        "metadata": {
            "name": "user-carol-example-com-clusterrole-view",
            "annotations": {"user": "carol@example.com", "role": "view"},
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kubeflow-view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "carol@example.com"}],
    }
    kube_api.create("rolebindings", binding, "alice")
    config = cluster_config(tmp_path, kube_api, kubeflow_policies=True)
    asked = ["--user", "carol@example.com", "--namespace", "alice", "--action", "view", "--json"]
    assert await check(config, *asked) == 0
    answer = json.loads(capsys.readouterr().out)
    assert [(rule["source"], rule["location"]) for rule in answer["rules"]] == [
        ("kubeflow-rolebinding", "alice/user-carol-example-com-clusterrole-view")
    ]
    # The running gateway with the same settings answers the same.
    gateway = await gateway_factory(
        routes_file=routes_file({}),
        kubeflow_policies=True,
        kubeconfig=tmp_path / "kubeconfig",
        auto_profile=False,
    )
    await wait_until(lambda: gateway.app[keys.POLICIES].authorizer.namespaces(Identity("alice@example.com")))
    resp = await gateway.post(
        "/api/policies/check", json={"user": "carol@example.com", "namespace": "alice", "action": "view"}
    )
    assert await resp.json() == answer
    assert await check(config, "--user", "carol@example.com", "--namespace", "alice", "--action", "delete") == 1


async def test_check_refuses_to_guess_when_kubeflows_roles_cannot_be_read(
    kube_api: FakeKubeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = cluster_config(tmp_path, kube_api, kubeflow_policies=True)
    await kube_api.go_down("503")
    assert await check(config, "--user", "carol@example.com", "--namespace", "alice", "--action", "view") == 2
    assert "GATEWAY_KUBEFLOW_POLICIES: listing Kubeflow's Profiles and RoleBindings failed" in capsys.readouterr().err
