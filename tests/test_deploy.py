"""`deploy/` renders with kustomize and agrees with the code: settings, probes, ports, users, the
Kubernetes calls the RBAC allows, the Istio routes and the notebook NetworkPolicy."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit

import pytest
import yaml
from aiohttp import web
from pydantic import SecretStr

from gateway import health
from gateway.config import ENV_PREFIX, Settings
from gateway.errors import KubernetesForbidden
from gateway.kube.client import PVCS, KubeClient
from gateway.profile_access import (
    AUTHORIZATION_POLICIES,
    AUTHORIZATION_POLICY_NAME,
    NamespacePending,
    ProfileAccess,
    authorization_policy,
)
from gateway.profiles import (
    GATEWAY,
    MANAGED_BY,
    NAMESPACES,
    NETWORK_POLICY_NAME,
    PROFILE_ROLEBINDINGS,
    Profile,
    Provisioner,
)
from tests.fakes.kube_api import FakeKubeAPI, kube_client, service_account_identity

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBECTL = shutil.which("kubectl")
KUSTOMIZATIONS = ["base", "overlays/standalone", "overlays/kubeflow", "notebook-namespace", "notebook-namespace-istio"]
OVERLAYS = ["overlays/standalone", "overlays/kubeflow"]
# What a cluster (with Istio, for Kubeflow) knows: nothing here needs a CRD the install lacks.
KNOWN_KINDS = {
    ("v1", "Namespace"),
    ("v1", "ServiceAccount"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),  # deploy/audit-statefulset
    ("policy/v1", "PodDisruptionBudget"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("networking.k8s.io/v1", "Ingress"),
    ("networking.istio.io/v1beta1", "VirtualService"),
    ("security.istio.io/v1beta1", "AuthorizationPolicy"),
    ("security.istio.io/v1beta1", "PeerAuthentication"),
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"),
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding"),
}
# KubeClient method -> the RBAC verb its request needs (a dry-run create is still a create).
VERB_OF_METHOD = {"get": "get", "list": "list", "watch": "watch", "create": "create", "patch": "patch"}
VERB_OF_METHOD |= {"delete": "delete", "replace": "update", "read_log": "get"}
SIMPLE_STATEMENTS = (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Expr, ast.Return)
# What the gateway's RBAC and admission objects are, as the fake API server stores them.
ACCESS_KINDS = {
    "ClusterRole": "clusterroles",
    "ClusterRoleBinding": "clusterrolebindings",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "ValidatingAdmissionPolicy": "validatingadmissionpolicies",
    "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings",
}
# What only namespace provisioning (GATEWAY_PROFILES=gateway) writes.
PROVISIONING = {"namespaces", "serviceaccounts", "resourcequotas", "limitranges", "networkpolicies", "clusterroles"}

# Never a silent skip in CI, where scripts/setup-system installs kubectl: there a missing one fails every test.
pytestmark = pytest.mark.skipif(
    KUBECTL is None and not os.environ.get("CI"), reason="kubectl is not installed (scripts/setup-system installs it)"
)

Manifest = dict[str, Any]


def render(kustomization: str) -> list[Manifest]:
    assert KUBECTL is not None
    done = subprocess.run(
        [KUBECTL, "kustomize", str(DEPLOY / kustomization)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_kind(docs: list[Manifest], *, gateway_only: bool = True) -> dict[str, Manifest]:
    """The gateway's objects by kind (each kind appears once), leaving out the Redis of standalone,
    the notebooks' ClusterRoles (deploy/base/notebook-roles.yaml) and the notebook origins' routes."""
    mine = [
        doc for doc in docs if not gateway_only or not (is_redis(doc) or is_notebook_role(doc) or is_origin_route(doc))
    ]
    result = {doc["kind"]: doc for doc in mine}
    assert len(result) == len(mine), "a kind appears twice"
    return result


def is_redis(doc: Manifest) -> bool:
    return "redis" in doc["metadata"]["name"]


def is_origin_route(doc: Manifest) -> bool:
    return bool(doc["metadata"]["name"].endswith("-notebook-origins"))


def is_notebook_role(doc: Manifest) -> bool:
    return bool(doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "notebooks")


@pytest.fixture(scope="module")
def manifests() -> dict[str, Manifest]:
    """The rendered base, by kind."""
    return by_kind(render("base"))


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Manifest]]:
    """Every kustomization, rendered once."""
    return {name: render(name) for name in KUSTOMIZATIONS}


def used_permissions(*, kubeflow_mode: bool = False) -> set[tuple[str, str, str]]:
    """(API group, resource, verb) for every Kubernetes call in gateway/: `x.<method>(KIND, ...)` on
    a KubeClient, and list + watch for each `Reflector(client, KIND, ...)`. Kinds are the module-level
    `NAME = Kind(group, version, plural)` constants; a kind passed through anything but a name (or a
    comprehension in the same statement as the Reflector) is not seen, and the test then fails.
    `kubeflow_mode`: the calls of GATEWAY_PROFILES=kubeflow, where of gateway/profiles.py only those on
    Kubeflow Profiles run (the rest provisions namespaces, which Kubeflow's controller does there), and
    gateway/profile_access.py runs (only there)."""
    paths = sorted((ROOT / "gateway").rglob("*.py"))
    trees = [ast.parse(path.read_text()) for path in paths]
    kinds: dict[str, tuple[str, str]] = {}
    for node in (node for tree in trees for node in ast.walk(tree)):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and _name(node.value.func) == "Kind":
            group, _, plural = (ast.literal_eval(arg) for arg in node.value.args[:3])
            kinds.update({target.id: (group, plural) for target in node.targets if isinstance(target, ast.Name)})
    used = set()
    for path, tree in zip(paths, trees, strict=True):
        if kubeflow_mode and path == ROOT / "gateway" / "profiles.py":
            used |= _calls_on(tree, {"KUBEFLOW_PROFILES": kinds["KUBEFLOW_PROFILES"]})
        elif not kubeflow_mode and path == ROOT / "gateway" / "profile_access.py":
            continue  # runs only in kubeflow mode
        else:
            used |= _calls_on(tree, kinds)
    return used


def _calls_on(tree: ast.AST, kinds: dict[str, tuple[str, str]]) -> set[tuple[str, str, str]]:
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _name(node.func) in VERB_OF_METHOD and node.args:
            if isinstance(node.args[0], ast.Name) and node.args[0].id in kinds:
                used.add((*kinds[node.args[0].id], VERB_OF_METHOD[_name(node.func)]))
        if isinstance(node, SIMPLE_STATEMENTS) and any(_name(n.func) == "Reflector" for n in _calls(node)):
            named = {kinds[n.id] for n in ast.walk(node) if isinstance(n, ast.Name) and n.id in kinds}
            used |= {(group, plural, verb) for group, plural in named for verb in ("list", "watch")}
    return used


def _name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _calls(node: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(node) if isinstance(n, ast.Call)]


def granted(docs: list[Manifest], kind: str) -> set[tuple[str, str, str]]:
    [role] = [doc for doc in docs if doc["kind"] == kind]
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def pods(docs: list[Manifest]) -> list[Manifest]:
    return [doc["spec"]["template"]["spec"] for doc in docs if doc["kind"] == "Deployment"]


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
    assert set(manifests) == {
        *("ServiceAccount", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler"),
        *("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "NetworkPolicy"),
        *("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"),
    }
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
    port, metrics_port = gateway["ports"]
    assert port["containerPort"] == settings.port
    assert (metrics_port["name"], metrics_port["containerPort"]) == ("metrics", settings.metrics_port)
    service_port, service_metrics = manifests["Service"]["spec"]["ports"]
    assert (service_port["port"], service_port["targetPort"]) == (80, port["name"])
    assert service_metrics["targetPort"] == "metrics"
    annotations = manifests["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(settings.metrics_port)
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


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_kustomization_builds_objects_the_cluster_knows(
    rendered: dict[str, list[Manifest]], kustomization: str
) -> None:
    docs = rendered[kustomization]
    assert docs
    assert {(doc["apiVersion"], doc["kind"]) for doc in docs} <= KNOWN_KINDS


def test_rbac_grants_exactly_the_calls_the_code_makes(manifests: dict[str, Manifest]) -> None:
    docs = list(manifests.values())
    cluster, namespaced = granted(docs, "ClusterRole"), granted(docs, "Role")
    # `bind` is no call of its own: the API server asks for it when a RoleBinding names a ClusterRole.
    assert cluster | namespaced == used_permissions() | {("rbac.authorization.k8s.io", "clusterroles", "bind")}
    # The policy ConfigMap is the only namespaced grant, and it is not also cluster-wide.
    assert {resource for _, resource, _ in namespaced} == {"configmaps"}
    assert not {resource for _, resource, _ in cluster} & {"configmaps", "secrets", "pods"}
    named = [rule["resourceNames"] for rule in manifests["Role"]["rules"] if "resourceNames" in rule]
    assert named == [[Settings.model_fields["policy_configmap"].default]]
    everything = [value for doc in docs if "rules" in doc for rule in doc["rules"] for value in sum(rule.values(), [])]
    assert "*" not in everything


def test_notebook_roles_ship_in_the_base_and_the_viewer_only_reads() -> None:
    roles = {doc["metadata"]["name"]: doc for doc in render("base") if is_notebook_role(doc)}
    assert set(roles) == {"notebook-editor", "notebook-viewer"}
    editor = {(group, resource) for group, resource, verb in granted([roles["notebook-editor"]], "ClusterRole")}
    assert {("apps", "deployments"), ("batch", "jobs"), ("kubeflow.org", "tfjobs"), ("", "pods/exec")} <= editor
    assert {verb for _, _, verb in granted([roles["notebook-viewer"]], "ClusterRole")} == {"get", "list", "watch"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_binds_the_roles_to_the_gateway_in_its_namespace(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    objects = by_kind(rendered[overlay])
    namespace = objects["Deployment"]["metadata"]["namespace"]
    account = objects["ServiceAccount"]["metadata"]
    assert account["namespace"] == namespace and objects["Role"]["metadata"]["namespace"] == namespace
    for binding in ("ClusterRoleBinding", "RoleBinding"):
        [subject] = objects[binding]["subjects"]
        assert (subject["name"], subject["namespace"]) == (account["name"], namespace)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_settings_are_ones_serve_accepts(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    objects = by_kind(rendered[overlay])
    env = gateway_env(objects)
    assert [name for name in env if name.removeprefix(ENV_PREFIX).lower() not in Settings.model_fields] == []
    settings = settings_from(env)
    assert settings.problems_for_serve() == []
    assert settings.public_url is not None and settings.policy_store == "configmap"
    assert settings.kubeflow_policies is (overlay == "overlays/kubeflow")


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_pod_runs_non_root_with_a_read_only_root(rendered: dict[str, list[Manifest]], kustomization: str) -> None:
    for pod in pods(rendered[kustomization]):
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
        for box in pod["containers"]:
            context = box["securityContext"]
            assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert {"requests", "limits"} <= set(box["resources"])
            assert {"livenessProbe", "readinessProbe"} <= set(box)


def test_gateway_replicas_spread_over_nodes(manifests: dict[str, Manifest]) -> None:
    deployment = manifests["Deployment"]
    assert deployment["spec"]["replicas"] >= 2
    [term] = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()
    assert manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_replicas_scale_on_cpu_and_spread_over_zones_and_nodes(manifests: dict[str, Manifest]) -> None:
    deployment, hpa = manifests["Deployment"], manifests["HorizontalPodAutoscaler"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 2 <= hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    [metric] = hpa["spec"]["metrics"]
    assert (metric["type"], metric["resource"]["name"]) == ("Resource", "cpu")
    # Utilization counts against the request: the target must be reachable under the container's limit.
    resources = container(manifests)["resources"]
    limit_ratio = cpu_millicores(resources["limits"]["cpu"]) / cpu_millicores(resources["requests"]["cpu"])
    assert 0 < metric["resource"]["target"]["averageUtilization"] < 100 * limit_ratio
    pod = deployment["spec"]["template"]
    spread = pod["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for constraint in spread:
        assert constraint["labelSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"  # a one-node cluster still runs them all


def cpu_millicores(quantity: str | int) -> float:
    text = str(quantity)
    return float(text[:-1]) if text.endswith("m") else float(text) * 1000


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_redis_ships_only_with_standalone(rendered: dict[str, list[Manifest]], kustomization: str) -> None:
    images = [box["image"] for pod in pods(rendered[kustomization]) for box in pod["containers"]]
    assert any(image.startswith("redis:") for image in images) is (kustomization == "overlays/standalone")


def test_standalone_gateway_uses_its_redis_with_the_secret_password(rendered: dict[str, list[Manifest]]) -> None:
    docs = rendered["overlays/standalone"]
    [service] = [doc for doc in docs if doc["kind"] == "Service" and "redis" in doc["metadata"]["name"]]
    env = container(by_kind(docs))["env"]
    names = [item["name"] for item in env]
    url = urlsplit(env[names.index("GATEWAY_REDIS_URL")]["value"])
    assert (url.hostname, url.port) == (service["metadata"]["name"], service["spec"]["ports"][0]["port"])
    assert url.password == "$(REDIS_PASSWORD)"
    # Kubernetes expands $(VAR) only from variables defined before it.
    password = env[names.index("REDIS_PASSWORD")]
    assert names.index("REDIS_PASSWORD") < names.index("GATEWAY_REDIS_URL") and "secretKeyRef" in password["valueFrom"]


def test_kubeflow_routes_reach_the_gateway_service(rendered: dict[str, list[Manifest]]) -> None:
    objects = by_kind(rendered["overlays/kubeflow"])
    service = objects["Service"]
    host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    routes = objects["VirtualService"]["spec"]["http"]
    prefixes = {match["uri"].get("prefix"): route for route in routes for match in route["match"]}
    assert {"/notebook/", "/jupyter/", "/oauth2/"} <= set(prefixes)
    for route in routes:
        [destination] = route["route"]
        assert destination["destination"] == {"host": host, "port": {"number": service["spec"]["ports"][0]["port"]}}
    assert prefixes["/jupyter/"]["rewrite"] == {"uri": "/"} and "rewrite" not in prefixes["/notebook/"]
    assert objects["VirtualService"]["spec"]["gateways"] == ["kubeflow/kubeflow-gateway"]


def test_kubeflow_overlay_signs_in_with_kubeflows_dex_client(rendered: dict[str, list[Manifest]]) -> None:
    settings = settings_from(gateway_env(by_kind(rendered["overlays/kubeflow"])))
    assert settings.oidc_client_id == "kubeflow-oidc-authservice"
    assert str(settings.oidc_issuer).rstrip("/") == settings.base_url + "/dex"  # Dex behind the same host
    assert by_kind(rendered["overlays/kubeflow"])["Deployment"]["metadata"]["namespace"] == "kubeflow"


def test_notebook_pods_admit_only_the_gateway_and_their_namespace(rendered: dict[str, list[Manifest]]) -> None:
    [policy] = rendered["notebook-namespace"]
    assert "namespace" not in policy["metadata"]  # applied with -n into each profile namespace
    assert policy["spec"]["podSelector"] == {"matchExpressions": [{"key": "notebook-name", "operator": "Exists"}]}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    gateway_rule, namespace_rule = policy["spec"]["ingress"]
    [peer] = gateway_rule["from"]
    gateway = by_kind(rendered["overlays/kubeflow"])["Deployment"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": gateway["metadata"]["namespace"]}
    assert peer["podSelector"]["matchLabels"].items() <= gateway["spec"]["template"]["metadata"]["labels"].items()
    assert gateway_rule["ports"] == [{"protocol": "TCP", "port": 8888}]
    assert namespace_rule == {"from": [{"podSelector": {}}]}


def test_with_istio_the_gateways_identity_is_admitted_to_profile_namespaces(
    rendered: dict[str, list[Manifest]],
) -> None:
    objects = by_kind(rendered["notebook-namespace-istio"])
    assert objects["NetworkPolicy"] == by_kind(rendered["notebook-namespace"])["NetworkPolicy"]
    policy = objects["AuthorizationPolicy"]
    assert "namespace" not in policy["metadata"] and policy["spec"]["action"] == "ALLOW"
    [rule] = policy["spec"]["rules"]
    [source] = rule["from"]
    gateway = by_kind(rendered["overlays/kubeflow"])["Deployment"]
    account = gateway["spec"]["template"]["spec"]["serviceAccountName"]
    assert source["source"]["principals"] == [f"cluster.local/ns/{gateway['metadata']['namespace']}/sa/{account}"]


def test_notebook_image_starts_jupyter_as_kubeflow_expects() -> None:
    dockerfile = (DEPLOY / "notebook-image" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:[\d.]+-slim$", dockerfile, re.MULTILINE)
    assert re.search(r"^USER 1000\b", dockerfile, re.MULTILINE) and "ENV NB_PREFIX /\n" in dockerfile
    [cmd] = re.findall(r"^CMD (.+)$", dockerfile, re.MULTILINE)
    *shell, command = yaml.safe_load(cmd)  # JSON exec form
    assert shell == ["sh", "-c"]  # a shell, so ${NB_PREFIX} is read when the container starts
    assert command.split()[:2] == ["jupyter", "lab"] and "EXPOSE 8888" in dockerfile
    for flag in ("--notebook-dir=/home/jovyan", "--ip=0.0.0.0", "--port=8888", "--ServerApp.base_url=${NB_PREFIX}"):
        assert flag in command.split()
    assert "--ServerApp.token=''" in command.split() and "--ServerApp.password=''" in command.split()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_notebook_origin_is_routed_to_the_gateway(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    docs = rendered[overlay]
    settings = settings_from(gateway_env(by_kind(docs)))
    assert settings.notebook_origins == "isolated" and settings.notebook_domain is not None
    wildcard, gateway_host = f"*.{settings.notebook_domain}", urlsplit(settings.base_url).hostname
    service = by_kind(docs)["Service"]
    backend = {"name": service["metadata"]["name"], "port": {"number": service["spec"]["ports"][0]["port"]}}
    if overlay == "overlays/kubeflow":
        [route] = [doc for doc in docs if is_origin_route(doc)]
        assert route["spec"]["hosts"] == [wildcard] and route["spec"]["gateways"] == ["kubeflow/kubeflow-gateway"]
        [rule] = route["spec"]["http"]
        assert "match" not in rule and "rewrite" not in rule  # every path, as it is
        host = f"{backend['name']}.{service['metadata']['namespace']}.svc.cluster.local"
        assert rule["route"] == [{"destination": {"host": host, "port": backend["port"]}}]
        return
    ingress = by_kind(docs)["Ingress"]
    rules = {rule["host"]: rule["http"]["paths"] for rule in ingress["spec"]["rules"]}
    assert set(rules) == {gateway_host, wildcard}
    for paths in rules.values():
        assert paths == [{"path": "/", "pathType": "Prefix", "backend": {"service": backend}}]
    assert sorted(host for tls in ingress["spec"]["tls"] for host in tls["hosts"]) == sorted(rules)


def test_kubeflow_overlay_grants_only_what_kubeflow_mode_calls(rendered: dict[str, list[Manifest]]) -> None:
    objects = by_kind(rendered["overlays/kubeflow"])
    cluster, namespaced = granted([objects["ClusterRole"]], "ClusterRole"), granted([objects["Role"]], "Role")
    assert cluster | namespaced == used_permissions(kubeflow_mode=True)
    # The profile controller provisions: the gateway writes no namespace, quota, account or binding, and
    # binds nothing; of what gateway mode provisions it keeps only the NetworkPolicy that lets it in.
    writes = {(resource, verb) for _, resource, verb in cluster if verb not in ("get", "list", "watch")}
    assert {resource for resource, _ in writes} & (PROVISIONING | {"rolebindings"}) == {"networkpolicies"}
    assert {verb for resource, verb in writes if resource in ("networkpolicies", "authorizationpolicies")} == {
        "create",
        "patch",
    }


def apply_access(kube_api: FakeKubeAPI, docs: list[Manifest]) -> str:
    """Put the RBAC and admission objects of a rendered kustomization into the fake API server (with
    the namespaces they live in, and kube-system); the bearer token of the gateway's ServiceAccount."""
    kube_api.add_namespace("kube-system")
    for doc in docs:
        if doc["kind"] == "Namespace":
            kube_api.create("namespaces", doc)
    for doc in docs:
        plural = ACCESS_KINDS.get(doc["kind"])
        namespace = doc["metadata"].get("namespace", "") if plural in ("roles", "rolebindings") else ""
        if namespace and kube_api.get("namespaces", "", namespace) is None:
            kube_api.add_namespace(namespace)
        if plural is not None:
            kube_api.create(plural, doc, namespace)
    account = by_kind(docs)["ServiceAccount"]["metadata"]
    return kube_api.add_identity(*service_account_identity(account["namespace"], account["name"]))


@pytest.fixture
async def as_gateway(
    kube_api: FakeKubeAPI, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[KubeClient]:
    """A KubeClient holding the gateway's ServiceAccount token, under the overlay `request.param`."""
    token = apply_access(kube_api, render(request.param))
    async with kube_client(kube_api, tmp_path, token=token) as client:
        yield client


def takeover(namespace: str) -> Manifest:
    """The escalation a compromised gateway would try: notebook-editor (pods, pods/exec) for itself."""
    return {
        "metadata": {"name": "takeover"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "notebook-editor"},
        "subjects": [{"kind": "ServiceAccount", "name": "notebook-gateway", "namespace": namespace}],
    }


VOLUME: Manifest = {"metadata": {"name": "loot"}}
VOLUME["spec"] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}


async def refused(call: Any) -> str:
    """The API server's reason for refusing `call` with 403 (as the gateway's client reports it)."""
    with pytest.raises(KubernetesForbidden) as caught:
        await call
    assert caught.value.api_status == 403, caught.value.description
    return caught.value.detail


@pytest.mark.parametrize("as_gateway", ["overlays/standalone"], indirect=True)
async def test_the_gateways_account_provisions_profiles_but_reaches_no_other_namespace(
    as_gateway: KubeClient, kube_api: FakeKubeAPI
) -> None:
    provisioner = Provisioner(as_gateway, mode="gateway", gateway_namespace="notebook-gateway")
    await provisioner.create(Profile("team-a", "user:alice@example.com", {"cpu": "4"}))
    assert kube_api.get("rolebindings", "team-a", "default-editor") is not None
    for namespace in ("kube-system", "alice"):  # alice: a namespace the gateway did not make
        error = await refused(as_gateway.create(PROFILE_ROLEBINDINGS, namespace, takeover("notebook-gateway")))
        assert "tenant namespaces" in error
        await refused(as_gateway.create(PVCS, namespace, VOLUME))
        await refused(as_gateway.delete(NAMESPACES, "", namespace))
    # Not even in its own profile namespace can it bind a role to itself.
    error = await refused(as_gateway.create(PROFILE_ROLEBINDINGS, "team-a", takeover("notebook-gateway")))
    assert "own namespace" in error
    assert kube_api.get("namespaces", "", "kube-system") is not None
    assert kube_api.objects("rolebindings", "kube-system") == []
    await provisioner.delete("team-a")  # its own profiles it may still delete
    assert kube_api.get("namespaces", "", "team-a") is None


@pytest.mark.parametrize("as_gateway", ["overlays/kubeflow"], indirect=True)
async def test_under_kubeflow_the_gateways_account_writes_only_notebooks_in_profile_namespaces(
    as_gateway: KubeClient, kube_api: FakeKubeAPI
) -> None:
    kube_api.create(
        "namespaces", {"metadata": {"name": "team-b", "labels": {"app.kubernetes.io/part-of": "kubeflow-profile"}}}
    )
    await as_gateway.create(PVCS, "team-b", VOLUME)
    await refused(as_gateway.create(PVCS, "kube-system", VOLUME))
    for namespace in ("kube-system", "team-b"):
        error = await refused(as_gateway.create(PROFILE_ROLEBINDINGS, namespace, takeover(namespace)))
        assert "cannot create resource" in error  # RBAC: no RoleBinding writes in kubeflow mode
        await refused(as_gateway.delete(NAMESPACES, "", namespace))


@pytest.mark.parametrize("as_gateway", ["overlays/kubeflow"], indirect=True)
async def test_under_kubeflow_the_gateway_keeps_its_way_into_profile_namespaces_and_no_other(
    as_gateway: KubeClient, kube_api: FakeKubeAPI
) -> None:
    kube_api.create(
        "namespaces", {"metadata": {"name": "team-b", "labels": {"app.kubernetes.io/part-of": "kubeflow-profile"}}}
    )
    for name in ("team-b", "kube-system"):  # a Profile naming a namespace the profile controller did not make
        kube_api.create(
            "profiles", {"metadata": {"name": name}, "spec": {"owner": {"kind": "User", "name": "b@x.org"}}}
        )
    access = ProfileAccess(as_gateway, gateway_namespace="kubeflow")
    with pytest.raises(NamespacePending, match="kube-system"):
        await access.reconcile_once()
    assert kube_api.get("networkpolicies", "team-b", NETWORK_POLICY_NAME) is not None
    assert kube_api.get("authorizationpolicies", "team-b", AUTHORIZATION_POLICY_NAME) is not None
    assert kube_api.objects("networkpolicies", "kube-system") == []
    assert kube_api.objects("authorizationpolicies", "kube-system") == []
    error = await refused(as_gateway.create(AUTHORIZATION_POLICIES, "kube-system", authorization_policy("kubeflow")))
    assert "tenant namespaces" in error


def test_the_admission_policy_binds_the_gateways_account_to_the_labels_the_code_sets(
    manifests: dict[str, Manifest],
) -> None:
    policy, binding = manifests["ValidatingAdmissionPolicy"], manifests["ValidatingAdmissionPolicyBinding"]
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    assert policy["spec"]["failurePolicy"] == "Fail"  # an expression that errs refuses
    [condition] = policy["spec"]["matchConditions"]
    assert f"endsWith(':{manifests['ServiceAccount']['metadata']['name']}')" in condition["expression"]
    expressions = " ".join(validation["expression"] for validation in policy["spec"]["validations"])
    assert f"['{MANAGED_BY}'] == '{GATEWAY}'" in expressions  # the label gateway/profiles.py puts on namespaces
    assert all(validation["reason"] == "Forbidden" for validation in policy["spec"]["validations"])


# -- monitoring: the metrics port, the NetworkPolicy, the ServiceMonitor and the alerts -----------------

MONITORING_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}


def render_with_monitoring(overlay: str, tmp_path: Path) -> list[Manifest]:
    """`overlay` with the deploy/monitoring component, as docs/operators.md tells operators to add it."""
    return render_with_components(overlay, tmp_path, "monitoring")


def render_with_components(overlay: str, tmp_path: Path, *components: str) -> list[Manifest]:
    """`overlay` with these components of deploy/ (in the overlay's kustomization, whose namespace their
    objects then take), as docs/operators.md tells operators to add them."""
    here = tmp_path / f"with-{'-'.join(components)}"
    here.mkdir()
    namespace = yaml.safe_load((DEPLOY / overlay / "kustomization.yaml").read_text())["namespace"]
    listed = "".join(f"  - {os.path.relpath(DEPLOY / component, here)}\n" for component in components)
    (here / "kustomization.yaml").write_text(
        f"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {namespace}\n"
        f"resources:\n  - {os.path.relpath(DEPLOY / overlay, here)}\ncomponents:\n{listed}"
    )
    assert KUBECTL is not None
    done = subprocess.run([KUBECTL, "kustomize", str(here)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def exported_metric_names() -> set[str]:
    """Every metric name the gateway's source defines (each starts with the prefix)."""
    names: set[str] = set()
    for path in (ROOT / "gateway").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.fullmatch(r"notebook_gateway_[a-z_]+", node.value):
                    names.add(node.value)
    return names


def metric_names_in(text: str) -> set[str]:
    """The metric names an expression or a document uses, without the suffixes Prometheus adds."""
    found = set(re.findall(r"notebook_gateway_[a-z_]*[a-z]", text))
    return {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in found}


def test_the_gateway_admits_the_metrics_port_only_from_monitoring(manifests: dict[str, Manifest]) -> None:
    policy = manifests["NetworkPolicy"]
    labels = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    users, monitoring = policy["spec"]["ingress"]
    assert users == {"ports": [{"port": "http", "protocol": "TCP"}]}  # from anywhere: the ingress, wherever it runs
    assert monitoring["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert monitoring["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    names = {port["name"] for port in container(manifests)["ports"]}
    assert names == {"http", "metrics"}


def test_under_istio_prometheus_can_scrape_the_metrics_port_and_the_user_port_stays_strict(
    rendered: dict[str, list[Manifest]],
) -> None:
    """The kubeflow overlay's pods have a sidecar in a STRICT mTLS namespace: a Prometheus without a sidecar
    reaches the metrics port only if that port (the container's, as Istio's portLevelMtls means it) is
    PERMISSIVE, and nothing else may be."""
    objects = by_kind(rendered["overlays/kubeflow"])
    peer, deployment = objects["PeerAuthentication"], objects["Deployment"]
    assert peer["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    selector = peer["spec"]["selector"]["matchLabels"]  # Istio refuses portLevelMtls without one
    assert selector and selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    settings = settings_from(gateway_env(objects))
    ports = {port["name"]: port["containerPort"] for port in container(objects)["ports"]}
    assert (ports["metrics"], ports["http"]) == (settings.metrics_port, settings.port)
    assert peer["spec"]["mtls"] == {"mode": "STRICT"}
    assert peer["spec"]["portLevelMtls"] == {str(settings.metrics_port): {"mode": "PERMISSIVE"}}
    # The port is not taken out of the mesh instead (which would bypass Istio's policies on it).
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    assert not [name for name in annotations if name.startswith("traffic.sidecar.istio.io/")]
    # Who may connect is still the NetworkPolicy's: the metrics port only from `monitoring`.
    _, monitoring = objects["NetworkPolicy"]["spec"]["ingress"]
    assert monitoring["ports"] == [{"port": "metrics", "protocol": "TCP"}] and monitoring["from"]
    assert "PeerAuthentication" not in by_kind(rendered["overlays/standalone"])  # no Istio there


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_monitoring_component_scrapes_the_metrics_port_of_the_overlays_gateway(
    overlay: str, tmp_path: Path
) -> None:
    docs = render_with_monitoring(overlay, tmp_path)
    assert {(doc["apiVersion"], doc["kind"]) for doc in docs} <= KNOWN_KINDS | MONITORING_KINDS
    objects = by_kind(docs)
    monitor, service = objects["ServiceMonitor"], objects["Service"]
    namespace = objects["Deployment"]["metadata"]["namespace"]
    assert monitor["metadata"]["namespace"] == objects["PrometheusRule"]["metadata"]["namespace"] == namespace
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"


def test_every_alert_names_metrics_the_gateway_exports(tmp_path: Path) -> None:
    rules = by_kind(render_with_monitoring("overlays/standalone", tmp_path))["PrometheusRule"]
    exported = exported_metric_names()
    alerts = [rule for group in rules["spec"]["groups"] for rule in group["rules"]]
    assert len({rule["alert"] for rule in alerts}) == len(alerts)
    for rule in alerts:
        assert {"severity"} <= set(rule["labels"]) and rule["annotations"]["summary"]
        named = metric_names_in(rule["expr"])
        assert named <= exported, f"{rule['alert']} names {named - exported}"
    # The alerts docs/security.md lists are among them, and every metric the docs name exists.
    security = (ROOT / "docs" / "security.md").read_text()
    shipped = " ".join(rule["expr"] for rule in alerts)
    listed = security[security.index("Alerts worth having") :].split("\n\n", 1)[0]
    assert metric_names_in(listed) <= metric_names_in(shipped)
    for doc in ("security.md", "operators.md", "admins.md"):
        assert metric_names_in((ROOT / "docs" / doc).read_text()) <= exported, doc


# -- audit files on a persistent volume (deploy/audit-volume, deploy/audit-statefulset) ---------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_audit_volume_gives_each_pod_its_own_directory_on_a_claim(overlay: str, tmp_path: Path) -> None:
    docs = render_with_components(overlay, tmp_path, "audit-volume")
    claims = [doc for doc in docs if doc["kind"] == "PersistentVolumeClaim"]
    [claim] = [doc for doc in claims if not is_redis(doc)]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # replicas on several nodes write at once
    objects = by_kind([doc for doc in docs if doc["kind"] != "PersistentVolumeClaim"])
    assert claim["metadata"]["namespace"] == objects["Deployment"]["metadata"]["namespace"]
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["audit"] == {"name": "audit", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}
    gateway = container(objects)
    [mount] = [mount for mount in gateway["volumeMounts"] if mount["name"] == "audit"]
    env = [item["name"] for item in gateway["env"]]
    # Kubernetes expands $(POD_NAME) only when POD_NAME is defined before the variable that uses it.
    assert env.index("POD_NAME") < env.index("GATEWAY_AUDIT_DIR")
    values = {item["name"]: item for item in gateway["env"]}
    assert values["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert values["GATEWAY_AUDIT_DIR"]["value"] == f"{mount['mountPath']}/$(POD_NAME)"  # one chain per pod
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]  # the new volume is writable
    settings = settings_from({**gateway_env(objects), "GATEWAY_AUDIT_DIR": values["GATEWAY_AUDIT_DIR"]["value"]})
    assert settings.audit_dir.parent == Path(mount["mountPath"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_audit_statefulset_gives_each_replica_a_claim_of_its_own_at_the_audit_directory(
    overlay: str, tmp_path: Path
) -> None:
    docs = render_with_components(overlay, tmp_path, "audit-statefulset")
    objects = by_kind(docs)
    assert "Deployment" not in objects and "PersistentVolumeClaim" not in objects  # claims come from the template
    statefulset, plain = objects["StatefulSet"], by_kind(render(overlay))
    spec = statefulset["spec"]
    # The same pod as the overlay's Deployment, but for the volume, the fsGroup and the Deployment-only keys.
    pod, before = spec["template"]["spec"], plain["Deployment"]["spec"]["template"]["spec"]
    assert pod["containers"] == before["containers"] and pod["serviceAccountName"] == before["serviceAccountName"]
    assert spec["selector"] == plain["Deployment"]["spec"]["selector"] and "strategy" not in spec
    assert spec["serviceName"] == objects["Service"]["metadata"]["name"]
    [template] = spec["volumeClaimTemplates"]
    assert template["spec"]["accessModes"] == ["ReadWriteOnce"]  # one replica's own disk
    assert "storage" in template["spec"]["resources"]["requests"]
    # Scaling down keeps a replica's claim (its chain), and the next replica with that ordinal continues it.
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenScaled": "Retain", "whenDeleted": "Retain"}
    assert [volume["name"] for volume in pod["volumes"]] == ["tmp"]  # no emptyDir in the claim's place
    [gateway] = pod["containers"]
    [mount] = [mount for mount in gateway["volumeMounts"] if mount["name"] == template["metadata"]["name"]]
    # The audit directory is the claim's mount itself: no $(POD_NAME) directory, the claim is the replica's.
    assert "GATEWAY_AUDIT_DIR" not in {item["name"] for item in gateway.get("env", [])}
    env = dict(objects["ConfigMap"]["data"]) | {
        item["name"]: item.get("value", "secret-stand-in-" + "s" * 32) for item in gateway.get("env", [])
    }
    settings = settings_from({name: value for name, value in env.items() if name.startswith(ENV_PREFIX)})
    assert settings.audit_dir == Path(mount["mountPath"])
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]  # the new volume is writable
    # The autoscaler and the disruption budget follow the StatefulSet's pods.
    target = objects["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", statefulset["metadata"]["name"])
    budget = objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]
    assert budget.items() <= spec["template"]["metadata"]["labels"].items()
    for constraint in pod["topologySpreadConstraints"]:
        assert "matchLabelKeys" not in constraint  # a StatefulSet's pods have no pod-template-hash
    assert all(box["securityContext"]["readOnlyRootFilesystem"] for box in pod["containers"])


def test_without_the_audit_volume_the_audit_files_live_as_long_as_the_pod(manifests: dict[str, Manifest]) -> None:
    """The base: an emptyDir (docs/operators.md says what that loses), at the directory the settings name."""
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    [audit] = [volume for volume in pod["volumes"] if volume["name"] == "audit"]
    assert "emptyDir" in audit
    [mount] = [mount for mount in container(manifests)["volumeMounts"] if mount["name"] == "audit"]
    assert settings_from(gateway_env(manifests)).audit_dir == Path(mount["mountPath"])


# The app's routes that the Kubeflow overlay's VirtualService leaves alone, each for a reason: probes and
# Prometheus reach the pod directly (and `/healthz` on the host is the dashboard's), `/` is the dashboard's
# page, and the notebook-origin callback is served on the notebook origins (routed whole by their own route).
NOT_ON_THE_GATEWAY_HOST = {"healthz", "readyz", "metrics", "index", "notebook_callback"}
# What the central dashboard serves on the same host (centraldashboard app/server.ts, api.ts, api_workgroup.ts):
# none of it may be taken by the gateway's routes.
DASHBOARD_PATHS = [
    "/",
    "/healthz",
    "/index.html",
    "/api/namespaces",
    "/api/workgroup/exists",
    "/api/workgroup/env-info",
    "/api/dashboard-links",
    "/api/dashboard-settings",
    "/api/activities/kubeflow-user",
    "/api/metrics/node",
    "/pipeline/",
]
SAMPLE_PARAMETERS = {
    "namespace": "kubeflow-user-example-com",
    "name": "nb1",
    "path": "check",
    "tail": "",
    "pod": "nb1-0",
}


def sample_path(canonical: str, route_name: str | None) -> str:
    """A path the route answers, its {parameters} filled in."""
    if route_name == "static":
        return "/static/gateway.css"
    if route_name == "proxy":
        return "/notebook/kubeflow-user-example-com/nb1/lab"
    return re.sub(r"\{(\w+)(?::[^}]*)?\}", lambda m: SAMPLE_PARAMETERS[m.group(1)], canonical)


def istio_route(routes: list[Manifest], path: str) -> Manifest | None:
    """The first http route of a VirtualService that takes `path` (Istio: in order; a route with
    several matches takes a request any of them matches; regex is RE2, matched whole)."""

    def matches(uri: dict[str, str]) -> bool:
        if "prefix" in uri:
            return path.startswith(uri["prefix"])
        if "exact" in uri:
            return path == uri["exact"]
        return re.fullmatch(uri["regex"], path) is not None

    return next((route for route in routes if any(matches(match["uri"]) for match in route["match"])), None)


def test_the_kubeflow_overlay_routes_every_path_the_app_serves(rendered: dict[str, list[Manifest]]) -> None:
    from gateway.app import create_app  # builds, opens nothing

    objects = by_kind(rendered["overlays/kubeflow"])
    app = create_app(settings_from(gateway_env(objects)))
    routes = objects["VirtualService"]["spec"]["http"]
    paths = {
        sample_path(resource.canonical, resource.name)
        for resource in app.router.resources()
        if resource.name not in NOT_ON_THE_GATEWAY_HOST
    }
    assert len(paths) > 25  # every page, API and OAuth route, not a handful
    unrouted = sorted(path for path in paths if istio_route(routes, path) is None)
    assert unrouted == [], "add these to deploy/overlays/kubeflow/virtualservice.yaml"
    # And the dashboard keeps its own paths on the same host.
    assert [path for path in DASHBOARD_PATHS if istio_route(routes, path) is not None] == []
