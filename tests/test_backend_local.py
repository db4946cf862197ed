"""The local backend: real Jupyter processes, records on disk, restarts, and clean shutdown. What
every backend does (create, stop, start, delete, volumes) is in test_backends.py."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.backends import NotebookSpec, Phase, Volume
from gateway.backends.local import NOTE, LocalBackend, tail
from gateway.errors import InvalidNotebookSpec

from .conftest import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    backend = LocalBackend(tmp_path / "notebooks", stop_timeout_s=10)
    await backend.open()
    yield backend
    await backend.close()


async def wait_phase(backend: LocalBackend, namespace: str, name: str, phase: Phase) -> None:
    async def reached() -> bool:
        return (await backend.get(namespace, name)).status.phase == phase

    await wait_until(reached, timeout_s=60)


def pid_of(backend: LocalBackend, namespace: str, name: str) -> int:
    return int((backend.directory / namespace / name / "server.pid").read_text())


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def jupyter_children(directory: Path) -> list[int]:
    """Child processes of this test run whose command line mentions `directory` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if parent == os.getpid() and str(directory).encode() in argv:
            found.append(int(entry.name))
    return found


async def test_create_serves_jupyter_once_ready(local: LocalBackend, http: aiohttp.ClientSession) -> None:
    spec = NotebookSpec(name="nb1", image="jupyter/scipy:1", data_volumes=(Volume("data", "/home/jovyan/d1"),))
    created = await local.create("alice", spec, creator="alice@example.com")
    assert created.status.phase == "waiting" and local.route("alice", "nb1") is None
    assert NOTE in created.notes
    await wait_phase(local, "alice", "nb1", "ready")
    upstream = local.route("alice", "nb1")
    assert upstream is not None
    gateway_only = {"Authorization": f"token {local.upstream_token('alice', 'nb1')}"}  # as the proxy sends it
    async with http.get(upstream.with_path("/notebook/alice/nb1/api/status"), headers=gateway_only) as resp:
        assert resp.status == 200
    # The data volume is a folder outside the workspace, visible to Jupyter as `d1`.
    async with http.get(upstream.with_path("/notebook/alice/nb1/api/contents/d1"), headers=gateway_only) as resp:
        assert resp.status == 200 and (await resp.json())["type"] == "directory"
    assert (local.directory / "alice" / "_volumes" / "data").is_dir()


async def test_stop_and_delete_end_the_jupyter_process_at_once(local: LocalBackend) -> None:
    await local.create("alice", NotebookSpec(name="nb1", image="x"), creator=None)
    await wait_phase(local, "alice", "nb1", "ready")
    pid = pid_of(local, "alice", "nb1")
    stopped = await local.stop("alice", "nb1")
    assert stopped.status.phase == "stopped" and not is_running(pid) and local.route("alice", "nb1") is None
    assert (await local.start("alice", "nb1")).status.phase == "waiting"
    await wait_phase(local, "alice", "nb1", "ready")
    pid = pid_of(local, "alice", "nb1")
    await local.delete("alice", "nb1")
    assert not is_running(pid) and not (local.directory / "alice" / "nb1").exists()


async def test_notebooks_survive_a_gateway_restart(tmp_path: Path) -> None:
    first = LocalBackend(tmp_path, stop_timeout_s=10)
    await first.open()
    await first.create("alice", NotebookSpec(name="running", image="x"), creator="alice")
    await first.create("alice", NotebookSpec(name="parked", image="x"), creator="alice")
    await first.stop("alice", "parked")
    await wait_phase(first, "alice", "running", "ready")
    pid = pid_of(first, "alice", "running")
    await first.close()
    assert not is_running(pid) and jupyter_children(tmp_path) == []

    second = LocalBackend(tmp_path, stop_timeout_s=10)
    await second.open()
    try:
        assert [(nb.name, nb.stopped, nb.creator) for nb in await second.list("alice")] == [
            ("parked", True, "alice"),
            ("running", False, "alice"),
        ]
        await wait_phase(second, "alice", "running", "ready")
        assert (await second.get("alice", "parked")).status.phase == "stopped"
    finally:
        await second.close()
    assert jupyter_children(tmp_path) == []


async def test_a_server_killed_from_outside_shows_a_warning(local: LocalBackend) -> None:
    await local.create("alice", NotebookSpec(name="nb1", image="x"), creator=None)
    await wait_phase(local, "alice", "nb1", "ready")
    os.kill(pid_of(local, "alice", "nb1"), signal.SIGKILL)
    await wait_phase(local, "alice", "nb1", "warning")
    status = (await local.get("alice", "nb1")).status
    assert status.message.startswith("Jupyter exited with code -9 (killed by SIGKILL): ")
    assert local.route("alice", "nb1") is None
    await local.start("alice", "nb1")  # starting it again is how a user recovers
    await wait_phase(local, "alice", "nb1", "ready")


async def test_bad_volumes_are_refused_and_nothing_is_written(local: LocalBackend) -> None:
    for volume in (Volume("../escape", "/home/jovyan/x"), Volume("ok", "/home/jovyan/.hidden")):
        with pytest.raises(InvalidNotebookSpec):
            await local.create("alice", NotebookSpec(name="nb1", image="x", data_volumes=(volume,)), creator=None)
    with pytest.raises(InvalidNotebookSpec, match="would both appear as 'data'"):
        volumes = (Volume("a", "/home/jovyan/data"), Volume("b", "/mnt/data"))
        await local.create("alice", NotebookSpec(name="nb1", image="x", data_volumes=volumes), creator=None)
    assert await local.list("alice") == [] and not local.directory.exists()


async def test_an_unreadable_record_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "alice" / "broken").mkdir(parents=True)
    (tmp_path / "alice" / "broken" / "notebook.json").write_text("{not json")
    backend = LocalBackend(tmp_path)
    await backend.open()
    try:
        assert backend.synced and await backend.list("alice") == []
        assert "skipping" in caplog.text and "broken/notebook.json" in caplog.text
    finally:
        await backend.close()


async def test_delete_with_volumes_removes_only_the_folders_its_create_made(tmp_path: Path) -> None:
    local = LocalBackend(tmp_path, stop_timeout_s=10)
    await local.open()
    try:
        volumes = tmp_path / "alice" / "_volumes"
        (volumes / "datasets").mkdir(parents=True)  # there before: attached, never ours to delete
        new, attached = Volume("nb1-data", "/home/jovyan/data"), Volume("datasets", "/home/jovyan/ds", existing=True)
        await local.create("alice", NotebookSpec(name="nb1", image="x", data_volumes=(new, attached)), creator=None)
        shared = Volume("nb2-data", "/home/jovyan/data")
        await local.create("alice", NotebookSpec(name="nb2", image="x", data_volumes=(shared,)), creator=None)
        also = Volume("nb2-data", "/home/jovyan/theirs", existing=True)
        await local.create("alice", NotebookSpec(name="nb3", image="x", data_volumes=(also,)), creator=None)
        await local.close()  # what each create made is in its record, so it survives a restart
        local = LocalBackend(tmp_path, stop_timeout_s=10)
        await local.open()
        deletion = await local.delete("alice", "nb1", volumes=True)
        assert (deletion.volumes, deletion.kept) == (("nb1-data",), ())
        deletion = await local.delete("alice", "nb2", volumes=True)
        assert deletion.kept == (("nb2-data", "notebook server nb3 uses it too"),)
        assert sorted(path.name for path in volumes.iterdir()) == ["datasets", "nb2-data"]
    finally:
        await local.close()


def test_the_log_tail_is_bounded_in_lines_and_bytes(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    assert tail(log, 10) == []  # no log yet
    log.write_text("".join(f"line {n}\n" for n in range(100)))
    assert tail(log, 3) == ["line 97", "line 98", "line 99"]
    log.write_bytes(b"x" * 5000 + b"\nlast \xff line\n")
    # Read from the last 1000 bytes only: the cut first line is dropped, bad bytes are replaced.
    assert tail(log, 10, limit_bytes=1000) == ["last \ufffd line"]
