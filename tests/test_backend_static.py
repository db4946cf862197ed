"""The static backend: routes from a TOML file, validated, reloaded when the file changes. Its refusal
of every change, and what every backend does, is in test_backends.py."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from yarl import URL

from gateway.backends.static import StaticBackend

from .conftest import wait_until

RoutesFile = Callable[[dict[tuple[str, str], str]], Path]


@pytest.fixture
async def static(routes_file: RoutesFile) -> AsyncIterator[StaticBackend]:
    path = routes_file({("alice", "nb1"): "http://127.0.0.1:8888", ("alice", "nb2"): "https://nb.example:9443/"})
    backend = StaticBackend(path, poll_interval_s=0.05)
    await backend.open()
    yield backend
    await backend.close()


async def test_routes_from_the_file_are_served(static: StaticBackend) -> None:
    assert static.route("alice", "nb1") == URL("http://127.0.0.1:8888")
    assert static.route("alice", "nb2") == URL("https://nb.example:9443")
    notebooks = await static.list("alice")
    assert [nb.name for nb in notebooks] == ["nb1", "nb2"]
    assert all(nb.status.phase == "ready" for nb in notebooks)
    assert "fixed upstream" in notebooks[0].notes[0]


async def test_a_changed_file_is_reloaded(static: StaticBackend, routes_file: RoutesFile) -> None:
    routes_file({("alice", "nb1"): "http://127.0.0.1:18888", ("bob", "lab"): "http://127.0.0.1:9999"})
    await wait_until(lambda: static.route("bob", "lab") is not None, timeout_s=2)
    assert static.route("alice", "nb1") == URL("http://127.0.0.1:18888")
    assert static.route("alice", "nb2") is None
    assert (await static.get("bob", "lab")).namespace == "bob"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[[route]]\nnamespace = "Alice"\nname = "nb1"\nurl = "http://h:1"\n', "entry 1: namespace 'Alice' is not"),
        ('[[route]]\nnamespace = "a"\nname = "nb_1"\nurl = "http://h:1"\n', "entry 1: name 'nb_1' is not"),
        ('[[route]]\nnamespace = "a"\nname = "n"\nurl = "ftp://h/"\n', "entry 1: url 'ftp://h/' must be http"),
        ('[[route]]\nnamespace = "a"\nname = "n"\nurl = "http://h/x"\n', "must be an origin"),
        ('[[route]]\nnamespace = "a"\nname = "n"\n', "entry 1: 'url' is missing"),
        ('[[route]]\nnamespace = "a"\nname = "n"\nurl = "http://h"\nport = 1\n', "unknown key(s) port"),
        ('[[route]]\nnamespace = "a"\nname = "n"\nurl = "http://h"\n' * 2, "entry 2: duplicate route for a/n"),
        ('[[routes]]\nnamespace = "a"\n', "unknown top-level key(s) routes"),
        ("[[route]\n", "not valid TOML"),
    ],
)
async def test_a_malformed_file_is_refused_at_open(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match="routes.toml") as info:
        await StaticBackend(path).open()
    assert problem in str(info.value)


async def test_a_missing_file_is_refused_at_open(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing.toml: cannot read"):
        await StaticBackend(tmp_path / "nothing.toml").open()


async def test_a_malformed_reload_keeps_the_last_good_table(
    static: StaticBackend, routes_file: RoutesFile, caplog: pytest.LogCaptureFixture
) -> None:
    static.routes_file.write_text('[[route]]\nnamespace = "alice"\nname = "nb1"\nurl = "gopher://x"\n')
    await wait_until(lambda: any(r.levelno == logging.ERROR for r in caplog.records), timeout_s=2)
    assert static.route("alice", "nb1") == URL("http://127.0.0.1:8888")
    routes_file({("alice", "nb1"): "http://127.0.0.1:7777"})
    await wait_until(lambda: static.route("alice", "nb1") == URL("http://127.0.0.1:7777"), timeout_s=2)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # one line for one bad version of the file, not one per poll
    assert "keeping the last good routes" in errors[0] and "entry 1: url 'gopher://x'" in errors[0]
