"""Where notebook servers live: the `NotebookBackend` protocol and the values it trades in.

Implementations: `local` (real Jupyter processes, dev mode), `static` (fixed routes from a file)
and `kubernetes` (Kubeflow Notebook resources). The first two take what they lack (configurations,
a watch of the Kubernetes API) from `WithoutKubernetes`, so callers ask the protocol, never the class.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

from yarl import URL

from ..errors import MethodNotSupported
from ..kube.watch_health import WatchHealth
from .proxy_annotations import DEFAULT, ProxyBehaviour

# The Jupyter web app's phases, so its front end and ours read the same words.
Phase = Literal["ready", "waiting", "stopped", "warning", "terminating", "unavailable"]
JsonObject = dict[str, object]  # a Kubernetes object (a PodDefault) as the API server sends it
NO_CONFIGURATIONS = "Configurations (PodDefaults) need the Kubernetes backend; this gateway runs notebooks elsewhere."


@dataclass(frozen=True, slots=True)
class Status:
    phase: Phase
    message: str = ""


@dataclass(frozen=True, slots=True)
class Volume:
    """A workspace or data volume: a new claim of `size`, or an existing claim by name."""

    name: str
    mount_path: str
    size: str | None = None  # a Kubernetes quantity for a new volume; None for an existing one
    existing: bool = False
    access_mode: str = "ReadWriteOnce"


@dataclass(frozen=True, slots=True)
class NotebookSpec:
    """What a user asked for when creating a notebook server, already validated."""

    name: str
    image: str
    cpu: str = "0.5"  # Kubernetes quantities, normalised as the user wrote them
    memory: str = "1.0Gi"
    cpu_limit: str | None = None
    memory_limit: str | None = None
    workspace: Volume | None = None
    data_volumes: tuple[Volume, ...] = ()
    server_type: str = "jupyter"
    image_pull_policy: str = "IfNotPresent"
    # PodDefault selector labels ("configurations"): each becomes `<label>: "true"` on the Notebook.
    configurations: tuple[str, ...] = ()
    # Device-plugin resources in the container's limits, as (limitsKey, count): ("nvidia.com/gpu", 2).
    gpus: tuple[tuple[str, int], ...] = ()
    # The spawner config's affinity config and toleration group (by key; "" for none) and what they
    # put into the pod spec.
    affinity_config: str = ""
    affinity: JsonObject | None = None
    toleration_group: str = ""
    tolerations: tuple[JsonObject, ...] = ()
    shm: bool = False  # a memory-backed /dev/shm


@dataclass(frozen=True, slots=True)
class Notebook:
    """A notebook server as a backend sees it now."""

    namespace: str
    name: str
    spec: NotebookSpec
    status: Status
    created_at: datetime
    creator: str | None = None
    stopped: bool = False
    # Facts the backend wants users to know (e.g. "images are not used by the local backend").
    notes: tuple[str, ...] = field(default=())
    started_at: datetime | None = None  # when its server last started, where the backend knows it
    cull_exempt: bool = False  # its owner asked that idle culling leave it running (an annotation)


@dataclass(frozen=True, slots=True)
class Deletion:
    """What deleting a notebook took with it besides the notebook: with `volumes=True`, the volumes
    the gateway made for it (`volumes`), and those it kept (`kept`: (name, why)), e.g. one that
    another notebook server still mounts. Volumes the user attached are never touched, nor listed."""

    volumes: tuple[str, ...] = ()
    kept: tuple[tuple[str, str], ...] = ()


class NotebookBackend(Protocol):
    """Creates, lists and routes to notebook servers.

    Lifecycle: `open()` once before serving (after it returns, `synced` is True and `route()`
    answers from a complete view), `close()` once at shutdown (stops what the backend owns).
    Per notebook: create -> waiting -> ready; stop -> stopped; start -> waiting -> ready;
    delete -> terminating -> gone (`volumes=True`: with the volumes made for it, see `Deletion`).
    Errors are `GatewayError`s: `NotebookNotFound`,
    `NotebookExists`, `InvalidNotebookSpec`, `MethodNotSupported` (a read-only backend).

    Configurations (Kubeflow PodDefaults) exist where `has_configurations` is True; elsewhere the
    list is empty and creating or deleting one is `MethodNotSupported`.
    """

    name: str
    has_configurations: bool
    # Whether notebook servers are Kubernetes pods: only then can they be VS Code or RStudio servers,
    # have GPUs, affinity, tolerations or a shared-memory volume.
    runs_pods: bool

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def synced(self) -> bool:
        """True once the backend's view is complete enough to route from (for /readyz)."""
        ...

    def route(self, namespace: str, name: str) -> URL | None:
        """The upstream origin of a ready notebook, or None. Pure lookup: no I/O."""
        ...

    def proxy_behaviour(self, namespace: str, name: str) -> ProxyBehaviour:
        """How to talk to a routed notebook (its path rewrite and request headers; `DEFAULT`: keep
        the prefix, set nothing). Resolved when the route changes: a lookup, no I/O, no parsing."""
        ...

    async def list(self, namespace: str) -> list[Notebook]: ...

    async def get(self, namespace: str, name: str) -> Notebook: ...

    async def list_all(self) -> builtins.list[Notebook]:
        """Every notebook server in every namespace the backend serves (the idle culler's round)."""
        ...

    async def create(self, namespace: str, spec: NotebookSpec, *, creator: str | None) -> Notebook: ...

    async def stop(self, namespace: str, name: str) -> Notebook: ...

    async def start(self, namespace: str, name: str) -> Notebook: ...

    async def delete(self, namespace: str, name: str, *, volumes: bool = False) -> Deletion: ...

    async def poddefaults(self, namespace: str) -> builtins.list[JsonObject]:  # `list` is a method here
        """The namespace's configurations (PodDefaults), by name."""
        ...

    async def create_poddefault(self, namespace: str, body: JsonObject) -> JsonObject: ...

    async def delete_poddefault(self, namespace: str, name: str) -> None: ...

    def watch_health(self) -> WatchHealth | None:
        """Its watches of the Kubernetes API, for /readyz; None when it watches nothing."""
        ...

    def phase_counts(self) -> dict[Phase, int]:
        """How many notebook servers it knows now, by phase (for /metrics). Pure lookup: no I/O."""
        ...


class WithoutKubernetes:
    """What a backend that does not run on Kubernetes (local, static) answers for the parts of the
    protocol that need it: no configurations to list, none to make or delete (405), no watch."""

    has_configurations = False
    runs_pods = False

    async def poddefaults(self, namespace: str) -> list[JsonObject]:
        return []

    async def create_poddefault(self, namespace: str, body: JsonObject) -> JsonObject:
        raise MethodNotSupported(NO_CONFIGURATIONS)

    async def delete_poddefault(self, namespace: str, name: str) -> None:
        raise MethodNotSupported(NO_CONFIGURATIONS)

    def watch_health(self) -> WatchHealth | None:
        return None

    def proxy_behaviour(self, namespace: str, name: str) -> ProxyBehaviour:
        return DEFAULT


@runtime_checkable
class UpstreamTokens(Protocol):
    """A backend whose notebook servers require a token that only the gateway holds (the local one):
    the proxy sends it as `Authorization: token <token>`. Backends without it are not asked."""

    def upstream_token(self, namespace: str, name: str) -> str | None: ...


# The detail page's logs: at most this many lines, and this many bytes, of the end of a server's log.
LOG_TAIL_LINES = 1000
LOG_TAIL_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class ServerLog:
    """The end of a server's log: `pod` names where it comes from (a pod, or the local process)."""

    pod: str
    lines: tuple[str, ...]
    note: str = ""  # why there is no log (e.g. "the server is stopped: it has no pod")


@runtime_checkable
class ServerDetails(Protocol):
    """A backend that can show a server's detail page (kubernetes, local): its resource as YAML, its
    events (all of them, newest first) and the tail of its log. The static backend knows none of it."""

    async def resource(self, namespace: str, name: str) -> JsonObject:
        """The Notebook as the API server has it (local: as the backend records it), without managedFields."""
        ...

    async def events(self, namespace: str, name: str) -> list[JsonObject]: ...

    def pod_name(self, namespace: str, name: str) -> str:
        """The pod a server runs in (the notebook controller's StatefulSet names it `<name>-0`)."""
        ...

    async def logs(self, namespace: str, name: str, *, tail_lines: int = LOG_TAIL_LINES) -> ServerLog: ...
