"""The JSON API's bodies as pydantic models: what `/api/openapi.json` describes (web/openapi.py), and what the
handlers check request bodies with where a model says it as clearly as the hand-written checks did.

Response models describe what the handlers build (their shapes are tested against live answers in the
tests); the envelope `success`/`status`/`user` is the Kubeflow Jupyter web app's, which its clients read.
Objects whose inner shape belongs to Kubernetes or the audit schema (`spawnerFormDefaults`, audit events)
are described as objects and documented where they are defined.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from ..authz.rules import ACTIONS, EVERY_NAMESPACE, ROLES
from ..errors import BadRequest
from ..names import is_dns_label

MAX_NAME_CHARS = 256
Role = Literal[ROLES]  # type: ignore[valid-type]
ActionName = Literal[ACTIONS]  # type: ignore[valid-type]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- errors ----------------------------------------------------------------------------------------------


class Error(Model):
    """Every refusal (4xx) and failure (5xx) of the API."""

    success: Literal[False]
    status: int
    error: str = Field(description="A stable code, e.g. `forbidden`, `invalid_notebook`, `invalid_token`.")
    message: str
    log: str = Field(description="The message again, where Kubeflow's web app clients read it.")
    request_id: str
    field: str | None = Field(None, description="The request field at fault, when one is.")


M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M], body: object) -> M:
    """`body` (parsed JSON) as `model`, or a 400 naming the first field at fault and what is wrong with it."""
    if not isinstance(body, dict):
        fields = ", ".join(f'"{name}"' for name in model.model_fields)
        required = next((name for name, info in model.model_fields.items() if info.is_required()), None)
        raise BadRequest(f"The body must be a JSON object: {{{fields}}}.", field=required)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise BadRequest(f"{where}: {message}." if where else f"{message}.", field=where or None) from None


# -- notebooks (/api/namespaces/{namespace}/notebooks) ----------------------------------------------------


class NotebookStatus(Model):
    phase: str
    message: str
    state: str


class NotebookMetadata(Model):
    name: str
    namespace: str
    creationTimestamp: str
    annotations: dict[str, str]
    labels: dict[str, str]


class Notebook(Model):
    """One notebook server, as Kubeflow's Jupyter web app lists it, with a few facts of the gateway's."""

    name: str
    namespace: str
    serverType: str
    age: str = Field(description="Creation time, RFC 3339 in UTC (Kubernetes' creationTimestamp).")
    last_activity: str
    image: str
    shortImage: str
    cpu: str
    memory: str
    cpuLimit: str | None
    memoryLimit: str | None
    gpus: dict[str, Any]
    volumes: list[str]
    status: NotebookStatus
    stopped: bool
    url: str = Field(description="Where the server opens, relative to the gateway.")
    notes: list[str]
    metadata: NotebookMetadata


class Envelope(Model):
    success: Literal[True]
    status: Literal[200]
    user: str = Field(description="Who the gateway took the caller for.")


class NotebookList(Envelope):
    notebooks: list[Notebook]


class NotebookAnswer(Envelope):
    notebook: Notebook
    message: str | None = None


class Message(Envelope):
    message: str


class NotebookDeleted(Envelope):
    message: str
    volumes_deleted: list[str] | None = None
    volumes_kept: list[dict[str, str]] | None = None


class FormDefaults(Envelope):
    config: dict[str, Any] = Field(description="The NEW SERVER form's defaults, as spawner_ui_config.yaml's.")


class NewNotebook(BaseModel):
    """The NEW SERVER form's fields (Kubeflow's Jupyter web app form); all but `name` default to the
    gateway's spawner configuration. Checked by gateway/notebook_form.py, which says which field is wrong."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(description="A DNS-1123 label.")
    image: str | None = None
    cpu: str | float | None = None
    memory: str | float | None = None


class NotebookPatch(Model):
    """Stop or start a server."""

    stopped: StrictBool


# -- configurations (PodDefaults) ------------------------------------------------------------------------


class SecretMount(Model):
    secret: str
    mountPath: str


class Configuration(Model):
    """A PodDefault as the web app lists it; variable and Secret names, never a value."""

    label: str
    desc: str
    name: str
    env: list[str]
    envFromSecrets: list[str]
    secretMounts: list[SecretMount]


class ConfigurationList(Envelope):
    poddefaults: list[Configuration]


class ConfigurationCreated(Envelope):
    message: str
    poddefault: Configuration


class NewConfiguration(BaseModel):
    """A PodDefault to create (checked by gateway/backends/poddefaults.py: env, Secret mounts, a label)."""

    model_config = ConfigDict(extra="allow")


# -- policies ----------------------------------------------------------------------------------------------


class Rule(Model):
    subject: str = Field(description="`user:<name>` or `group:<name>`.")
    namespace: str = Field(description="A DNS-1123 label, or `*` for every namespace.")
    role: Role
    notebook: str | None = None
    effect: Literal["allow", "deny"] = "allow"
    guard: Literal["namespace", "cluster"] = "namespace"


class RuleSource(Rule):
    source: str
    location: str | None
    line: int | None
    editable: bool


class AccessEntry(RuleSource):
    kind: str


class PolicyList(Model):
    version: str
    rules: list[Rule]
    bootstrap_admins: list[str]


class PolicyChanged(Model):
    version: str
    changed: bool
    rule: Rule


class PolicyReplace(Model):
    """The whole rule set (cluster-admins only). Each rule is checked as a grant's is."""

    rules: list[dict[str, Any]] = Field(description="Rules, each as in POST /api/policies.")
    version: str | None = None


class PolicyReplaced(Model):
    version: str
    previous_version: str
    added: int
    removed: int


class AccessCheck(Model):
    """ "May this user do this in this namespace, and which rules say so?\""""

    user: str = Field(min_length=1, max_length=MAX_NAME_CHARS, description="A username as sign-in reports it.")
    groups: list[str] = Field(default_factory=list)
    namespace: str = Field(description="A DNS-1123 label, or `*`.")
    action: ActionName
    notebook: str | None = Field(None, description="A DNS-1123 label, or absent.")

    @field_validator("user")
    @classmethod
    def _user(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a username as sign-in reports it is required")
        return value.strip()

    @field_validator("groups")
    @classmethod
    def _groups(cls, value: list[str]) -> list[str]:
        if not all(group and len(group) <= MAX_NAME_CHARS for group in value):
            raise ValueError(f"each group is a name of 1 to {MAX_NAME_CHARS} characters")
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if value != EVERY_NAMESPACE and not is_dns_label(value):
            raise ValueError("must be a DNS-1123 label or *")
        return value

    @field_validator("notebook")
    @classmethod
    def _notebook(cls, value: str | None) -> str | None:
        if value is not None and not is_dns_label(value):
            raise ValueError("must be a DNS-1123 label, or absent")
        return value


class Decision(Model):
    allowed: bool
    decision: str
    reason: str
    rules: list[RuleSource]


class NamespaceAccess(Model):
    namespace: str
    version: str
    access: list[AccessEntry]


# -- profiles ----------------------------------------------------------------------------------------------


class Profile(Model):
    name: str
    owner: str
    quota: dict[str, str]
    mountServiceAccountToken: bool


class ProfileList(Model):
    profiles: list[Profile]
    mode: Literal["gateway", "kubeflow"]


class ProfileCreated(Profile):
    mode: Literal["gateway", "kubeflow"]


class NewProfile(BaseModel):
    """A profile to create (checked by gateway/profiles.py: name, owner, quota)."""

    model_config = ConfigDict(extra="allow")
    name: str
    owner: str


class ProfileDeleted(Model):
    name: str
    deleted: Literal[True]
    mode: Literal["gateway", "kubeflow"]
    revoked: list[Rule]


# -- audit -------------------------------------------------------------------------------------------------


class AuditPage(Model):
    events: list[dict[str, Any]] = Field(description="Audit events, newest first (docs/security.md lists fields).")
    next_cursor: str | None
    scanned: int
    source: str
    filters: dict[str, Any]
