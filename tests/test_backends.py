"""One conformance suite for every `NotebookBackend`, as its protocol docstring states the contract:
local (real Jupyter processes), static (a routes file: it refuses every change, as documented) and
Kubernetes (the fake API server through the official client, with the test controller playing
Kubeflow's). What only one backend does is tested beside it, in test_backend_<name>.py."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.backends import Deletion, NotebookBackend, NotebookSpec, Phase, Volume
from gateway.backends.kubernetes import KubernetesBackend
from gateway.backends.local import LocalBackend
from gateway.backends.static import StaticBackend
from gateway.errors import InvalidNotebookSpec, MethodNotSupported, NotebookExists, NotebookNotFound
from tests.fakes.kube_api import FakeKubeAPI, kube_client
from tests.fakes.kube_controller import KubeController

from .conftest import wait_until

IMAGE = "ghcr.io/kubeflow/kubeflow/notebook-servers/jupyter-scipy:v1.10.0"
NS = "alice"


def nothing(name: str) -> None:
    """A backend that needs nobody else to act on a change (it runs the notebook itself)."""


@dataclass
class Harness:
    """A backend under test, and whoever else acts on its notebooks in real life."""

    backend: NotebookBackend
    # A ready notebook `name` in `alice`: made through the backend (and driven to ready), or listed
    # in the static backend's file.
    add: Callable[[str], Awaitable[None]]
    # What runs the notebooks acts on the last change (Kubeflow's controller scales to 0 or 1).
    reconcile: Callable[[str], None] = nothing
    # A volume the user made themselves, and the volumes that exist now (for backends that make them).
    add_volume: Callable[[str], None] = nothing
    volumes: Callable[[], list[str]] = field(default=list)

    @property
    def read_only(self) -> bool:
        return isinstance(self.backend, StaticBackend)


@pytest.fixture(params=[pytest.param("local", marks=pytest.mark.slow), "static", "kubernetes"])
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "kubernetes":
        # Started here, outside the event loop: an async fixture cannot start another one by name.
        request.getfixturevalue("kube_api")
    return str(request.param)


async def ready(backend: NotebookBackend, name: str) -> None:
    async def is_ready() -> bool:
        return (await backend.get(NS, name)).status.phase == "ready" and backend.route(NS, name) is not None

    await wait_until(is_ready, timeout_s=60)  # a real Jupyter takes seconds to start on a busy machine


async def phase_of(backend: NotebookBackend, name: str) -> Phase | None:
    try:
        return (await backend.get(NS, name)).status.phase
    except NotebookNotFound:
        return None


def spec(name: str, *volumes: Volume) -> NotebookSpec:
    return NotebookSpec(name=name, image=IMAGE, data_volumes=volumes)


@pytest.fixture
async def harness(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    clients = contextlib.AsyncExitStack()  # the Kubernetes client outlives the backend that uses it, as in app.py
    if kind == "local":
        local = LocalBackend(tmp_path / "notebooks", stop_timeout_s=10)
        volumes = local.directory / NS / "_volumes"

        async def create_local(name: str) -> None:
            await local.create(NS, spec(name), creator=None)
            await ready(local, name)

        def add_folder(name: str) -> None:
            (volumes / name).mkdir(parents=True)

        def folders() -> list[str]:
            return sorted(path.name for path in volumes.iterdir()) if volumes.exists() else []

        harness = Harness(local, create_local, add_volume=add_folder, volumes=folders)
    elif kind == "static":
        routes: dict[tuple[str, str], str] = {}
        routes_file: Callable[[dict[tuple[str, str], str]], Path] = request.getfixturevalue("routes_file")
        static = StaticBackend(routes_file(routes), poll_interval_s=0.02)

        async def list_in_file(name: str) -> None:
            routes[NS, name] = f"http://127.0.0.1:{18000 + len(routes)}"
            routes_file(routes)
            await wait_until(lambda: static.route(NS, name) is not None, timeout_s=5)

        harness = Harness(static, list_in_file)
    else:
        kube_api: FakeKubeAPI = request.getfixturevalue("kube_api")
        controller = KubeController(kube_api)
        kube = KubernetesBackend(await clients.enter_async_context(kube_client(kube_api, tmp_path)))

        def reconcile(name: str) -> None:
            controller.reconcile(NS, name)
            # Kubeflow's web app shows a notebook "waiting" for its first 10 s whatever its pods do;
            # this controller acts in milliseconds, so read statuses as they will be after that.
            kube.clock = lambda: datetime.now(UTC) + timedelta(seconds=11)

        async def create_kube(name: str) -> None:
            await kube.create(NS, spec(name), creator=None)
            reconcile(name)
            await ready(kube, name)

        def add_claim(name: str) -> None:
            claim = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
            kube_api.create("persistentvolumeclaims", {"metadata": {"name": name}, "spec": claim}, NS)

        def claims() -> list[str]:
            return sorted(claim["metadata"]["name"] for claim in kube_api.objects("persistentvolumeclaims", NS))

        harness = Harness(kube, create_kube, reconcile, add_claim, claims)
    async with clients:
        await harness.backend.open()
        try:
            yield harness
        finally:
            await harness.backend.close()


def refused(verb: str) -> pytest.RaisesExc[MethodNotSupported]:
    """The static backend's documented refusal of every change."""
    return pytest.raises(MethodNotSupported, match=f"fixed routes from .*routes.toml; it cannot {verb}")


async def test_an_open_backend_is_synced_and_knows_no_strangers(harness: Harness) -> None:
    backend = harness.backend
    assert backend.synced
    assert await backend.list("nobody") == []
    with pytest.raises(NotebookNotFound):
        await backend.get(NS, "nb-unknown")
    assert backend.route(NS, "nb-unknown") is None


async def test_a_ready_notebook_is_listed_got_and_routed_to_an_origin(harness: Harness) -> None:
    backend = harness.backend
    await harness.add("nb1")
    [listed] = await backend.list(NS)
    got = await backend.get(NS, "nb1")
    assert (listed.namespace, listed.name, got.name, got.status.phase) == (NS, "nb1", "nb1", "ready")
    assert await backend.list("bob") == []
    route = backend.route(NS, "nb1")
    assert route is not None and route == route.origin()  # the gateway adds /notebook/<ns>/<name>/
    assert backend.route("bob", "nb1") is None


async def test_create_answers_waiting_and_lists_the_notebook_at_once(harness: Harness) -> None:
    backend = harness.backend
    if harness.read_only:
        with refused("create"):
            await backend.create(NS, spec("nb1"), creator="alice@example.com")
        assert await backend.list(NS) == []
        return
    created = await backend.create(NS, spec("nb1"), creator="alice@example.com")
    assert (created.namespace, created.name, created.spec.image) == (NS, "nb1", IMAGE)
    assert (created.status.phase, created.creator, created.stopped) == ("waiting", "alice@example.com", False)
    assert [nb.name for nb in await backend.list(NS)] == ["nb1"]
    assert (await backend.get(NS, "nb1")).creator == "alice@example.com"
    with pytest.raises(NotebookExists):
        await backend.create(NS, NotebookSpec(name="nb1", image="other"), creator=None)


async def test_an_invalid_spec_is_refused_and_nothing_is_made(harness: Harness) -> None:
    if harness.read_only:
        with refused("create"):
            await harness.backend.create(NS, spec("Not_A_Name"), creator=None)
        return
    with pytest.raises(InvalidNotebookSpec):
        await harness.backend.create(NS, spec("Not_A_Name"), creator=None)
    with pytest.raises(InvalidNotebookSpec):
        await harness.backend.create(NS, spec("nb1", Volume("../escape", "/home/jovyan/x", size="1Gi")), creator=None)
    assert await harness.backend.list(NS) == []
    assert harness.volumes() == []


async def test_stop_then_start(harness: Harness) -> None:
    backend = harness.backend
    await harness.add("nb1")
    if harness.read_only:
        for verb in ("stop", "start"):
            with refused(verb):
                await getattr(backend, verb)(NS, "nb1")
        assert (await backend.get(NS, "nb1")).status.phase == "ready" and backend.route(NS, "nb1") is not None
        return
    assert (await backend.stop(NS, "nb1")).stopped
    harness.reconcile("nb1")

    async def stopped() -> bool:
        return await phase_of(backend, "nb1") == "stopped" and backend.route(NS, "nb1") is None

    await wait_until(stopped, timeout_s=30)
    assert (await backend.get(NS, "nb1")).stopped
    assert not (await backend.start(NS, "nb1")).stopped
    harness.reconcile("nb1")
    await ready(backend, "nb1")
    assert not (await backend.get(NS, "nb1")).stopped


async def test_delete_and_the_notebook_is_gone(harness: Harness) -> None:
    backend = harness.backend
    await harness.add("nb1")
    if harness.read_only:
        with refused("delete"):
            await backend.delete(NS, "nb1")
        assert backend.route(NS, "nb1") is not None
        return
    assert await backend.delete(NS, "nb1") == Deletion()  # without volumes=True it takes nothing else

    async def gone() -> bool:
        return await phase_of(backend, "nb1") is None and backend.route(NS, "nb1") is None

    await wait_until(gone, timeout_s=30)
    assert await backend.list(NS) == []
    with pytest.raises(NotebookNotFound):
        await backend.delete(NS, "nb1")


async def test_changing_a_notebook_that_is_not_there_is_not_found(harness: Harness) -> None:
    for verb in ("stop", "start", "delete"):
        if harness.read_only:
            with refused(verb):
                await getattr(harness.backend, verb)(NS, "ghost")
            continue
        with pytest.raises(NotebookNotFound):
            await getattr(harness.backend, verb)(NS, "ghost")


async def test_delete_with_volumes_takes_only_those_its_create_made_and_nobody_else_uses(harness: Harness) -> None:
    backend = harness.backend
    if harness.read_only:
        with refused("delete"):
            await backend.delete(NS, "nb1", volumes=True)
        return
    harness.add_volume("datasets")  # the user's own: attached, never deleted nor listed
    attached = Volume("datasets", "/home/jovyan/datasets", existing=True)
    await backend.create(NS, spec("nb1", Volume("nb1-data", "/home/jovyan/data", size="1Gi"), attached), creator=None)
    shared = Volume("nb1-data", "/home/jovyan/shared", existing=True)
    await backend.create(NS, spec("nb2", Volume("nb2-data", "/home/jovyan/data", size="1Gi"), shared), creator=None)
    first = await backend.delete(NS, "nb1", volumes=True)
    assert (first.volumes, first.kept) == ((), (("nb1-data", "notebook server nb2 uses it too"),))
    second = await backend.delete(NS, "nb2", volumes=True)
    assert (second.volumes, second.kept) == (("nb2-data",), ())
    assert harness.volumes() == ["datasets", "nb1-data"]
