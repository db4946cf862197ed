"""`LocalBackend`: real Jupyter servers as child processes on loopback, for dev mode.

A notebook lives in `<directory>/<namespace>/<name>/`: `notebook.json` (its record), `workspace/`
(Jupyter's root), `server.log`, `server.pid` and `runtime/`. Data volumes are folders in
`<directory>/<namespace>/_volumes/`, linked into workspaces; they outlive the notebooks using them
unless a delete asks for the ones its create made (`volumes=True`).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import aiohttp
from yarl import URL

from ..errors import InvalidNotebookSpec, NotebookExists, NotebookNotFound
from ..names import is_dns_label, is_dns_subdomain
from . import (
    LOG_TAIL_BYTES,
    LOG_TAIL_LINES,
    Deletion,
    JsonObject,
    Notebook,
    NotebookSpec,
    Phase,
    ServerLog,
    Status,
    Volume,
    WithoutKubernetes,
)

log = logging.getLogger(__name__)

NOTE = (
    "The local backend runs Jupyter from the gateway's own Python environment: "
    "the image, CPU and memory are recorded but not applied."
)
# What a local Jupyter process cannot be, refused rather than run as something else: the web app's
# other server types need their images (code-server, RStudio), and GPUs a device plugin.
ONLY_JUPYTER = "The local backend runs JupyterLab only: VS Code and RStudio servers need the Kubernetes backend."
NO_GPUS = "The local backend cannot give a server GPUs: they need the Kubernetes backend and a device plugin."
# Imported by the Jupyter process, never by the gateway (it needs jupyter_server).
GATEWAY_ONLY = "gateway.backends.jupyter_auth.GatewayOnly"
UPSTREAM_TOKEN_ENV = "NOTEBOOK_GATEWAY_UPSTREAM_TOKEN"  # jupyter_auth.TOKEN_ENV
VOLUMES_DIR = "_volumes"  # '_' cannot occur in a DNS label, so no notebook can have this name
# A PersistentVolumeClaim name (DNS-1123 subdomain): never '.', '..' or anything with a '/'.


def jupyter_command(
    *, base_url: str, port: int, root_dir: Path, local_hostnames: tuple[str, ...] | None = None
) -> list[str]:
    """The command line of one Jupyter server behind the gateway, under `base_url` (the NB_PREFIX), XSRF on.

    With `local_hostnames` (the local backend), the server only accepts the gateway: it requires the
    token in its environment (never on the command line, which any local user can read; see
    `jupyter_auth`), and refuses a Host other than a loopback address or those names, so that a page
    whose DNS was rebound to 127.0.0.1 cannot talk to it. Without them it runs as Kubeflow's images
    do: no token, any Host, reachable only through the cluster network the NetworkPolicy confines."""
    if local_hostnames is None:
        access = ["--IdentityProvider.token=", "--ServerApp.allow_remote_access=True"]
    else:
        access = [
            f"--ServerApp.identity_provider_class={GATEWAY_ONLY}",
            "--IdentityProvider.token=",  # Jupyter's own token stays empty, so no page carries ours
            "--ServerApp.allow_remote_access=False",
            f"--ServerApp.local_hostnames={json.dumps(list(local_hostnames))}",
        ]
    return [
        sys.executable,
        "-m",
        "jupyter_server",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.base_url={base_url}",
        f"--ServerApp.root_dir={root_dir}",
        "--ServerApp.password=",
        *access,
        "--ServerApp.open_browser=False",
        # Containers and CI run as root, where Jupyter refuses to start unless told this is intended.
        *(["--ServerApp.allow_root=True"] if os.geteuid() == 0 else []),
        # `jupyter lab` (as Kubeflow's images run it) opens JupyterLab at the prefix; plain
        # jupyter_server would redirect there to /tree, which only the classic front end serves.
        *(["--ServerApp.default_url=/lab"] if importlib.util.find_spec("jupyterlab") else []),
    ]


@dataclass(frozen=True, slots=True)
class Record:
    """What `notebook.json` holds: the notebook as the user asked for it, and whether they stopped it."""

    namespace: str
    name: str
    spec: NotebookSpec
    created_at: datetime
    creator: str | None = None
    stopped: bool = False
    made_volumes: tuple[str, ...] = ()  # data volume folders this notebook's create made (not attached ones)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Record:
        """Raises ValueError for anything that is not a record this version wrote."""
        try:
            data: dict[str, Any] = json.loads(text)
            spec: dict[str, Any] = dict(data.pop("spec"))
            workspace = spec.pop("workspace", None)
            volumes = spec.pop("data_volumes", ())
            return cls(
                **{key: value for key, value in data.items() if key not in ("created_at", "made_volumes")},
                created_at=datetime.fromisoformat(data["created_at"]),
                made_volumes=tuple(str(name) for name in data.get("made_volumes", ())),
                spec=NotebookSpec(
                    **spec,
                    workspace=None if workspace is None else Volume(**workspace),
                    data_volumes=tuple(Volume(**volume) for volume in volumes),
                ),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a notebook record ({type(exc).__name__}: {exc})") from None


@dataclass(frozen=True, slots=True)
class Paths:
    """Where one notebook's files are."""

    root: Path
    volumes: Path

    @classmethod
    def of(cls, directory: Path, namespace: str, name: str) -> Paths:
        return cls(root=directory / namespace / name, volumes=directory / namespace / VOLUMES_DIR)

    @property
    def record(self) -> Path:
        return self.root / "notebook.json"

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    @property
    def runtime(self) -> Path:
        return self.root / "runtime"  # JUPYTER_RUNTIME_DIR per server, so parallel servers do not clash

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    @property
    def pid(self) -> Path:
        return self.root / "server.pid"


@dataclass(eq=False)
class Server:
    """One notebook's record plus its running state. Change it only while holding `lock`."""

    record: Record
    paths: Paths
    status: Status
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    process: asyncio.subprocess.Process | None = None
    url: URL | None = None  # set once Jupyter answers; what `route()` returns
    token: str = ""  # this process's token (UPSTREAM_TOKEN_ENV): sent upstream by the gateway, never to a browser
    supervisor: asyncio.Task[None] | None = None
    stopping: bool = False  # we are ending the process on purpose, so its exit is not a failure
    started_at: datetime | None = None  # when its current (or last) process was launched

    @property
    def prefix(self) -> str:
        return f"/notebook/{self.record.namespace}/{self.record.name}/"


class LocalBackend(WithoutKubernetes):
    """Starts, stops and routes to Jupyter servers running as children of the gateway."""

    name = "local"

    def __init__(
        self,
        directory: Path,
        *,
        hostnames: tuple[str, ...] = ("localhost",),
        notebook_host: Callable[[str, str], str | None] | None = None,
        startup_timeout_s: float = 60.0,
        stop_timeout_s: float = 5.0,
        poll_interval_s: float = 0.2,
    ) -> None:
        self.directory = Path(os.path.abspath(directory))  # Jupyter runs elsewhere; give it absolute paths
        # The names the gateway is reached at: Jupyter accepts them (and loopback addresses) as Host.
        self.hostnames = hostnames
        # A server's own host when it has one (isolated notebook origins: `<name>--<namespace>.localhost`).
        self.notebook_host = notebook_host
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.poll_interval_s = poll_interval_s
        self._servers: dict[tuple[str, str], Server] = {}
        self._http: aiohttp.ClientSession | None = None
        self._synced = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Load every record; start again the notebooks the user had not stopped."""
        if importlib.util.find_spec("jupyter_server") is None:
            log.warning("jupyter-server is not installed: install notebook-gateway[local] to run notebooks")
        # force_close: readiness checks are rare, so keep no idle sockets to servers that come and go.
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True),
            timeout=aiohttp.ClientTimeout(total=5),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        records, problems = await asyncio.to_thread(scan, self.directory)
        for path, problem in problems:
            log.error("local backend: skipping %s: %s", path, problem)
        for record in records:
            paths = Paths.of(self.directory, record.namespace, record.name)
            status = Status("stopped") if record.stopped else Status("waiting", "Jupyter is starting.")
            self._servers[record.namespace, record.name] = Server(record, paths, status)
        await asyncio.gather(*(self._resume(server) for server in self._servers.values() if not server.record.stopped))
        log.info("local backend: %d notebook(s) in %s", len(records), self.directory)
        self._synced = True

    async def _resume(self, server: Server) -> None:
        async with server.lock:
            await self._end_orphan(server)
            await self._launch(server)

    async def close(self) -> None:
        """Stop every server and wait for it; records keep the user's stopped flag for the next open."""
        self._synced = False

        async def shut(server: Server) -> None:
            async with server.lock:
                await self._terminate(server)
                server.status = Status("stopped", "The gateway shut down.")

        await asyncio.gather(*(shut(server) for server in self._servers.values()))
        if self._http is not None:
            await self._http.close()
            self._http = None

    @property
    def synced(self) -> bool:
        return self._synced

    # -- reads ----------------------------------------------------------------------------------

    def route(self, namespace: str, name: str) -> URL | None:
        server = self._servers.get((namespace, name))
        return None if server is None else server.url

    def upstream_token(self, namespace: str, name: str) -> str | None:
        """The token the proxy sends to this notebook's Jupyter (`Authorization: token ...`)."""
        server = self._servers.get((namespace, name))
        return None if server is None or server.url is None else server.token

    async def list(self, namespace: str) -> list[Notebook]:
        servers = sorted((key[1], server) for key, server in self._servers.items() if key[0] == namespace)
        return [self._notebook(server) for _, server in servers]

    async def list_all(self) -> builtins.list[Notebook]:
        return [self._notebook(server) for _, server in sorted(self._servers.items())]

    async def get(self, namespace: str, name: str) -> Notebook:
        return self._notebook(self._find(namespace, name))

    def phase_counts(self) -> dict[Phase, int]:
        return dict(Counter(server.status.phase for server in self._servers.values()))

    # -- the detail page ----------------------------------------------------------------------------

    async def resource(self, namespace: str, name: str) -> JsonObject:
        """What this backend knows of the server, in the shape of a Notebook (there is no such object here)."""
        server = self._find(namespace, name)
        record = server.record
        spec = dataclasses.asdict(record.spec)
        started = server.started_at.isoformat() if server.started_at else None
        return {
            "apiVersion": "notebook-gateway/local",
            "kind": "LocalNotebook",
            "metadata": {
                "name": record.name,
                "namespace": record.namespace,
                "creationTimestamp": record.created_at.isoformat(),
                "creator": record.creator,
            },
            "spec": {**spec, "stopped": record.stopped, "madeVolumes": list(record.made_volumes)},
            "status": {
                "phase": server.status.phase,
                "message": server.status.message,
                "startedAt": started,
                "pid": server.process.pid if server.process is not None else None,
                "log": str(server.paths.log),
            },
        }

    async def events(self, namespace: str, name: str) -> builtins.list[JsonObject]:
        self._find(namespace, name)
        return []  # no Kubernetes here: what happened is in the log

    def pod_name(self, namespace: str, name: str) -> str:
        return f"{name}-local"  # no pod: the local Jupyter process, named for the logs' URL

    async def logs(self, namespace: str, name: str, *, tail_lines: int = LOG_TAIL_LINES) -> ServerLog:
        server = self._find(namespace, name)
        lines = await asyncio.to_thread(tail, server.paths.log, max(1, min(tail_lines, LOG_TAIL_LINES)))
        note = "" if lines else "Jupyter has written nothing yet."
        return ServerLog(self.pod_name(namespace, name), tuple(lines), note)

    def _find(self, namespace: str, name: str) -> Server:
        server = self._servers.get((namespace, name))
        if server is None:
            raise NotebookNotFound(f"There is no notebook server {namespace}/{name}.")
        return server

    def _notebook(self, server: Server) -> Notebook:
        record = server.record
        notes = [NOTE]
        if record.spec.data_volumes:
            notes.append(
                f"Data volumes are folders in {server.paths.volumes}, linked into the workspace under the "
                "last part of their mount path; their sizes are not enforced."
            )
        return Notebook(
            namespace=record.namespace,
            name=record.name,
            spec=record.spec,
            status=server.status,
            created_at=record.created_at,
            creator=record.creator,
            stopped=record.stopped,
            notes=tuple(notes),
            started_at=server.started_at,
        )

    # -- changes --------------------------------------------------------------------------------

    async def create(self, namespace: str, spec: NotebookSpec, *, creator: str | None) -> Notebook:
        if not is_dns_label(namespace):
            raise InvalidNotebookSpec(f"Namespace {namespace!r} is not a valid DNS-1123 label.", field="namespace")
        if not is_dns_label(spec.name):
            raise InvalidNotebookSpec(f"Name {spec.name!r} is not a valid DNS-1123 label.", field="name")
        if spec.server_type != "jupyter":
            raise InvalidNotebookSpec(ONLY_JUPYTER, field="serverType")
        if spec.gpus:
            raise InvalidNotebookSpec(NO_GPUS, field="gpus")
        links = volume_links(spec)
        key = (namespace, spec.name)
        if key in self._servers:
            raise NotebookExists(f"A notebook server named {spec.name!r} already exists in {namespace}.")
        record = Record(namespace, spec.name, spec, datetime.now(UTC), creator)
        server = Server(record, Paths.of(self.directory, namespace, spec.name), Status("waiting"))
        self._servers[key] = server  # claimed before the first await, so a second create sees it
        async with server.lock:
            try:
                server.record = await asyncio.to_thread(create_files, server.paths, record, links)
            except BaseException:
                del self._servers[key]
                raise
            await self._launch(server)
            log.info("local backend: created %s/%s for %s", namespace, spec.name, creator)
            return self._notebook(server)

    async def stop(self, namespace: str, name: str) -> Notebook:
        server = self._find(namespace, name)
        async with server.lock:
            self._check_current(server)
            if not server.record.stopped:
                server.record = dataclasses.replace(server.record, stopped=True)
                await asyncio.to_thread(write_atomically, server.paths.record, server.record.to_json())
            await self._terminate(server)
            server.status = Status("stopped")
            return self._notebook(server)

    async def start(self, namespace: str, name: str) -> Notebook:
        server = self._find(namespace, name)
        async with server.lock:
            self._check_current(server)
            if server.record.stopped:
                server.record = dataclasses.replace(server.record, stopped=False)
                await asyncio.to_thread(write_atomically, server.paths.record, server.record.to_json())
            if server.process is None:  # also restarts a server that exited by itself
                await self._launch(server)
            return self._notebook(server)

    async def delete(self, namespace: str, name: str, *, volumes: bool = False) -> Deletion:
        """The notebook's folder (its workspace with it); with `volumes`, also the data volume folders
        its create made, unless another notebook uses one."""
        server = self._find(namespace, name)
        async with server.lock:
            self._check_current(server)
            server.status = Status("terminating", "Stopping Jupyter.")
            await self._terminate(server)
            # rmtree unlinks the volume links without following them: data volumes stay.
            await asyncio.to_thread(shutil.rmtree, server.paths.root)
            del self._servers[namespace, name]
            log.info("local backend: deleted %s/%s", namespace, name)
            if not volumes:
                return Deletion()
            users = {
                volume.name: other.record.name
                for (ns, _), other in self._servers.items()
                if ns == namespace
                for volume in other.record.spec.data_volumes
            }
            kept = tuple(
                (volume, f"notebook server {users[volume]} uses it too")
                for volume in server.record.made_volumes
                if volume in users
            )
            doomed = [volume for volume in server.record.made_volumes if volume not in users]
            deleted = await asyncio.to_thread(remove_volumes, server.paths.volumes, doomed)
            log.info("local backend: deleted the volumes of %s/%s: %s", namespace, name, ", ".join(deleted) or "-")
            return Deletion(tuple(deleted), kept)

    def _check_current(self, server: Server) -> None:
        """Raise if `server` was deleted while we waited for its lock."""
        key = (server.record.namespace, server.record.name)
        if self._servers.get(key) is not server:
            raise NotebookNotFound(f"There is no notebook server {key[0]}/{key[1]}.")

    # -- processes ------------------------------------------------------------------------------

    async def _launch(self, server: Server) -> None:
        """Start Jupyter for `server` (lock held) and a task that watches it become ready or exit."""
        paths, port = server.paths, free_port()
        server.started_at = datetime.now(UTC)
        token = secrets.token_urlsafe(32)  # new for each process: a stopped server's token opens nothing
        env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}  # no gateway secrets
        env |= {
            UPSTREAM_TOKEN_ENV: token,
            "JUPYTER_PLATFORM_DIRS": "1",
            "JUPYTER_RUNTIME_DIR": str(paths.runtime),
            # JupyterLab's saved layout per server, as in a notebook's own pod; not one file in the
            # developer's ~/.config that every dev server would reopen (a terminal left open in one
            # would come back in the next).
            "JUPYTERLAB_WORKSPACES_DIR": str(paths.root / "lab-workspaces"),
            # Likewise its JupyterLab settings: one user's must never reach another user's server.
            "JUPYTERLAB_SETTINGS_DIR": str(paths.root / "lab-settings"),
            "NB_PREFIX": server.prefix.rstrip("/"),  # as Kubeflow sets it in notebook containers
            "PYTHONUNBUFFERED": "1",
        }
        own_host = self.notebook_host(server.record.namespace, server.record.name) if self.notebook_host else None
        hostnames = (*self.hostnames, own_host) if own_host else self.hostnames
        command = jupyter_command(
            base_url=server.prefix, port=port, root_dir=paths.workspace, local_hostnames=hostnames
        )
        log_file = await asyncio.to_thread(open_log, paths, port)
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=paths.workspace,
                env=env,
                start_new_session=True,  # a Ctrl+C in the gateway's terminal is the gateway's to handle
            )
        except OSError as exc:
            server.status = Status("warning", f"Jupyter could not be started: {exc}")
            return
        finally:
            log_file.close()
        await asyncio.to_thread(paths.pid.write_text, f"{process.pid}\n")
        server.process, server.url, server.stopping, server.token = process, None, False, token
        server.status = Status("waiting", "Jupyter is starting.")
        server.supervisor = asyncio.create_task(self._supervise(server, process, port), name=f"jupyter {server.prefix}")

    async def _supervise(self, server: Server, process: asyncio.subprocess.Process, port: int) -> None:
        """Poll Jupyter's /api/status until it answers (then route to it), then wait for it to exit."""
        origin = URL.build(scheme="http", host="127.0.0.1", port=port)
        status_url = origin.with_path(server.prefix + "api/status")
        exited = asyncio.ensure_future(process.wait())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.startup_timeout_s
        try:
            while not exited.done():
                if await self._answers(status_url, server.token):
                    if server.process is process and not server.stopping:
                        server.url, server.status = origin, Status("ready")
                        log.info("local backend: %s is ready on port %d", server.prefix, port)
                    break
                if loop.time() > deadline and server.status.phase == "waiting":
                    server.status = Status(
                        "warning",
                        f"Jupyter has not answered for {self.startup_timeout_s:.0f} s; see {server.paths.log}",
                    )
                await asyncio.wait({exited}, timeout=self.poll_interval_s)
            code = await exited
        finally:
            exited.cancel()
        if server.process is not process or server.stopping:
            return  # stopped on purpose: `_terminate` sets the status
        last_line = await asyncio.to_thread(read_last_line, server.paths.log)
        server.process, server.url, server.supervisor = None, None, None
        server.status = Status("warning", describe_exit(code, last_line))
        log.warning("local backend: %s: %s", server.prefix, server.status.message)
        with contextlib.suppress(OSError):
            await asyncio.to_thread(server.paths.pid.unlink)

    async def _answers(self, url: URL, token: str) -> bool:
        assert self._http is not None, "open() the backend first"
        try:
            async with self._http.get(
                url, allow_redirects=False, headers={"Authorization": f"token {token}"}
            ) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def _terminate(self, server: Server) -> None:
        """End `server`'s process (SIGTERM, then SIGKILL) and wait for it and its supervisor."""
        process = server.process
        if process is None:
            return
        server.stopping, server.url = True, None
        try:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), self.stop_timeout_s)
                except TimeoutError:
                    log.warning("local backend: %s ignored SIGTERM; killing it", server.prefix)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()
            if server.supervisor is not None:
                await server.supervisor
        finally:
            server.process, server.supervisor, server.stopping = None, None, False
        with contextlib.suppress(OSError):
            await asyncio.to_thread(server.paths.pid.unlink)

    async def _end_orphan(self, server: Server) -> None:
        """End a Jupyter left running by a gateway that died without `close()` (same command line)."""
        pid = await asyncio.to_thread(orphan_pid, server.paths, server.prefix)
        if pid is None:
            return
        log.warning("local backend: ending Jupyter (pid %d) left over from a previous run", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            for _ in range(int(self.stop_timeout_s / 0.1)):
                await asyncio.sleep(0.1)
                os.kill(pid, 0)  # ProcessLookupError once it is gone
            os.kill(pid, signal.SIGKILL)


# -- files (blocking: called through asyncio.to_thread) ----------------------------------------


def volume_links(spec: NotebookSpec) -> list[tuple[str, str]]:
    """(name in the workspace, volume name) for each data volume: the mount path's last part."""
    links: dict[str, str] = {}
    for volume in spec.data_volumes:
        if not is_dns_subdomain(volume.name):
            raise InvalidNotebookSpec(f"Volume name {volume.name!r} is not a valid DNS-1123 name.", field="datavols")
        link = PurePosixPath(volume.mount_path).name or volume.name
        if link.startswith(".") or "\\" in link:
            raise InvalidNotebookSpec(
                f"Mount path {volume.mount_path!r} cannot be used locally: its last part names the folder "
                "in the workspace, so it must not start with '.'.",
                field="datavols",
            )
        if link in links:
            raise InvalidNotebookSpec(
                f"Volumes {links[link]!r} and {volume.name!r} would both appear as {link!r} in the workspace.",
                field="datavols",
            )
        links[link] = volume.name
    return [*links.items()]


def create_files(paths: Paths, record: Record, links: list[tuple[str, str]]) -> Record:
    """The notebook's folder, workspace, volume folders and links, and its record (written last,
    naming the new volumes' folders that did not exist before: those a delete may take with it)."""
    if paths.record.exists():
        raise NotebookExists(f"A notebook server named {record.name!r} already exists in {record.namespace}.")
    new = {volume.name for volume in record.spec.data_volumes if not volume.existing}
    made = tuple(volume for _, volume in links if volume in new and not (paths.volumes / volume).exists())
    record = dataclasses.replace(record, made_volumes=made)
    paths.workspace.mkdir(parents=True, exist_ok=True)
    for link, volume in links:
        target = paths.volumes / volume
        target.mkdir(parents=True, exist_ok=True)
        path = paths.workspace / link
        if path.is_symlink():  # left by an earlier, half-finished create
            path.unlink()
        path.symlink_to(target, target_is_directory=True)
    write_atomically(paths.record, record.to_json())
    return record


def remove_volumes(directory: Path, names: list[str]) -> list[str]:
    """Delete the volume folders `names` in `directory`; the ones that were there."""
    removed = []
    for name in names:
        folder = directory / name
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)
            removed.append(name)
    return removed


def write_atomically(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of one (temp file, fsync, rename)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temp.open("w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)


def scan(directory: Path) -> tuple[list[Record], list[tuple[Path, str]]]:
    """Every readable record under `directory`, and (file, problem) for those that are not."""
    records, problems = [], []
    for path in sorted(directory.glob("*/*/notebook.json")):
        try:
            record = Record.from_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problems.append((path, str(exc)))
            continue
        if (record.namespace, record.name) != (path.parent.parent.name, path.parent.name):
            problems.append((path, f"it names {record.namespace}/{record.name}, not its folder"))
        elif not (is_dns_label(record.namespace) and is_dns_label(record.name)):
            problems.append((path, "its namespace or name is not a DNS-1123 label"))
        else:
            records.append(record)
    return records, problems


def open_log(paths: Paths, port: int) -> BinaryIO:
    """server.log, opened for appending, with a line marking this start."""
    paths.runtime.mkdir(parents=True, exist_ok=True)
    file = paths.log.open("ab")
    file.write(f"--- {datetime.now(UTC).isoformat()} starting Jupyter on 127.0.0.1:{port}\n".encode())
    file.flush()
    return file


def tail(path: Path, lines: int, limit_bytes: int = LOG_TAIL_BYTES) -> list[str]:
    """The last `lines` lines of a file, read from at most its last `limit_bytes` (a log may be huge)."""
    try:
        with path.open("rb") as file:
            end = file.seek(0, os.SEEK_END)
            file.seek(max(0, end - limit_bytes))
            text = file.read(limit_bytes).decode("utf-8", errors="replace")
            cut = end > limit_bytes  # the first line read may be the end of a longer one
    except OSError:
        return []
    found = text.splitlines()
    if cut and found:
        found = found[1:]
    return found[-lines:]


def read_last_line(path: Path) -> str:
    try:
        with path.open("rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - 4096))
            tail = file.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def describe_exit(code: int, last_line: str) -> str:
    how = f"Jupyter exited with code {code}"
    if code < 0:
        with contextlib.suppress(ValueError):
            how += f" (killed by {signal.Signals(-code).name})"
    return f"{how}: {last_line}" if last_line else how


def orphan_pid(paths: Paths, prefix: str) -> int | None:
    """The pid in server.pid, if that process is still this notebook's Jupyter (Linux /proc)."""
    try:
        pid = int(paths.pid.read_text())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    wanted = {f"--ServerApp.base_url={prefix}".encode(), f"--ServerApp.root_dir={paths.workspace}".encode()}
    return pid if wanted <= set(argv) else None


def free_port() -> int:
    """A loopback port nobody listens on now (Jupyter runs with port_retries=0, so a race shows as an exit)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
