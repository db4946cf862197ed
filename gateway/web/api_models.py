"""The JSON API's bodies as pydantic models: what `/api/openapi.json` describes (web/openapi.py), and what the
handlers check request bodies with (`parse_body`). The bodies a component checks (a notebook, a configuration,
a profile) are that component's models, imported here, so each body has one definition.

Response models describe what the handlers build (their shapes are tested against live answers in the
tests); the envelope `success`/`status`/`user` is the Kubeflow Jupyter web app's, which its clients read.
Objects whose inner shape belongs to Kubernetes or the audit schema (`spawnerFormDefaults`, audit events)
are described as objects and documented where they are defined.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from ..authz.rules import ACTIONS, EVERY_NAMESPACE, ROLES
from ..backends.poddefaults import NewConfiguration as NewConfiguration
from ..body_models import parse_body as parse_body
from ..names import is_dns_label
from ..notebook_form import NewNotebook as NewNotebook
from ..notebook_form import VolumeSource
from ..profiles import NewProfile as NewProfile

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


class GpuSummary(Model):
    count: int = Field(description="GPUs of the configured vendors the server asks for.")
    message: str = Field(description='Which, e.g. "1 NVIDIA, 2 AMD"; empty for none.')


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
    gpus: GpuSummary
    volumes: list[str]
    status: NotebookStatus
    stopped: bool
    url: str = Field(description="Where the server opens, relative to the gateway.")
    notes: list[str]
    metadata: NotebookMetadata
    cull_at: str = Field(
        "",
        description="When idle culling will stop the server (RFC 3339), or empty when it will not. "
        "In lists and single reads; absent from the answers of create, stop and start.",
    )


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
    config: SpawnerFormDefaults


class Setting(Model):
    """One field's default; `readOnly` when the administrator fixed it (a create may then leave it out only)."""

    readOnly: Literal[True] | None = None


class StringSetting(Setting):
    value: str


class ImageSetting(Setting):
    value: str
    options: list[str]


class ImageGroup(Model):
    value: str
    options: list[str]


class ResourceSetting(Setting):
    value: str = Field(description="The request, a Kubernetes quantity.")
    limitFactor: str = Field(description="limit = request x this; `none`: no limit.")


class WorkspaceSetting(Setting):
    value: VolumeSource


class DataVolumesSetting(Setting):
    value: list[VolumeSource]


class GpuVendor(Model):
    limitsKey: str
    uiName: str


class GpuDefault(Model):
    vendor: str
    vendors: list[GpuVendor]
    num: str = Field(description='The default count, or `"none"`.')


class GpuSetting(Setting):
    value: GpuDefault
    counts: list[int] = Field(description="The counts the form offers.")


class AffinityOption(Model):
    configKey: str
    displayName: str
    affinity: dict[str, Any] = Field(description="A Kubernetes Affinity.")


class AffinitySetting(Setting):
    value: str = Field(description="The default `configKey`; empty for none.")
    options: list[AffinityOption]


class TolerationOption(Model):
    groupKey: str
    displayName: str
    tolerations: list[dict[str, Any]] = Field(description="Kubernetes Tolerations.")


class TolerationSetting(Setting):
    value: str = Field(description="The default `groupKey`; empty for none.")
    options: list[TolerationOption]


class BoolSetting(Setting):
    value: bool


class ConfigurationsSetting(Setting):
    value: list[str]


class EnvironmentSetting(Model):
    value: dict[str, str]


class SpawnerFormDefaults(Model):
    """The NEW SERVER form's defaults, in the shape of spawner_ui_config.yaml's `spawnerFormDefaults`.
    Options the gateway does not offer are present and empty."""

    image: ImageSetting
    imageGroupOne: ImageGroup = Field(description="VS Code (`serverType` group-one) images.")
    imageGroupTwo: ImageGroup = Field(description="RStudio (`serverType` group-two) images.")
    allowCustomImage: bool
    hideRegistry: bool
    hideTag: bool
    imagePullPolicy: StringSetting
    cpu: ResourceSetting
    memory: ResourceSetting
    workspaceVolume: WorkspaceSetting
    dataVolumes: DataVolumesSetting
    gpus: GpuSetting
    affinityConfig: AffinitySetting
    tolerationGroup: TolerationSetting
    shm: BoolSetting
    configurations: ConfigurationsSetting
    environment: EnvironmentSetting


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


class HourOfActivity(Model):
    hour: str = Field(description="The hour's start, e.g. `2024-05-01T12:00:00Z`.")
    allowed: int
    denied: int
    failed: int
    actions: dict[str, dict[str, int]] = Field(description="Events by action, then by outcome.")


class AuditActivity(Model):
    """Events per hour by action and outcome (gateway/audit/activity.py), oldest hour first, every hour present."""

    since: str
    until: str
    hours: list[HourOfActivity]
    events: int = Field(description="Events counted.")
    complete: bool = Field(description="False when counting stopped at its ceiling (the newest were counted).")
    clamped: bool = Field(description="True when the window was cut to the longest the chart shows.")


# -- a notebook server's details (/api/namespaces/{namespace}/notebooks/{name}/...) -------------------------


class PodMetadata(Model):
    name: str
    namespace: str


class PodSummary(Model):
    """What the Notebook's status says of its pod (the gateway never reads pods)."""

    metadata: PodMetadata
    status: dict[str, Any] = Field(
        description="`containerState`, `conditions`, `phase`, `startedAt`, as far as the Notebook's status has them."
    )


class NotebookPod(Envelope):
    pod: PodSummary


class NotebookLogs(Envelope):
    logs: list[str] = Field(description="The newest lines of the server's log, oldest first (bounded by `tail`).")
    note: str = Field(description="Why there is no log (e.g. the server is stopped); empty otherwise.")


class NotebookEvents(Envelope):
    events: list[dict[str, Any]] = Field(description="The server's Kubernetes Events (core/v1 Event objects).")


class NotebookResource(Envelope):
    resource: dict[str, Any] = Field(description="The Notebook object (kubeflow.org/v1), as the backend has it.")
