"""The one DNS-1123 name check: what Kubernetes accepts, and that every door into the gateway uses it."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import config
from gateway.authz.rules import PolicyError, make_rule
from gateway.errors import BadRequest, InvalidPath
from gateway.names import is_dns_label, is_dns_subdomain
from gateway.profiles import parse_profile
from gateway.routing import parse

GATEWAY = Path(__file__).parent.parent / "gateway"
ALPHANUMERIC = string.ascii_lowercase + string.digits


def spec_label(value: str) -> bool:
    """RFC 1123 as Kubernetes words it, written out without a regex: at most 63 characters, lower-case
    alphanumerics or '-', starting and ending with an alphanumeric."""
    return (
        0 < len(value) <= 63
        and all(ch in ALPHANUMERIC or ch == "-" for ch in value)
        and value[0] in ALPHANUMERIC
        and value[-1] in ALPHANUMERIC
    )


VALID = ["a", "0", "team-a", "nb1", "a" * 63, "1-2-3", "x--y"]
INVALID = ["", "A", "Team", "-a", "a-", "a" * 64, "a.b", "a_b", "a b", "a\n", "\na", "é", "a/b", "ａ"]


@pytest.mark.parametrize("name", VALID)
def test_kubernetes_names_are_labels(name: str) -> None:
    assert is_dns_label(name)


@pytest.mark.parametrize("name", INVALID)
def test_names_kubernetes_refuses_are_not_labels(name: str) -> None:
    assert not is_dns_label(name)


@given(st.text(alphabet=ALPHANUMERIC + "-.A_\n", max_size=70))
def test_the_label_check_is_the_rule_kubernetes_states(value: str) -> None:
    assert is_dns_label(value) == spec_label(value)


def test_subdomains_are_dotted_labels_of_at_most_253_characters() -> None:
    assert is_dns_subdomain("data.team-a") and is_dns_subdomain("a" * 253)
    assert is_dns_subdomain("a" * 100)  # unlike a label, one part may be longer than 63 characters
    for bad in ("", "a" * 254, ".a", "a.", "a..b", "A.b", "a-.b", "a\n"):
        assert not is_dns_subdomain(bad), bad


@pytest.mark.parametrize("name", ["Team", "a" * 64, "-a", "a.b"])
def test_every_door_refuses_the_same_names(name: str) -> None:
    """A path, a setting, a policy rule and a profile all refuse a name the check refuses."""
    with pytest.raises(InvalidPath):
        parse(f"/notebook/{name}/nb1/")
    with pytest.raises(InvalidPath):
        parse(f"/notebook/team-a/{name}/")
    with pytest.raises(config.ConfigError, match="GATEWAY_NAMESPACES"):
        config.load(namespaces=name)
    with pytest.raises(config.ConfigError, match="GATEWAY_POLICY_NAMESPACE"):
        config.load(policy_namespace=name)
    with pytest.raises(PolicyError):
        make_rule("user:alice", name, "view")
    with pytest.raises(BadRequest):
        parse_profile({"name": name, "owner": "user:alice"})


def test_every_door_takes_the_longest_label() -> None:
    name = "a" * 63
    assert (target := parse(f"/notebook/{name}/{name}/")) is not None and target.namespace == name
    assert config.load(namespaces=name, policy_namespace=name).policy_namespace == name
    assert make_rule("user:alice", name, "view").namespace == name
    assert parse_profile({"name": name, "owner": "user:alice"}).name == name


def test_no_module_but_names_writes_the_check_again() -> None:
    """One check, so that a fix to it reaches every caller."""
    pattern = re.compile(r"\[a-z0-9\]\(\[-a-z0-9\]|\[-a-z0-9\]\{0,61\}")
    copies = [
        str(path.relative_to(GATEWAY))
        for path in GATEWAY.rglob("*.py")
        if path.name != "names.py" and pattern.search(path.read_text())
    ]
    assert copies == []


def test_settings_that_name_kubernetes_objects_refuse_what_the_api_server_would() -> None:
    with pytest.raises(config.ConfigError) as bad:
        config.load(cluster_domain="Cluster.local", policy_configmap="policies..csv")
    assert [problem.split(":")[0] for problem in bad.value.problems] == [
        "GATEWAY_CLUSTER_DOMAIN",
        "GATEWAY_POLICY_CONFIGMAP",
    ]
    assert config.load(cluster_domain="corp.example.com").cluster_domain == "corp.example.com"
