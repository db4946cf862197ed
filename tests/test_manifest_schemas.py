"""Every object `deploy/` makes, as kustomize renders it, is valid for the Kubernetes API it is meant for:
Kubernetes' own kinds against the API's OpenAPI schemas (the `kubernetes-validate` package ships them, so
this runs offline), custom resources against their CRDs' schemas (tests/crds, with their sources). Strict:
a field the schema does not know is an error, as `kubectl apply`'s field validation makes it."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.fakes.kube_api import prune
from tests.test_deploy import (
    DEPLOY,
    KUSTOMIZATIONS,
    OVERLAYS,
    pytestmark,
    render,
    render_with_components,
    render_with_monitoring,
)

CRDS = Path(__file__).resolve().parent / "crds"
# The oldest Kubernetes the manifests support (ValidatingAdmissionPolicy is v1 from 1.30), and the newest
# the schemas know: an object valid for both is valid in between.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())

Manifest = dict[str, Any]

__all__ = ["pytestmark"]  # kubectl renders the manifests: skipped without it outside CI, as in test_deploy


@functools.cache
def crd_schemas() -> dict[tuple[str, str, str], Manifest]:
    """(group, version, kind) -> openAPIV3Schema, for every served version of the CRDs in tests/crds."""
    schemas = {}
    for path in sorted(CRDS.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd:
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                if version.get("served", True):
                    key = (spec["group"], version["name"], spec["names"]["kind"])
                    schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


def problems(doc: Manifest) -> list[str]:
    """What the API server would refuse in `doc` (empty when valid)."""
    group, _, version = doc["apiVersion"].rpartition("/")
    schema = crd_schemas().get((group, version, doc["kind"]))
    if schema is None and "." in group and not group.endswith(".k8s.io"):
        return [f"no CRD for {doc['apiVersion']} {doc['kind']} in tests/crds"]
    if schema is not None:
        unknown: list[str] = []
        prune(doc, schema, "", unknown, root=True)
        errors = [
            f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in jsonschema.Draft4Validator(schema).iter_errors(doc)
        ]  # OpenAPI v3.0 is Draft 4 plus x-kubernetes-*
        return [f"unknown field {where}" for where in unknown] + errors
    found = []
    for kubernetes in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, kubernetes, strict=True)
        except kubernetes_validate.ValidationError as exc:
            found.append(f"Kubernetes {kubernetes}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            found.append(f"Kubernetes {kubernetes} has no {doc['apiVersion']} {doc['kind']}")
    return found


def report(docs: list[Manifest]) -> dict[str, list[str]]:
    found = {f"{doc['kind']}/{doc['metadata']['name']}": problems(doc) for doc in docs}
    return {name: listed for name, listed in found.items() if listed}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_rendered_object_is_valid_for_its_api(kustomization: str) -> None:
    docs = render(kustomization)
    assert docs
    assert report(docs) == {}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlays_with_every_component_are_valid(overlay: str, tmp_path: Path) -> None:
    docs = render_with_components(overlay, tmp_path, "monitoring", "audit-volume")
    assert {doc["kind"] for doc in docs} >= {"ServiceMonitor", "PrometheusRule", "PersistentVolumeClaim"}
    assert report(docs) == {}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlays_with_the_audit_statefulset_are_valid(overlay: str, tmp_path: Path) -> None:
    """The other audit storage (a claim per replica): it replaces deploy/audit-volume, so it is built on its own."""
    docs = render_with_components(overlay, tmp_path, "monitoring", "audit-statefulset")
    kinds = [doc["kind"] for doc in docs]
    assert "StatefulSet" in kinds and kinds.count("Deployment") == (overlay == "overlays/standalone")  # Redis's
    assert report(docs) == {}


def test_every_file_in_deploy_is_rendered_by_a_kustomization() -> None:
    """So that the renders above cover every manifest: no file lies beside them unused (and unchecked)."""
    used: set[Path] = set()
    for kustomization in DEPLOY.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        listed = [*spec.get("resources", []), *spec.get("components", [])]
        listed += [patch["path"] for patch in spec.get("patches", []) if "path" in patch]
        listed += [env for generator in spec.get("configMapGenerator", []) for env in generator.get("envs", [])]
        used |= {(kustomization.parent / entry).resolve() for entry in listed}
    files = {path.resolve() for pattern in ("*.yaml", "*.env") for path in DEPLOY.rglob(pattern)}
    unused = sorted(
        str(path.relative_to(DEPLOY)) for path in files if path not in used and path.name != "kustomization.yaml"
    )
    assert unused == []


def test_a_wrong_field_is_caught(tmp_path: Path) -> None:
    """The check itself: a misspelt field and a wrong type, in a core kind and in a custom resource."""
    [deployment] = [doc for doc in render("base") if doc["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["imagePullPolcy"] = "Always"
    found = problems(deployment)
    assert len(found) == len(KUBERNETES_VERSIONS) and all("'imagePullPolcy' was unexpected" in p for p in found)
    container.pop("imagePullPolcy")
    deployment["spec"]["replicas"] = "two"
    found = problems(deployment)
    assert len(found) == len(KUBERNETES_VERSIONS) and all("spec.replicas: 'two' is not of type" in p for p in found)
    [monitor] = [
        doc for doc in render_with_monitoring("overlays/standalone", tmp_path) if doc["kind"] == "ServiceMonitor"
    ]
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    assert problems(monitor) == ["unknown field spec.endpoints[0].intervall"]
    monitor["spec"]["endpoints"][0].pop("intervall")
    monitor["spec"]["endpoints"][0]["interval"] = 30
    assert problems(monitor) and "interval" in problems(monitor)[0]
