"""`deploy/base` renders with kustomize and agrees with the code: settings, probes, ports, user."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from aiohttp import web
from pydantic import SecretStr

from gateway import health
from gateway.config import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
KUBECTL = shutil.which("kubectl")

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")

Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def manifests() -> dict[str, Manifest]:
    """The rendered base, by kind (each kind appears once)."""
    assert KUBECTL is not None
    done = subprocess.run(
        [KUBECTL, "kustomize", str(ROOT / "deploy" / "base")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    docs = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    by_kind = {doc["kind"]: doc for doc in docs}
    assert len(by_kind) == len(docs), "a kind appears twice"
    return by_kind


def container(manifests: dict[str, Manifest]) -> Manifest:
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    (only,) = pod["containers"]
    result: Manifest = only
    return result


def gateway_env(manifests: dict[str, Manifest]) -> dict[str, str]:
    """Every GATEWAY_* variable the container gets: ConfigMap values, and a stand-in for each
    variable read from a Secret (the Secret is made per cluster, not shipped)."""
    env = dict(manifests["ConfigMap"]["data"])
    for item in container(manifests).get("env", []):
        env[item["name"]] = item["value"] if "value" in item else "secret-stand-in-" + "s" * 32
    return {name: value for name, value in env.items() if name.startswith(ENV_PREFIX)}


def settings_from(env: dict[str, str]) -> Settings:
    """The settings these variables make, validated as the gateway would (and ignoring os.environ)."""
    return Settings.model_validate({name.removeprefix(ENV_PREFIX).lower(): value for name, value in env.items()})


def is_secret(field: str) -> bool:
    annotation = Settings.model_fields[field].annotation
    return annotation is SecretStr or SecretStr in get_args(annotation)


def test_base_builds_the_expected_objects(manifests: dict[str, Manifest]) -> None:
    assert set(manifests) == {"ServiceAccount", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget"}
    [source] = container(manifests)["envFrom"]
    assert source["configMapRef"]["name"] == manifests["ConfigMap"]["metadata"]["name"]
    pod = manifests["Deployment"]["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == manifests["ServiceAccount"]["metadata"]["name"]
    labels = pod["metadata"]["labels"]
    assert manifests["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert manifests["Service"]["spec"]["selector"].items() <= labels.items()


def test_every_gateway_variable_is_a_valid_setting(manifests: dict[str, Manifest]) -> None:
    env = gateway_env(manifests)
    unknown = [name for name in env if name.removeprefix(ENV_PREFIX).lower() not in Settings.model_fields]
    assert unknown == []
    settings = settings_from(env)
    assert settings.backend == "kubernetes" and settings.host == "0.0.0.0"
    assert settings.problems_for_serve() == []  # `serve` would start with these (and the Secret)


def test_secrets_come_from_a_secret_not_the_configmap(manifests: dict[str, Manifest]) -> None:
    in_configmap = {name.removeprefix(ENV_PREFIX).lower() for name in manifests["ConfigMap"]["data"]}
    assert [field for field in in_configmap if is_secret(field)] == []
    from_secret = {item["name"] for item in container(manifests)["env"] if "secretKeyRef" in item.get("valueFrom", {})}
    secret_fields = {field for field in Settings.model_fields if is_secret(field)}
    assert {name.removeprefix(ENV_PREFIX).lower() for name in from_secret} == secret_fields


def test_probes_ports_and_grace_period_match_the_gateway(manifests: dict[str, Manifest]) -> None:
    gateway = container(manifests)
    served = {route.path for route in health.routes if isinstance(route, web.RouteDef)}
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz" in served
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz" in served
    settings = settings_from(gateway_env(manifests))
    [port] = gateway["ports"]
    assert port["containerPort"] == settings.port
    [service_port] = manifests["Service"]["spec"]["ports"]
    assert (service_port["port"], service_port["targetPort"]) == (80, port["name"])
    pre_stop_s = int(gateway["lifecycle"]["preStop"]["exec"]["command"][-1])
    grace_s = manifests["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace_s > pre_stop_s + settings.shutdown_grace_s


def test_pod_runs_locked_down_as_the_image_user(manifests: dict[str, Manifest]) -> None:
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    gateway = container(manifests)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert gateway["securityContext"]["readOnlyRootFilesystem"] is True
    assert gateway["securityContext"]["allowPrivilegeEscalation"] is False
    assert gateway["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"requests", "limits"} <= set(gateway["resources"])
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.search(r"^USER (\d+)", dockerfile, re.MULTILINE)
    assert user is not None and int(user.group(1)) == pod["securityContext"]["runAsUser"]
    assert f"EXPOSE {gateway['ports'][0]['containerPort']}" in dockerfile
