"""FakeKubeAPI: an HTTP-level Kubernetes API server on loopback, for the official client to talk to.

It follows the real conventions the gateway relies on: lists with a resourceVersion, watch streams
(ADDED / MODIFIED / DELETED / BOOKMARK, an ERROR 410 Expired for a compacted version), `Status`
error bodies (404 NotFound, 409 AlreadyExists / Conflict, 422 Invalid), merge / strategic-merge /
JSON patches, label and field selectors, a status subresource, namespaced and cluster-scoped kinds.
Notebooks, Profiles and PodDefaults are pruned, defaulted and validated against the real CRD schemas in
`tests/kubeflow/crds/` (copied from Kubeflow; `tests/kubeflow/SOURCES.md` says from where). Deleting a
namespace deletes everything in it (the namespace controller's work, done at once); SubjectAccessReviews are
answered by RBAC's rules (Role/ClusterRole bindings, aggregated ClusterRoles, resourceNames, non-resource
URLs). Test hooks: `go_down()` / `come_back()`,
`compact()`, `fail_next()`, `hold_namespaces` / `collect_namespaces()`, `requests`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import functools
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import jsonschema
import pytest
import yaml
from aiohttp import web

from gateway.backends.kubernetes import KubernetesBackend
from gateway.kube.client import KubeClient

from .admission import AdmissionRequest, review
from .pod_admission import PodRefused, admit_pod

# Kubeflow's CRDs, kept in the repository (tests/kubeflow/SOURCES.md says where each came from).
CRD_DIR = Path(__file__).parents[1] / "kubeflow" / "crds"
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
QUANTITY = re.compile(
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
MERGE_PATCH, STRATEGIC_PATCH, JSON_PATCH = (
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/json-patch+json",
)
EVENT_FIELDS = frozenset(
    {"involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid"}
    | {"involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath"}
    | {"reason", "reportingComponent", "source", "type"}
)
DEFAULT_WATCH_TIMEOUT_S = 1800.0

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    """One kind the fake serves. `crd` names the CRD file whose schema validates it."""

    group: str
    versions: tuple[str, ...]  # the first is the storage version
    plural: str
    kind: str
    namespaced: bool
    crd: str | None = None  # with a CRD: status subresource, pruning, defaulting, schema validation
    name_pattern: re.Pattern[str] = DNS_SUBDOMAIN

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version

    @property
    def qualified(self) -> str:
        """How error messages name the resource: `notebooks.kubeflow.org`, `persistentvolumeclaims`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


RESOURCES = {
    r.plural: r
    for r in (
        Resource("kubeflow.org", ("v1", "v1beta1", "v1alpha1"), "notebooks", "Notebook", True, "notebook"),
        Resource("kubeflow.org", ("v1", "v1beta1"), "profiles", "Profile", False, "profile"),
        Resource("kubeflow.org", ("v1alpha1",), "poddefaults", "PodDefault", True, "poddefault"),
        Resource("", ("v1",), "namespaces", "Namespace", False, name_pattern=DNS_LABEL),
        Resource("", ("v1",), "persistentvolumeclaims", "PersistentVolumeClaim", True),
        Resource("", ("v1",), "services", "Service", True, name_pattern=DNS_LABEL),
        Resource("", ("v1",), "events", "Event", True),
        Resource("", ("v1",), "configmaps", "ConfigMap", True),
        Resource("rbac.authorization.k8s.io", ("v1",), "rolebindings", "RoleBinding", True),
        # What a gateway-provisioned profile holds (gateway/profiles.py).
        Resource("", ("v1",), "serviceaccounts", "ServiceAccount", True),
        Resource("", ("v1",), "resourcequotas", "ResourceQuota", True),
        Resource("networking.k8s.io", ("v1",), "networkpolicies", "NetworkPolicy", True),
        # What the gateway keeps in Kubeflow Profile namespaces besides (gateway/profile_access.py).
        Resource("security.istio.io", ("v1beta1", "v1"), "authorizationpolicies", "AuthorizationPolicy", True),
        Resource("rbac.authorization.k8s.io", ("v1",), "roles", "Role", True),
        Resource("rbac.authorization.k8s.io", ("v1",), "clusterroles", "ClusterRole", False),
        Resource("rbac.authorization.k8s.io", ("v1",), "clusterrolebindings", "ClusterRoleBinding", False),
        Resource("", ("v1",), "limitranges", "LimitRange", True),
        # Admitted as tests/fakes/pod_admission.py says: LimitRange defaults, Pod Security, ResourceQuota.
        Resource("", ("v1",), "pods", "Pod", True),
        # Enforced on the requests of the identities of `add_identity()` (tests/fakes/admission.py).
        Resource(
            "admissionregistration.k8s.io", ("v1",), "validatingadmissionpolicies", "ValidatingAdmissionPolicy", False
        ),
        Resource(
            "admissionregistration.k8s.io",
            ("v1",),
            "validatingadmissionpolicybindings",
            "ValidatingAdmissionPolicyBinding",
            False,
        ),
    )
}
SUBJECT_ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
SUBJECT_ACCESS_REVIEW = Resource("authorization.k8s.io", ("v1",), "subjectaccessreviews", "SubjectAccessReview", False)
SUBJECT_KINDS = ("User", "Group", "ServiceAccount")
NAMESPACE_FINALIZER = "kubernetes"  # the namespace controller's: on every namespace, off once it is empty


class KubeError(Exception):
    """An error the fake answers with, as a `Status` body."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def body(self) -> Obj:
        status: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
        status.update(message=self.message, reason=self.reason, code=self.code)
        if self.details is not None:
            status["details"] = self.details
        return status


def not_found(resource: Resource, name: str) -> KubeError:
    details = {"name": name, "group": resource.group, "kind": resource.plural}
    return KubeError(404, "NotFound", f'{resource.qualified} "{name}" not found', details)


# -- CRD schemas ---------------------------------------------------------------------------------


@functools.cache
def crd_schemas() -> dict[tuple[str, str], Obj]:
    """(plural, version) -> openAPIV3Schema, with notebook-validation-patch.yaml applied as kustomize would."""
    if not (CRD_DIR / "notebook.yaml").is_file():
        pytest.fail(f"the Kubeflow CRDs are missing: expected {CRD_DIR}/notebook.yaml")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # notebook.yaml is 9,500 lines
    schemas: dict[tuple[str, str], Obj] = {}
    for name in ("notebook", "profile", "poddefault"):
        crd = next(doc for doc in yaml.load_all((CRD_DIR / f"{name}.yaml").read_text(), Loader=loader) if doc)
        if name == "notebook":
            patch = yaml.load((CRD_DIR / "notebook-validation-patch.yaml").read_text(), Loader=loader)
            crd = apply_json_patch(crd, patch)
        for version in crd["spec"]["versions"]:
            schemas[crd["spec"]["names"]["plural"], version["name"]] = version["schema"]["openAPIV3Schema"]
    return schemas


@functools.cache
def validator(plural: str, version: str) -> jsonschema.Draft4Validator:
    # OpenAPI v3.0 schemas are Draft 4 plus x-kubernetes-* keywords, which jsonschema ignores.
    return jsonschema.Draft4Validator(crd_schemas()[plural, version])


def prune(value: Any, schema: Obj, path: str, dropped: list[str], *, root: bool = False) -> Any:
    """Structural pruning and defaulting, as the API server does before validating a custom resource:
    fields the schema does not know are dropped (their paths go to `dropped`), defaults filled in."""
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune(item, schema["items"], f"{path}[{i}]", dropped) for i, item in enumerate(value)]
    if not isinstance(value, dict):
        return value
    properties, extra = schema.get("properties"), schema.get("additionalProperties")
    if properties is None and not isinstance(extra, dict):
        return value  # an object the schema leaves open (e.g. metadata)
    result = {}
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        if root and key in ("apiVersion", "kind", "metadata"):
            result[key] = item
        elif properties is not None and key in properties:
            result[key] = prune(item, properties[key], where, dropped)
        elif isinstance(extra, dict):
            result[key] = prune(item, extra, where, dropped)
        elif schema.get("x-kubernetes-preserve-unknown-fields"):
            result[key] = item
        else:
            dropped.append(where)
    for key, sub in (properties or {}).items():
        if key not in result and "default" in sub:
            result[key] = copy.deepcopy(sub["default"])
    return result


def schema_causes(resource: Resource, version: str, obj: Obj) -> list[Obj]:
    """The CRD schema's complaints about `obj`, as the API server's `details.causes`."""
    causes = []
    for error in sorted(validator(resource.plural, version).iter_errors(obj), key=lambda e: list(e.path)):
        where = field_path(error.absolute_path)
        if error.validator == "required":
            match = re.match(r"'(.+)' is a required property", error.message)
            missing = match.group(1) if match else "?"
            causes.append(cause("FieldValueRequired", f"{where}.{missing}" if where else missing, "Required value"))
        elif error.validator == "type":
            shown = json.dumps(error.instance)
            message = f"Invalid value: {shown}: {where} in body must be of type {error.validator_value}"
            causes.append(cause("FieldValueTypeInvalid", where, message))
        elif error.validator == "minItems":
            least = error.validator_value
            message = f"Invalid value: {len(error.instance)}: {where} in body should have at least {least} items"
            causes.append(cause("FieldValueInvalid", where, message))
        elif error.validator == "pattern":
            message = (
                f"Invalid value: {json.dumps(error.instance)}: {where} in body should match '{error.validator_value}'"
            )
            causes.append(cause("FieldValueInvalid", where, message))
        else:
            causes.append(
                cause("FieldValueInvalid", where, f"Invalid value: {json.dumps(error.instance)}: {error.message}")
            )
    return causes


def field_path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def cause(reason: str, where: str, message: str) -> Obj:
    return {"reason": reason, "message": message, "field": where}


def invalid(resource: Resource, name: str, causes: list[Obj]) -> KubeError:
    """422 Invalid, worded like the API server: `Kind.group "name" is invalid: field: message`."""
    parts = [f"{c['field']}: {c['message']}" if c["field"] else c["message"] for c in causes]
    summary = parts[0] if len(parts) == 1 else f"[{', '.join(parts)}]"
    details = {"name": name, "group": resource.group, "kind": resource.kind, "causes": causes}
    return KubeError(422, "Invalid", f'{resource.qualified_kind} "{name}" is invalid: {summary}', details)


def core_causes(resource: Resource, obj: Obj) -> list[Obj]:
    """The few checks the real server makes on core objects that a gateway bug could trip."""
    spec = obj.get("spec") or {}
    if resource.plural == "persistentvolumeclaims":
        causes = []
        if not spec.get("accessModes"):
            causes.append(
                cause("FieldValueRequired", "spec.accessModes", "Required value: at least 1 access mode is required")
            )
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
        if storage is None:
            causes.append(cause("FieldValueRequired", "spec.resources[storage]", "Required value"))
        elif not isinstance(storage, str | int) or not QUANTITY.match(str(storage)):
            causes.append(
                cause("FieldValueInvalid", "spec.resources[storage]", f"Invalid value: {json.dumps(storage)}")
            )
        return causes
    if resource.plural == "configmaps":
        data = obj.get("data") or {}
        bad = [key for key, value in data.items() if not isinstance(value, str)]
        return [cause("FieldValueTypeInvalid", f"data.{key}", "Invalid value: must be a string") for key in bad]
    if resource.plural in ("rolebindings", "clusterrolebindings"):
        return binding_causes(obj, cluster=resource.plural == "clusterrolebindings")
    return []


# apimachinery's validation of object metadata: label keys and annotation keys are qualified names (an
# optional DNS-subdomain prefix and "/", then a name of at most 63 characters), label values at most 63
# characters of the same alphabet, and all annotations together at most 256 KiB.
QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
TOTAL_ANNOTATION_BYTES = 256 * 1024


def qualified_name_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not DNS_SUBDOMAIN.fullmatch(prefix)):
        return "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters"
    if not name or len(name) > 63:
        return "name part must be no more than 63 characters" if name else "name part must be non-empty"
    if not QUALIFIED_NAME.fullmatch(name):
        return "name part must consist of alphanumeric characters, '-', '_' or '.'"
    return None


def metadata_causes(metadata: Obj) -> list[Obj]:
    causes = []
    labels, annotations = metadata.get("labels") or {}, metadata.get("annotations") or {}
    for where, values in (("metadata.labels", labels), ("metadata.annotations", annotations)):
        for key in values:
            if (problem := qualified_name_problem(str(key))) is not None:
                causes.append(cause("FieldValueInvalid", where, f"Invalid value: {json.dumps(key)}: {problem}"))
    for value in labels.values():
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.fullmatch(value):
            problem = "a valid label must be an empty string or at most 63 alphanumeric characters, '-', '_' or '.'"
            causes.append(
                cause("FieldValueInvalid", "metadata.labels", f"Invalid value: {json.dumps(value)}: {problem}")
            )
    size = sum(len(str(key)) + len(str(value)) for key, value in annotations.items())
    if size > TOTAL_ANNOTATION_BYTES:
        causes.append(
            cause(
                "FieldValueTooLong",
                "metadata.annotations",
                f"Too long: must have at most {TOTAL_ANNOTATION_BYTES} bytes",
            )
        )
    return causes


def binding_causes(binding: Obj, *, cluster: bool) -> list[Obj]:
    """RBAC's validation of what a binding grants and to whom: a ClusterRoleBinding grants only a
    ClusterRole, and names each ServiceAccount's namespace (it has none of its own to default to)."""
    ref, causes = binding.get("roleRef") or {}, []
    kinds = ("ClusterRole",) if cluster else ("Role", "ClusterRole")
    if ref.get("kind") not in kinds:
        supported = ", ".join(f'"{kind}"' for kind in kinds)
        message = f"Unsupported value: {json.dumps(ref.get('kind'))}: supported values: {supported}"
        causes.append(cause("FieldValueNotSupported", "roleRef.kind", message))
    if not ref.get("name"):
        causes.append(cause("FieldValueRequired", "roleRef.name", "Required value"))
    for i, subject in enumerate(binding.get("subjects") or []):
        kind = subject.get("kind")
        if kind not in SUBJECT_KINDS:
            message = f'Unsupported value: {json.dumps(kind)}: supported values: "ServiceAccount", "User", "Group"'
            causes.append(cause("FieldValueNotSupported", f"subjects[{i}].kind", message))
        elif kind == "ServiceAccount" and cluster and not subject.get("namespace"):
            causes.append(cause("FieldValueRequired", f"subjects[{i}].namespace", "Required value"))
    return causes


# -- patches -------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def apply_json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 add / remove / replace / test (what kustomize's CRD patch and clients use)."""
    if not isinstance(operations, list):
        raise KubeError(400, "BadRequest", "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(target)
    for op in operations:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node = doc
        try:
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            if op["op"] == "test":
                current = node[int(last)] if isinstance(node, list) else node[last]
                if current != op["value"]:
                    raise KubeError(
                        422,
                        "Invalid",
                        f"the server rejected our request: testing value {op['path']} failed",
                    )
            elif op["op"] == "remove":
                del node[int(last) if isinstance(node, list) else last]
            elif op["op"] in ("add", "replace"):
                if isinstance(node, list):
                    index = len(node) if last == "-" else int(last)
                    node.insert(index, op["value"]) if op["op"] == "add" else node.__setitem__(index, op["value"])
                else:
                    if op["op"] == "replace" and last not in node:
                        raise KeyError(last)
                    node[last] = op["value"]
            else:
                raise KubeError(422, "Invalid", f"unsupported JSON patch operation {op['op']!r}")
        except (KeyError, IndexError, ValueError, TypeError):
            raise KubeError(
                422, "Invalid", f"the server rejected our request: JSON patch path {op['path']} does not exist"
            ) from None
    return doc


# -- selectors -----------------------------------------------------------------------------------

_REQUIREMENT = re.compile(r"^\s*(!?)([\w./-]+)\s*(?:(==|=|!=)\s*([\w.-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$")


def label_matcher(selector: str) -> Any:
    """A predicate over labels for `a=b,c!=d,e in (f,g),h notin (i),j,!k`."""
    requirements = []
    for part in re.split(r",(?![^(]*\))", selector) if selector.strip() else []:
        match = _REQUIREMENT.match(part)
        if match is None:
            raise KubeError(400, "BadRequest", f"unable to parse requirement: {part!r}")
        negate, key, op, value, set_op, values = match.groups()
        requirements.append((negate, key, op or set_op, value, {v.strip() for v in (values or "").split(",")}))

    def matches(labels: dict[str, str]) -> bool:
        for negate, key, op, value, values in requirements:
            present = key in labels
            ok = {
                None: present != bool(negate),
                "=": labels.get(key) == value,
                "==": labels.get(key) == value,
                "!=": labels.get(key) != value,
                "in": present and labels[key] in values,
                "notin": not present or labels[key] not in values,
            }[op]
            if not ok:
                return False
        return True

    return matches


def selector_matcher(selector: Obj) -> Any:
    """A predicate over labels for a LabelSelector object (`matchLabels`, `matchExpressions`), as
    `metav1.LabelSelectorAsSelector` reads it: the empty selector matches everything."""
    wanted = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []

    def matches(labels: dict[str, str]) -> bool:
        if any(labels.get(key) != value for key, value in wanted.items()):
            return False
        for expression in expressions:
            key, values = expression.get("key"), set(expression.get("values") or [])
            present = key in labels
            ok = {
                "In": present and labels.get(key) in values,
                "NotIn": not present or labels.get(key) not in values,
                "Exists": present,
                "DoesNotExist": not present,
            }.get(expression.get("operator"), False)  # an unknown operator is an error: nothing matches
            if not ok:
                return False
        return True

    return matches


def field_matcher(resource: Resource, selector: str) -> Any:
    """A predicate over objects for `metadata.name=x,involvedObject.kind=Notebook,type!=Normal`."""
    requirements = []
    for part in selector.split(",") if selector.strip() else []:
        match = re.match(r"^([\w.]+)(==|=|!=)(.*)$", part.strip())
        if match is None:
            raise KubeError(400, "BadRequest", f"invalid field selector: {part!r}")
        path, op, value = match.groups()
        allowed = {"metadata.name", "metadata.namespace"} | (EVENT_FIELDS if resource.plural == "events" else set())
        if path not in allowed:
            raise KubeError(400, "BadRequest", f"field label not supported: {path}")
        requirements.append((path, op, value))

    def lookup(obj: Obj, path: str) -> str:
        node: Any = obj
        for part in ("source.component" if path == "source" else path).split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return "" if node is None else str(node)

    return lambda obj: all((lookup(obj, p) == v) == (op != "!=") for p, op, v in requirements)


# -- the server ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    revision: int
    plural: str
    type: Literal["ADDED", "MODIFIED", "DELETED"]
    obj: Obj
    old: Obj | None


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    authorization: str | None
    warnings: tuple[str, ...] = ()


@dataclass
class InjectedFailure:
    method: str
    plural: str
    error: KubeError
    dry_run: bool  # whether dry-run requests fail too (a webhook with side effects does not see them)


@dataclass(eq=False)
class Watcher:
    queue: asyncio.Queue[Change | None] = field(default_factory=asyncio.Queue)


class FakeKubeAPI:
    """The fake API server. `await start()`, use `url` (or `write_kubeconfig()`), `await stop()`."""

    def __init__(self, *, token: str | None = "test-token", bookmark_interval_s: float = 60.0) -> None:
        self.token = token  # requests must carry `Authorization: Bearer <token>` when set
        # Other bearer tokens -> (user, groups): their requests are authorized by RBAC and admitted by
        # the ValidatingAdmissionPolicies, as a real server does; `token`'s are not (a cluster admin).
        self.identities: dict[str, tuple[str, list[str]]] = {}
        self.bookmark_interval_s = bookmark_interval_s
        self.requests: list[RecordedRequest] = []
        self.committed_at: dict[int, float] = {}  # revision -> time.perf_counter() of its change
        self.port = 0
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {plural: {} for plural in RESOURCES}
        self._revision = 1
        self._history: list[Change] = []
        self._compacted = 1  # a watch may resume from any revision >= this
        self._watchers: set[Watcher] = set()
        self._failures: list[InjectedFailure] = []
        self._runner: web.AppRunner | None = None
        self._mode: Literal["up", "503", "refuse"] = "up"
        # Set to leave deleted namespaces Terminating (content and all) until `collect_namespaces()`.
        self.hold_namespaces = False
        self._aggregating = False  # the ClusterRole aggregation controller is at work (no re-entry)
        self.logs: dict[tuple[str, str, str], str] = {}  # (namespace, pod, container): its log (`set_log`)

    # -- lifecycle and test hooks -----------------------------------------------------------------

    def set_log(self, namespace: str, pod: str, container: str, text: str) -> None:
        """What `GET .../pods/<pod>/log?container=<container>` answers (the pod must exist too)."""
        self.logs[namespace, pod, container] = text

    async def start(self) -> None:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = int(self._runner.addresses[0][1])  # the same port again after a come_back()
        self._mode = "up"

    async def stop(self) -> None:
        self._end_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def go_down(self, mode: Literal["refuse", "503"] = "refuse") -> None:
        """End every watch; then refuse connections, or answer every request 503."""
        if mode == "refuse":
            await self.stop()
        else:
            self._end_watches()
        self._mode = mode

    async def come_back(self) -> None:
        if self._mode == "refuse":
            await self.start()
        self._mode = "up"

    def compact(self) -> None:
        """Forget the change history, as etcd compaction does: older resourceVersions get 410 Gone."""
        self._history.clear()
        self._compacted = self._revision

    def fail_next(
        self,
        method: str,
        plural: str,
        code: int = 500,
        reason: str = "InternalError",
        message: str = "injected failure",
        *,
        dry_run: bool = False,
    ) -> None:
        """Make the next `method` on `plural` fail (e.g. an admission webhook refusing a create)."""
        self._failures.append(InjectedFailure(method, plural, KubeError(code, reason, message), dry_run))

    def add_identity(self, user: str, groups: list[str]) -> str:
        """A bearer token that authenticates as `user` with `groups`; its requests are authorized and admitted."""
        token = f"identity-{uuid.uuid4().hex}"
        self.identities[token] = (user, list(groups))
        return token

    def write_kubeconfig(self, path: Path, *, context: str = "fake", token: str | None = None) -> Path:
        """A kubeconfig for this server, with the admin token or (`token`) one of `add_identity()`."""
        token = token or self.token
        user: Obj = {"token": token} if token else {}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": user}],
            "contexts": [{"name": context, "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": context,
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # -- direct access for tests (the same checks as over HTTP) --------------------------------------

    def create(self, plural: str, obj: Obj, namespace: str = "") -> Obj:
        resource = RESOURCES[plural]
        return self._create(resource, resource.versions[0], namespace, copy.deepcopy(obj), dry_run=False)[0]

    def add_namespace(self, name: str) -> Obj:
        return self.create("namespaces", {"metadata": {"name": name}})

    def patch(self, plural: str, namespace: str, name: str, patch: Obj, *, status: bool = False) -> Obj:
        """A merge patch, of the object or (`status`) of its status subresource, as a client would send."""
        resource, current = RESOURCES[plural], self._objects[plural].get((namespace, name))
        if current is None:
            raise not_found(resource, name)
        patched = merge_patch(current, patch)
        sub = "status" if status else None
        return self._update(resource, resource.versions[0], current, patched, sub, False, [], patch=True)

    def replace_status(self, plural: str, namespace: str, name: str, status: Obj) -> Obj:
        """Replace the status subresource whole (a PUT to .../status)."""
        resource, current = RESOURCES[plural], self._objects[plural].get((namespace, name))
        if current is None:
            raise not_found(resource, name)
        body = {**copy.deepcopy(current), "status": status}
        return self._update(resource, resource.versions[0], current, body, "status", False, [])

    def delete(self, plural: str, namespace: str, name: str) -> None:
        resource, current = RESOURCES[plural], self._objects[plural].get((namespace, name))
        if current is None:
            raise not_found(resource, name)
        self._delete(resource, resource.versions[0], current, {}, dry_run=False)

    def collect_namespaces(self) -> None:
        """Run the namespace controller over every Terminating namespace (for a test that set
        `hold_namespaces`): what is in it is deleted, and each namespace left empty goes."""
        for (_, name), namespace in sorted(self._objects["namespaces"].items()):
            if namespace["metadata"].get("deletionTimestamp"):
                self._collect_namespace(name)

    def get(self, plural: str, namespace: str, name: str) -> Obj | None:
        obj = self._objects[plural].get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def objects(self, plural: str, namespace: str | None = None) -> list[Obj]:
        items = self._objects[plural].items()
        return [copy.deepcopy(obj) for (ns, _), obj in sorted(items) if namespace is None or ns == namespace]

    @property
    def revision(self) -> int:
        return self._revision

    def review_access(self, review: Obj) -> Obj:
        """A SubjectAccessReview, decided as the RBAC authorizer decides: the ClusterRoleBindings first
        (they grant in every namespace, and cluster-wide), then the RoleBindings of the namespace asked
        about. It is a review of exactly the user and groups it names: the API server adds no groups to
        a SubjectAccessReview (`service_account_identity()` gives those a service account's token has)."""
        spec = (review or {}).get("spec") or {}
        _check_review(spec)
        user, groups = spec.get("user") or "", list(spec.get("groups") or [])
        attrs = spec.get("resourceAttributes")
        if attrs is not None:
            namespace = attrs.get("namespace") or ""
            allows = functools.partial(_rule_allows, attrs)
        else:
            namespace, allows = "", functools.partial(_non_resource_rule_allows, spec["nonResourceAttributes"])
        bindings = [("ClusterRoleBinding", binding, "") for binding in self.objects("clusterrolebindings")]
        if namespace:
            bindings += [("RoleBinding", binding, namespace) for binding in self.objects("rolebindings", namespace)]
        reason = None
        for kind, binding, where in bindings:
            subject = next((s for s in binding.get("subjects") or [] if _applies_to(s, where, user, groups)), None)
            if subject is not None and any(allows(rule) for rule in self._role_rules(binding, where)):
                reason = f"RBAC: allowed by {_describe(kind, binding, subject, where)}"
                break
        status: Obj = {"allowed": reason is not None}
        if reason is not None:
            status["reason"] = reason
        return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec, "status": status}

    def _role_rules(self, binding: Obj, namespace: str) -> list[Obj]:
        """What a binding's roleRef grants: a Role of the binding's namespace, or a ClusterRole (an
        aggregated one holds the rules the aggregation controller wrote into it)."""
        ref = binding.get("roleRef") or {}
        role = None
        if ref.get("kind") == "Role" and namespace:
            role = self._objects["roles"].get((namespace, ref.get("name", "")))
        elif ref.get("kind") == "ClusterRole":
            role = self._objects["clusterroles"].get(("", ref.get("name", "")))
        return list((role or {}).get("rules") or [])

    # -- HTTP ------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        record = RecordedRequest(
            request.method, request.path, query, request.content_type, request.headers.get("Authorization")
        )
        self.requests.append(record)
        try:
            if self._mode == "503":
                raise KubeError(503, "ServiceUnavailable", "the API server is shutting down")
            who = self.identities.get(request.headers.get("Authorization", "").removeprefix("Bearer "))
            if (
                who is None
                and self.token is not None
                and request.headers.get("Authorization") != f"Bearer {self.token}"
            ):
                raise KubeError(401, "Unauthorized", "Unauthorized")
            if request.method == "POST" and request.path == SUBJECT_ACCESS_REVIEWS:
                if who is not None:
                    self._authorize(who, "create", SUBJECT_ACCESS_REVIEW, "", "", None)
                return web.json_response(self.review_access(await self._json_body(request)), status=201)
            resource, version, namespace, name, sub = self._parse_path(request.path)
            if who is not None:
                verb = _verb(request.method, name, query)
                self._authorize(who, verb, resource, namespace, name or "", sub)
            if request.method == "GET" and name is None and query.get("watch", "").lower() in ("1", "true"):
                return await self._watch(request, resource, version, namespace, query)
            if sub == "log":
                return self._pod_log(request.method, namespace, name or "", query)
            self._maybe_fail(request.method, resource, query)
            warnings: list[str] = []
            status, body = await self._dispatch(request, resource, version, namespace, name, sub, query, warnings, who)
            headers = {"Warning": ", ".join(f'299 - "unknown field \\"{w}\\""' for w in warnings)} if warnings else {}
            if warnings:
                self.requests[-1] = dataclasses.replace(record, warnings=tuple(warnings))
            return web.json_response(body, status=status, headers=headers)
        except KubeError as exc:
            return web.json_response(exc.body(), status=exc.code)

    def _parse_path(self, path: str) -> tuple[Resource, str, str, str | None, str | None]:
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise KubeError(404, "NotFound", "the server could not find the requested resource")
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        resource = RESOURCES.get(rest[0]) if rest else None
        if resource is None or resource.group != group or version not in resource.versions or len(rest) > 3:
            raise KubeError(404, "NotFound", "the server could not find the requested resource")
        if bool(namespace) != resource.namespaced and (namespace or len(rest) > 1):
            raise KubeError(404, "NotFound", "the server could not find the requested resource")
        sub = rest[2] if len(rest) == 3 else None
        if sub == "log" and resource.plural == "pods" and len(rest) == 3:
            return resource, version, namespace, rest[1], sub  # GET pods/<name>/log: text, not an object
        if sub is not None and (sub != "status" or resource.crd is None):
            raise KubeError(404, "NotFound", "the server could not find the requested resource")
        return resource, version, namespace, rest[1] if len(rest) > 1 else None, sub

    def _pod_log(self, method: str, namespace: str, name: str, query: dict[str, str]) -> web.Response:
        """The log subresource as the API server serves it: text/plain; the pod must exist, the container be
        one of its own (named whenever it has several), `tailLines` the last lines, `limitBytes` a cap."""
        if method != "GET":
            raise KubeError(405, "MethodNotAllowed", "the server does not allow this method on pods/log")
        pod = self._objects["pods"].get((namespace, name))
        if pod is None:
            raise not_found(RESOURCES["pods"], name)
        containers = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
        container = query.get("container") or (containers[0] if len(containers) == 1 else "")
        if not container:
            raise KubeError(
                400, "BadRequest", f"a container name must be specified for pod {name}, choose one of: {containers}"
            )
        if container not in containers:
            raise KubeError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        text = self.logs.get((namespace, name, container), "")
        if "tailLines" in query:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(query["tailLines"]) :] if int(query["tailLines"]) else [])
        body = text.encode()
        if "limitBytes" in query:
            body = body[: int(query["limitBytes"])]
        return web.Response(body=body, content_type="text/plain")

    def _maybe_fail(self, method: str, resource: Resource, query: dict[str, str]) -> None:
        dry_run = query.get("dryRun") == "All"
        for failure in self._failures:
            if failure.method == method and failure.plural == resource.plural and (failure.dry_run or not dry_run):
                self._failures.remove(failure)
                raise failure.error

    async def _dispatch(
        self,
        request: web.Request,
        resource: Resource,
        version: str,
        namespace: str,
        name: str | None,
        sub: str | None,
        query: dict[str, str],
        warnings: list[str],
        who: tuple[str, list[str]] | None = None,
    ) -> tuple[int, Obj]:
        method, dry_run = request.method, query.get("dryRun") == "All"
        if resource.namespaced and not namespace and method != "GET":
            raise KubeError(404, "NotFound", "the server could not find the requested resource")
        if method == "GET" and name is None:
            return 200, self._list(resource, version, namespace, query)
        if method == "POST" and name is None:
            body = await self._json_body(request)
            if who is not None and isinstance(body, dict):
                self._admit_write(who, "CREATE", resource, version, namespace, body, None)
            obj, dropped = self._create(resource, version, namespace, body, dry_run=dry_run, strict=_strict(query))
            warnings.extend(dropped)
            return 201, obj
        if name is None:
            raise KubeError(405, "MethodNotAllowed", f"the server does not allow this method on {resource.plural}")
        current = self._objects[resource.plural].get((namespace, name))
        if current is None:
            raise not_found(resource, name)
        if method == "GET":
            return 200, self._render(resource, version, current)
        if method == "PUT":
            body = await self._json_body(request)
            if who is not None and isinstance(body, dict):
                self._admit_write(who, "UPDATE", resource, version, namespace, body, current)
            return 200, self._update(resource, version, current, body, sub, dry_run, warnings, strict=_strict(query))
        if method == "PATCH":
            body = await self._json_body(request)
            # Patch the object as this version shows it, so its apiVersion matches the URL's.
            patched = self._patch(resource, self._render(resource, version, current), body, request.content_type)
            if who is not None and isinstance(patched, dict):
                self._admit_write(who, "UPDATE", resource, version, namespace, patched, current)
            return 200, self._update(resource, version, current, patched, sub, dry_run, warnings, patch=True)
        if method == "DELETE":
            options = await self._json_body(request) if request.can_read_body else {}
            if who is not None:
                self._admit_write(who, "DELETE", resource, version, namespace, None, current)
            return 200, self._delete(resource, version, current, options, dry_run)
        raise KubeError(405, "MethodNotAllowed", f"the server does not allow this method on {resource.plural}")

    def _authorize(
        self, who: tuple[str, list[str]], verb: str, resource: Resource, namespace: str, name: str, sub: str | None
    ) -> None:
        """403 unless RBAC allows `who` the request, worded as the API server words it."""
        attributes = {"verb": verb, "group": resource.group, "resource": resource.plural, "namespace": namespace}
        attributes |= {"name": name, "subresource": sub or ""}
        decision = self.review_access({"spec": {"user": who[0], "groups": who[1], "resourceAttributes": attributes}})
        if decision["status"]["allowed"]:
            return
        scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        what = f'{resource.qualified} "{name}"' if name else resource.qualified
        message = (
            f'{what} is forbidden: User "{who[0]}" cannot {verb} resource "{resource.plural}" '
            f'in API group "{resource.group}" {scope}'
        )
        raise KubeError(403, "Forbidden", message, {"name": name, "group": resource.group, "kind": resource.plural})

    def _admit_write(
        self,
        who: tuple[str, list[str]],
        operation: str,
        resource: Resource,
        version: str,
        namespace: str,
        obj: Obj | None,
        old: Obj | None,
    ) -> None:
        """What the API server checks of a write beyond the verb: RBAC's escalation check on a binding's
        roleRef (`bind` on the role; holding all of its permissions instead is not modelled), then the
        ValidatingAdmissionPolicies."""
        name = ((obj or old or {}).get("metadata") or {}).get("name") or ""
        if resource.plural in ("rolebindings", "clusterrolebindings") and obj is not None:
            ref = obj.get("roleRef") or {}
            role = RESOURCES["clusterroles" if ref.get("kind") == "ClusterRole" else "roles"]
            self._authorize(
                who, "bind", role, "" if role.plural == "clusterroles" else namespace, ref.get("name", ""), None
            )
        namespace_object = self._objects["namespaces"].get(("", namespace)) if namespace else None
        request = AdmissionRequest(
            operation,
            who[0],
            tuple(who[1]),
            resource.group,
            version,
            resource.plural,
            resource.kind,
            namespace,
            name,
            copy.deepcopy(obj),
            copy.deepcopy(old),
            copy.deepcopy(namespace_object),
        )
        denial = review(
            self.objects("validatingadmissionpolicies"), self.objects("validatingadmissionpolicybindings"), request
        )
        if denial is not None:
            raise KubeError(denial.code, denial.reason, denial.message)

    async def _json_body(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.read() or b"null")
        except ValueError:
            raise KubeError(400, "BadRequest", "the body of the request is not JSON") from None

    # -- verbs -----------------------------------------------------------------------------------

    def _list(self, resource: Resource, version: str, namespace: str, query: dict[str, str]) -> Obj:
        matches = self._selector(resource, query)
        items = [
            self._render(resource, version, obj, in_list=True)
            for (ns, _), obj in sorted(self._objects[resource.plural].items())
            if (not namespace or ns == namespace) and matches(obj)
        ]
        return {
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version(version),
            "metadata": {"resourceVersion": str(self._revision)},
            "items": items,
        }

    def _create(
        self, resource: Resource, version: str, namespace: str, body: Any, *, dry_run: bool, strict: bool = False
    ) -> tuple[Obj, list[str]]:
        if not isinstance(body, dict):
            raise KubeError(400, "BadRequest", "the body of the request must be a JSON object")
        self._check_kind(resource, version, body)
        metadata = body.setdefault("metadata", {})
        if not resource.namespaced:
            metadata.pop("namespace", None)  # the API server clears it on a cluster-scoped object
        if metadata.get("namespace", namespace) != namespace:
            raise KubeError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + uuid.uuid4().hex[:5]
        name = metadata.get("name") or ""
        if not name:
            raise invalid(
                resource,
                "",
                [cause("FieldValueRequired", "metadata.name", "Required value: name or generateName is required")],
            )
        if namespace and ("", namespace) not in self._objects["namespaces"]:
            raise not_found(RESOURCES["namespaces"], namespace)
        if namespace and self._objects["namespaces"]["", namespace]["metadata"].get("deletionTimestamp"):
            raise terminating(resource, name, namespace)  # the NamespaceLifecycle admission plugin
        if resource.crd is not None:
            body.pop("status", None)  # the status subresource owns it
        obj, dropped = self._admit(resource, version, body, name, strict)
        if resource.plural == "pods":
            obj = self._admit_pod(obj, namespace)
        if (namespace, name) in self._objects[resource.plural]:
            details = {"name": name, "group": resource.group, "kind": resource.plural}
            raise KubeError(409, "AlreadyExists", f'{resource.qualified} "{name}" already exists', details)
        meta = obj["metadata"]
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        if namespace:
            meta["namespace"] = namespace
        if resource.plural == "namespaces":
            obj["status"] = {"phase": "Active"}
            # The server adds the namespace controller's finalizer to every namespace it creates.
            finalizers = list((obj.get("spec") or {}).get("finalizers") or [])
            if NAMESPACE_FINALIZER not in finalizers:
                finalizers.append(NAMESPACE_FINALIZER)
            obj["spec"] = {**(obj.get("spec") or {}), "finalizers": finalizers}
        if dry_run:
            return self._render(resource, version, obj), dropped
        self._commit(resource, "ADDED", obj, None)
        return self._render(resource, version, obj), dropped

    def _update(
        self,
        resource: Resource,
        version: str,
        current: Obj,
        body: Any,
        sub: str | None,
        dry_run: bool,
        warnings: list[str],
        *,
        patch: bool = False,
        strict: bool = False,
    ) -> Obj:
        if not isinstance(body, dict):
            raise KubeError(400, "BadRequest", "the body of the request must be a JSON object")
        name = current["metadata"]["name"]
        self._check_kind(resource, version, body)
        metadata = body.setdefault("metadata", {})
        if metadata.get("name", name) != name:
            raise KubeError(400, "BadRequest", "the name of the object does not match the name on the URL")
        sent_version = metadata.get("resourceVersion")
        if sent_version is None and not patch and resource.crd is not None:
            raise invalid(
                resource,
                name,
                [
                    cause(
                        "FieldValueInvalid",
                        "metadata.resourceVersion",
                        "Invalid value: 0x0: must be specified for an update",
                    )
                ],
            )
        if sent_version is not None and sent_version != current["metadata"]["resourceVersion"]:
            message = (
                f'Operation cannot be fulfilled on {resource.qualified} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again"
            )
            raise KubeError(409, "Conflict", message, {"name": name, "group": resource.group, "kind": resource.plural})
        if sub == "status":
            body = {**copy.deepcopy(current), "status": body.get("status")}
        elif resource.crd is not None:
            body = {**body, "status": copy.deepcopy(current.get("status"))}
            if body["status"] is None:
                del body["status"]
        obj, dropped = self._admit(resource, version, body, name, strict)
        warnings.extend(dropped)
        if resource.plural in ("rolebindings", "clusterrolebindings") and obj.get("roleRef") != current.get("roleRef"):
            # RBAC's ValidateRoleBindingUpdate: a binding's role is fixed for its life (delete and recreate).
            raise invalid(
                resource, name, [cause("FieldValueInvalid", "roleRef", "Invalid value: cannot change roleRef")]
            )
        meta = obj["metadata"]
        for key in ("uid", "creationTimestamp", "namespace", "deletionTimestamp", "generation"):
            if key in current["metadata"]:
                meta[key] = current["metadata"][key]
        if resource.plural == "namespaces":  # an update changes neither (only .../status and .../finalize do)
            obj["status"] = copy.deepcopy(current.get("status"))
            obj["spec"] = {**(obj.get("spec") or {}), "finalizers": list(_spec_finalizers(current))}
        if obj.get("spec") != current.get("spec"):
            meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
        if dry_run:
            return self._render(resource, version, obj)
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and not _spec_finalizers(obj):
            self._commit(resource, "DELETED", obj, current)  # the last finalizer is gone
            if meta.get("namespace") and not self.hold_namespaces:
                self._finish_namespace(meta["namespace"])  # a Terminating namespace may have waited for it
        else:
            self._commit(resource, "MODIFIED", obj, current)
        return self._render(resource, version, obj)

    def _patch(self, resource: Resource, current: Obj, patch: Any, content_type: str) -> Any:
        if content_type == MERGE_PATCH:
            if not isinstance(patch, dict):
                raise KubeError(400, "BadRequest", "a merge patch must be a JSON object")
            return merge_patch(current, patch)
        if content_type == JSON_PATCH:
            return apply_json_patch(current, patch)
        if content_type == STRATEGIC_PATCH and resource.crd is None:
            # Merge semantics, which is what a strategic merge patch does to maps such as annotations;
            # lists are replaced whole here (the real server merges some by key).
            if not isinstance(patch, dict):
                raise KubeError(400, "BadRequest", "a strategic merge patch must be a JSON object")
            return merge_patch(current, patch)
        accepted = "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
        if resource.crd is None:
            accepted += ", application/strategic-merge-patch+json"
        raise KubeError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types include: {accepted}",
        )

    def _delete(self, resource: Resource, version: str, current: Obj, options: Any, dry_run: bool) -> Obj:
        meta = current["metadata"]
        preconditions = (options or {}).get("preconditions") or {}
        for key in ("uid", "resourceVersion"):
            if key in preconditions and preconditions[key] != meta.get(key):
                message = f'Operation cannot be fulfilled on {resource.qualified} "{meta["name"]}": precondition failed'
                raise KubeError(409, "Conflict", message)
        details = {"name": meta["name"], "group": resource.group, "kind": resource.plural, "uid": meta["uid"]}
        if dry_run:
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
        if resource.plural == "namespaces":
            return self._delete_namespace(version, current)
        if meta.get("finalizers"):
            if not meta.get("deletionTimestamp"):
                obj = copy.deepcopy(current)
                obj["metadata"].update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0)
                self._commit(resource, "MODIFIED", obj, current)
            return self._render(resource, version, self._objects[resource.plural][_key(current)])
        self._commit(resource, "DELETED", copy.deepcopy(current), current)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    def _delete_namespace(self, version: str, current: Obj) -> Obj:
        """The API server's answer to deleting a namespace: it turns Terminating (deletionTimestamp,
        status.phase) and that is what the DELETE returns; a second DELETE meanwhile is 409. The
        namespace controller then empties it and takes its finalizer off: done here at once, unless
        `hold_namespaces` (then `collect_namespaces()` does it)."""
        resource, name = RESOURCES["namespaces"], current["metadata"]["name"]
        if current["metadata"].get("deletionTimestamp"):
            message = (
                f'Operation cannot be fulfilled on namespaces "{name}": The system is ensuring all content is '
                "removed from this namespace.  Upon completion, this namespace will automatically be purged by "
                "the system."
            )
            raise KubeError(409, "Conflict", message, {"name": name, "kind": "namespaces"})
        terminating = copy.deepcopy(current)
        terminating["metadata"].update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0)
        terminating["status"] = {**(terminating.get("status") or {}), "phase": "Terminating"}
        self._commit(resource, "MODIFIED", terminating, current)
        answer = self._render(resource, version, terminating)
        if not self.hold_namespaces:
            self._collect_namespace(name)
        return answer

    def _collect_namespace(self, name: str) -> None:
        """The namespace controller's pass over a Terminating namespace: every object in it is deleted
        (one DELETED event each to watchers; one with finalizers is only marked, and the namespace waits
        for it), then the namespace is finalized if nothing is left."""
        for resource in RESOURCES.values():
            if not resource.namespaced:
                continue
            for (namespace, _), obj in sorted(self._objects[resource.plural].items()):
                if namespace == name and not obj["metadata"].get("deletionTimestamp"):
                    self._delete(resource, resource.versions[0], obj, {}, dry_run=False)
        self._finish_namespace(name)

    def _finish_namespace(self, name: str) -> None:
        """Take the `kubernetes` finalizer off a Terminating namespace that holds nothing any more (the
        controller's PUT to .../finalize); with no finalizer left, that update deletes it."""
        current = self._objects["namespaces"].get(("", name))
        if current is None or not current["metadata"].get("deletionTimestamp"):
            return
        if any(key[0] == name for r in RESOURCES.values() if r.namespaced for key in self._objects[r.plural]):
            return  # an object's finalizers have yet to run
        finalized = copy.deepcopy(current)
        finalized["spec"] = {
            **(finalized.get("spec") or {}),
            "finalizers": [f for f in _spec_finalizers(current) if f != NAMESPACE_FINALIZER],
        }
        if finalized["spec"]["finalizers"] == list(_spec_finalizers(current)):
            return  # finalized already; another finalizer's owner finishes it
        done = not finalized["spec"]["finalizers"] and not finalized["metadata"].get("finalizers")
        self._commit(RESOURCES["namespaces"], "DELETED" if done else "MODIFIED", finalized, current)

    def _aggregate_cluster_roles(self) -> None:
        """The ClusterRole aggregation controller: a ClusterRole with an aggregationRule gets as its rules
        the union of the rules of the other ClusterRoles its selectors match (in name order, each rule
        once), written into `.rules`; repeated until nothing changes, so that one aggregating an
        aggregated ClusterRole gets that one's rules too."""
        self._aggregating = True
        try:
            roles = self._objects["clusterroles"]
            for _ in range(len(roles) + 1):
                changed = False
                for key, role in sorted(roles.items()):
                    aggregation = role.get("aggregationRule")
                    if not isinstance(aggregation, dict):
                        continue
                    rules: list[Obj] = []
                    for selector in aggregation.get("clusterRoleSelectors") or []:
                        matches = selector_matcher(selector or {})
                        for (_, other), source in sorted(roles.items()):
                            if other != key[1] and matches((source.get("metadata") or {}).get("labels") or {}):
                                rules += [r for r in source.get("rules") or [] if r not in rules]
                    if rules != (role.get("rules") or []):
                        self._commit(
                            RESOURCES["clusterroles"], "MODIFIED", {**copy.deepcopy(role), "rules": rules}, role
                        )
                        changed = True
                if not changed:
                    return
        finally:
            self._aggregating = False

    def _admit_pod(self, pod: Obj, namespace: str) -> Obj:
        """The built-in admission a new Pod goes through in its namespace (403 when refused)."""
        try:
            return admit_pod(
                pod,
                self._objects["namespaces"].get(("", namespace)),
                self.objects("limitranges", namespace),
                self.objects("resourcequotas", namespace),
                self.objects("pods", namespace),
            )
        except PodRefused as exc:
            raise KubeError(403, "Forbidden", str(exc)) from None

    def _check_kind(self, resource: Resource, version: str, body: Obj) -> None:
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if kind is not None and kind != resource.kind:
            raise KubeError(400, "BadRequest", f"the kind {kind!r} does not match the resource {resource.plural}")
        if api_version is not None and api_version != resource.api_version(version):
            raise KubeError(
                400,
                "BadRequest",
                f"the apiVersion {api_version!r} does not match the URL's {resource.api_version(version)!r}",
            )

    def _admit(self, resource: Resource, version: str, body: Obj, name: str, strict: bool) -> tuple[Obj, list[str]]:
        """Prune, default and validate, as the server does on every write; raise 422 for a bad object."""
        pattern = resource.name_pattern
        if len(name) > (63 if pattern is DNS_LABEL else 253) or not pattern.fullmatch(name):
            kind = "RFC 1123 label" if pattern is DNS_LABEL else "RFC 1123 subdomain"
            raise invalid(
                resource,
                name,
                [
                    cause(
                        "FieldValueInvalid",
                        "metadata.name",
                        f'Invalid value: "{name}": a lowercase {kind} must consist of lower case '
                        "alphanumeric characters, '-' or '.'",
                    )
                ],
            )
        if causes := metadata_causes(body.get("metadata") or {}):
            raise invalid(resource, name, causes)
        dropped: list[str] = []
        obj = copy.deepcopy(body)
        if resource.crd is not None:
            obj = prune(obj, crd_schemas()[resource.plural, version], "", dropped, root=True)
            if strict and dropped:
                raise KubeError(400, "BadRequest", f'strict decoding error: unknown field "{dropped[0]}"')
            causes = schema_causes(resource, version, obj)
        else:
            causes = core_causes(resource, obj)
        if causes:
            raise invalid(resource, name, causes)
        obj["apiVersion"], obj["kind"] = resource.api_version(resource.versions[0]), resource.kind
        return obj, dropped

    def _commit(
        self, resource: Resource, kind: Literal["ADDED", "MODIFIED", "DELETED"], obj: Obj, old: Obj | None
    ) -> None:
        self._revision += 1
        obj["metadata"]["resourceVersion"] = str(self._revision)
        if kind == "DELETED":
            del self._objects[resource.plural][_key(obj)]
        else:
            self._objects[resource.plural][_key(obj)] = obj
        change = Change(self._revision, resource.plural, kind, copy.deepcopy(obj), copy.deepcopy(old) if old else None)
        self._history.append(change)
        self.committed_at[self._revision] = time.perf_counter()
        for watcher in self._watchers:
            watcher.queue.put_nowait(change)
        if resource.plural == "clusterroles" and not self._aggregating:
            self._aggregate_cluster_roles()

    def _render(self, resource: Resource, version: str, obj: Obj, *, in_list: bool = False) -> Obj:
        """The object as a client of `version` sees it (no conversion webhook: only apiVersion differs)."""
        out = copy.deepcopy(obj)
        if in_list and not resource.group:
            out.pop("apiVersion", None)  # core list items carry no kind or apiVersion
            out.pop("kind", None)
        else:
            out["apiVersion"] = resource.api_version(version)
        return out

    def _selector(self, resource: Resource, query: dict[str, str]) -> Any:
        labels = label_matcher(query.get("labelSelector", ""))
        fields = field_matcher(resource, query.get("fieldSelector", ""))
        return lambda obj: labels((obj.get("metadata") or {}).get("labels") or {}) and fields(obj)

    # -- watch -----------------------------------------------------------------------------------

    async def _watch(
        self, request: web.Request, resource: Resource, version: str, namespace: str, query: dict[str, str]
    ) -> web.StreamResponse:
        matches = self._selector(resource, query)

        def in_scope(obj: Obj | None) -> bool:
            return obj is not None and (not namespace or obj["metadata"].get("namespace") == namespace) and matches(obj)

        since = query.get("resourceVersion", "")
        timeout_s = float(query.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT_S)
        bookmarks = query.get("allowWatchBookmarks", "").lower() in ("1", "true")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        backlog: list[tuple[str, Obj]] = []
        if since in ("", "0"):  # "from now": the current objects as synthetic ADDED events first
            backlog = [("ADDED", obj) for obj in self._objects[resource.plural].values() if in_scope(obj)]
        else:
            try:
                start = int(since)
            except ValueError:
                raise KubeError(400, "BadRequest", f"invalid resource version: {since!r}") from None
            if start < self._compacted:
                await response.prepare(request)
                status = KubeError(410, "Expired", f"too old resource version: {start} ({self._compacted})").body()
                await response.write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
                return response
            backlog = [
                e
                for c in self._history
                if c.revision > start and c.plural == resource.plural
                for e in _events(c, in_scope)
            ]
        watcher = Watcher()
        self._watchers.add(watcher)  # in the same step as the backlog snapshot: no change falls between
        try:
            await response.prepare(request)
            for kind, obj in backlog:
                await self._send(response, kind, self._render(resource, version, obj))
            deadline = asyncio.get_running_loop().time() + timeout_s
            while (remaining := deadline - asyncio.get_running_loop().time()) > 0:
                try:
                    change = await asyncio.wait_for(watcher.queue.get(), min(remaining, self.bookmark_interval_s))
                except TimeoutError:
                    if bookmarks and deadline > asyncio.get_running_loop().time():
                        mark = {
                            "kind": resource.kind,
                            "apiVersion": resource.api_version(version),
                            "metadata": {"resourceVersion": str(self._revision)},
                        }
                        await self._send(response, "BOOKMARK", mark)
                    continue
                if change is None:
                    break  # the server is going down
                if change.plural == resource.plural:
                    for kind, obj in _events(change, in_scope):
                        await self._send(response, kind, self._render(resource, version, obj))
        except ConnectionResetError:
            pass  # the client went away
        finally:
            self._watchers.discard(watcher)
        return response

    async def _send(self, response: web.StreamResponse, kind: str, obj: Obj) -> None:
        await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

    def _end_watches(self) -> None:
        for watcher in self._watchers:
            watcher.queue.put_nowait(None)


def _events(change: Change, in_scope: Any) -> Iterator[tuple[str, Obj]]:
    """What a change looks like to a watch with selectors: an object that starts matching is ADDED,
    one that stops matching is DELETED."""
    now, before = in_scope(change.obj) if change.type != "DELETED" else False, in_scope(change.old)
    if change.type == "DELETED":
        if before:
            yield "DELETED", change.obj
    elif now and before:
        yield "MODIFIED", change.obj
    elif now:
        yield "ADDED", change.obj
    elif before:
        yield "DELETED", change.obj


def service_account_identity(namespace: str, name: str) -> tuple[str, list[str]]:
    """The user and groups a ServiceAccount's token authenticates as (what a SubjectAccessReview about a
    request made with that token carries): its username, the groups of every service account and of
    those in its namespace, and system:authenticated."""
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"]
    return f"system:serviceaccount:{namespace}:{name}", groups


def _check_review(spec: Obj) -> None:
    """The API server's validation of a SubjectAccessReview's spec (422 when it fails)."""
    causes = []
    has_resource = spec.get("resourceAttributes") is not None
    has_non_resource = spec.get("nonResourceAttributes") is not None
    if has_resource and has_non_resource:
        message = "Invalid value: cannot be specified in combination with resourceAttributes"
        causes.append(cause("FieldValueInvalid", "spec.nonResourceAttributes", message))
    if not has_resource and not has_non_resource:
        message = "Invalid value: exactly one of nonResourceAttributes or resourceAttributes must be specified"
        causes.append(cause("FieldValueInvalid", "spec.resourceAttributes", message))
    if not spec.get("user") and not spec.get("groups"):
        message = 'Invalid value: "": at least one of user or group must be specified'
        causes.append(cause("FieldValueInvalid", "spec.user", message))
    if causes:
        raise invalid(SUBJECT_ACCESS_REVIEW, "", causes)


def _applies_to(subject: Obj, namespace: str, user: str, groups: list[str]) -> bool:
    """RBAC's appliesToUser: a ServiceAccount subject without a namespace is one of the binding's own
    namespace (`namespace`, empty for a ClusterRoleBinding, where it then matches nobody)."""
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return user == name
    if kind == "Group":
        return name in groups
    if kind == "ServiceAccount":
        account_namespace = subject.get("namespace") or namespace
        return bool(account_namespace) and user == f"system:serviceaccount:{account_namespace}:{name}"
    return False


def _describe(kind: str, binding: Obj, subject: Obj, namespace: str) -> str:
    """How the RBAC authorizer names what allowed a request, in its `reason`."""
    name = binding["metadata"]["name"] + (f"/{namespace}" if namespace else "")
    ref = binding.get("roleRef") or {}
    who = subject.get("name", "")
    if subject.get("kind") == "ServiceAccount":
        who += "/" + (subject.get("namespace") or namespace)
    return f'{kind} "{name}" of {ref.get("kind")} "{ref.get("name")}" to {subject.get("kind")} "{who}"'


def _matches(rule: Obj, key: str, value: str) -> bool:
    return any(item in ("*", value) for item in rule.get(key) or [])


def _rule_allows(attrs: Obj, rule: Obj) -> bool:
    """RBAC's RuleAllows for a resource request: verb, API group, resource (`pods/log`, or `*/log` for
    any resource's log) and resourceNames, which only a request naming its object can match (so never
    a create, list or watch)."""
    sub = attrs.get("subresource") or ""
    resource = (attrs.get("resource") or "") + (f"/{sub}" if sub else "")
    names = rule.get("resourceNames") or []
    return (
        _matches(rule, "verbs", attrs.get("verb") or "")
        and _matches(rule, "apiGroups", attrs.get("group") or "")
        and any(item in ("*", resource) or (sub and item == f"*/{sub}") for item in rule.get("resources") or [])
        and (not names or (attrs.get("name") or "") in names)
    )


def _non_resource_rule_allows(attrs: Obj, rule: Obj) -> bool:
    """RBAC's RuleAllows for a non-resource URL: the verb, and the path exactly or under a `prefix*`."""
    path = attrs.get("path") or ""
    return _matches(rule, "verbs", attrs.get("verb") or "") and any(
        url in ("*", path) or (url.endswith("*") and path.startswith(url.rstrip("*")))
        for url in rule.get("nonResourceURLs") or []
    )


def terminating(resource: Resource, name: str, namespace: str) -> KubeError:
    """403: a create in a namespace that is being deleted, worded as the NamespaceLifecycle plugin does."""
    message = (
        f'{resource.qualified} "{name}" is forbidden: unable to create new content in namespace {namespace} '
        "because it is being terminated"
    )
    why = cause("NamespaceTerminating", "metadata.namespace", f"namespace {namespace} is being terminated")
    return KubeError(
        403, "Forbidden", message, {"name": name, "group": resource.group, "kind": resource.plural, "causes": [why]}
    )


def _spec_finalizers(obj: Obj) -> list[str]:
    """A namespace's `spec.finalizers` (other kinds have none)."""
    spec = obj.get("spec")
    finalizers = spec.get("finalizers") if isinstance(spec, dict) else None
    return list(finalizers) if isinstance(finalizers, list) and obj.get("kind") == "Namespace" else []


def _verb(method: str, name: str | None, query: dict[str, str]) -> str:
    """The RBAC verb of a request."""
    if method == "GET":
        if name is not None:
            return "get"
        return "watch" if query.get("watch", "").lower() in ("1", "true") else "list"
    if method == "DELETE" and name is None:
        return "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, method.lower())


def _key(obj: Obj) -> tuple[str, str]:
    return obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _strict(query: dict[str, str]) -> bool:
    return query.get("fieldValidation") == "Strict"


@pytest.fixture
async def kube_api() -> AsyncIterator[FakeKubeAPI]:
    """A fake API server with namespace `alice`, for one test."""
    api = FakeKubeAPI()
    await api.start()
    api.add_namespace("alice")
    try:
        yield api
    finally:
        await api.stop()


@contextlib.asynccontextmanager
async def kube_client(api: FakeKubeAPI, directory: Path, *, token: str | None = None) -> AsyncIterator[KubeClient]:
    """A gateway `KubeClient` on `api` (a kubeconfig written into `directory`), opened as app.py opens
    the gateway's one, and closed after its users: for tests that build a component by hand. `token`:
    one of `add_identity()`, to act as that identity (RBAC and admission apply) instead of the admin."""
    client = KubeClient(kubeconfig=api.write_kubeconfig(directory / "kubeconfig", token=token))
    await client.open()
    try:
        yield client
    finally:
        await client.close()


# For the modules that test a component against the fake API (tests/conftest.py offers them to every module; a
# module's own fixture of the same name takes precedence, as pytest resolves names).


@pytest.fixture(name="kubeconfig")
def fake_kubeconfig(kube_api: FakeKubeAPI, tmp_path: Path) -> Path:
    """A kubeconfig for the gateway's own client (the admin's token)."""
    return kube_api.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture(name="client")
async def fake_kube_client(kube_api: FakeKubeAPI, tmp_path: Path) -> AsyncIterator[KubeClient]:
    """The gateway's `KubeClient` on the fake API, as the admin."""
    async with kube_client(kube_api, tmp_path) as opened:
        yield opened


@pytest.fixture(name="backend")
async def fake_kube_backend(client: KubeClient) -> AsyncIterator[KubernetesBackend]:
    """The Kubernetes backend on `client`, opened (its first list done) and closed after the test."""
    backend = KubernetesBackend(client)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()
