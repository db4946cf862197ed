"""`StaticBackend`: fixed routes from a TOML file of `[[route]]` entries, reloaded when it changes.

A bad file at start-up is a `ValueError`; a bad file later is logged and the last good table stays.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import tomllib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from yarl import URL

from ..errors import MethodNotSupported, NotebookNotFound
from ..names import is_dns_label
from . import Deletion, Notebook, NotebookSpec, Phase, Status, WithoutKubernetes
from .proxy_annotations import DEFAULT, MAX_HEADERS, ProxyBehaviour, check_header, check_rewrite

log = logging.getLogger(__name__)

ENTRY_KEYS = ("namespace", "name", "url")
# Optional, for servers that are not Jupyter (as Kubeflow's annotations): `rewrite_uri = "/"` replaces
# the /notebook/<ns>/<name>/ prefix upstream; `request_headers = {X-RStudio-Root-Path = "..."}` sets headers.
OPTIONAL_KEYS = ("rewrite_uri", "request_headers")
# What identifies a version of the file: a rewrite, an append or a rename-over all change it.
Stamp = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Route:
    namespace: str
    name: str
    url: URL  # the upstream origin; the gateway adds /notebook/<ns>/<name>/
    since: datetime  # when this gateway first saw the route, shown as the notebook's creation time
    behaviour: ProxyBehaviour = DEFAULT


RouteTable = dict[tuple[str, str], Route]


def load_routes(path: Path, previous: Mapping[tuple[str, str], Route] | None = None) -> RouteTable:
    """Parse and validate a routes file; `ValueError` names the file, the entry and the problem."""
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the routes file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(document) - {"route"})
    if unknown:
        raise ValueError(f"{path}: unknown top-level key(s) {', '.join(unknown)}; expected [[route]] entries")
    entries = document.get("route", [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise ValueError(f"{path}: 'route' must be an array of tables, written [[route]]")
    now = datetime.now(UTC)
    table: RouteTable = {}
    for index, entry in enumerate(entries, start=1):
        where = f"{path}: [[route]] entry {index}"
        namespace, name, url = _check_entry(where, entry)
        if (namespace, name) in table:
            raise ValueError(f"{where}: duplicate route for {namespace}/{name}")
        old = (previous or {}).get((namespace, name))
        since = old.since if old is not None and old.url == url else now
        table[namespace, name] = Route(namespace, name, url, since, _check_behaviour(where, entry))
    return table


def _check_entry(where: str, entry: dict[str, object]) -> tuple[str, str, URL]:
    unknown = sorted(set(entry) - set(ENTRY_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        expected = ", ".join(ENTRY_KEYS + OPTIONAL_KEYS)
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; expected {expected}")
    values: dict[str, str] = {}
    for key in ENTRY_KEYS:
        value = entry.get(key)
        if not isinstance(value, str):
            problem = "missing" if value is None else "not a string"
            raise ValueError(f"{where}: '{key}' is {problem}")
        values[key] = value
    for key in ("namespace", "name"):
        if not is_dns_label(values[key]):
            raise ValueError(
                f"{where}: {key} {values[key]!r} is not a DNS-1123 label "
                "(lowercase letters, digits and '-', at most 63 characters)"
            )
    return values["namespace"], values["name"], _check_url(where, values["url"])


def _check_behaviour(where: str, entry: dict[str, object]) -> ProxyBehaviour:
    """The entry's rewrite and headers, held to the rules a Notebook's annotations are; the file is
    the operator's, so a bad value stops the load instead of being left out."""
    rewrite = entry.get("rewrite_uri")
    if rewrite is not None and not isinstance(rewrite, str):
        raise ValueError(f"{where}: 'rewrite_uri' is not a string")
    if rewrite is not None and (reason := check_rewrite(rewrite)) is not None:
        raise ValueError(f"{where}: rewrite_uri {rewrite!r}: {reason}")
    headers = entry.get("request_headers", {})
    if not isinstance(headers, dict):
        raise ValueError(f"{where}: 'request_headers' must be a table of header names to strings")
    if len(headers) > MAX_HEADERS:
        raise ValueError(f"{where}: request_headers: more than {MAX_HEADERS} headers")
    checked: dict[str, tuple[str, str, str]] = {}
    for header, value in headers.items():
        reason = check_header(header, value)
        if reason is None and header.lower() in checked:
            reason = f"header {header!r} is named twice"
        if reason is not None:
            raise ValueError(f"{where}: request_headers: {reason}")
        checked[header.lower()] = (header, header.lower(), str(value))
    if rewrite is None and not checked:
        return DEFAULT
    return ProxyBehaviour(rewrite, tuple(checked.values()))


def _check_url(where: str, raw: str) -> URL:
    try:
        url = URL(raw)
    except ValueError as exc:
        raise ValueError(f"{where}: url {raw!r} is not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{where}: url {raw!r} must be http:// or https:// with a host")
    # The gateway builds the upstream path itself, so anything else in the URL would be silently dropped.
    if (
        url.user is not None
        or url.password is not None
        or url.path not in ("", "/")
        or url.query_string
        or url.fragment
    ):
        raise ValueError(
            f"{where}: url {raw!r} must be an origin such as http://127.0.0.1:8888 "
            "(no path, query or credentials; the gateway adds /notebook/<namespace>/<name>/)"
        )
    return url.origin()


def stamp(path: Path) -> Stamp | None:
    """(mtime_ns, size, inode), or None while the file is missing."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino)


class StaticBackend(WithoutKubernetes):
    """Routes to fixed upstreams listed in a file; it cannot create or stop notebook servers."""

    name = "static"

    def __init__(self, routes_file: Path, *, poll_interval_s: float = 0.5) -> None:
        self.routes_file = routes_file
        self.poll_interval_s = poll_interval_s
        self._routes: RouteTable = {}
        self._stamp: Stamp | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self._stamp = stamp(self.routes_file)  # before reading, so a write during the read is seen next poll
        self._routes = await asyncio.to_thread(load_routes, self.routes_file)
        log.info("static backend: %d route(s) from %s", len(self._routes), self.routes_file)
        self._watcher = asyncio.create_task(self._watch(), name="static-routes-watcher")

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    @property
    def synced(self) -> bool:
        return self._watcher is not None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            current = stamp(self.routes_file)
            if current == self._stamp:
                continue
            self._stamp = current  # remember even a bad version, so its error is logged once
            if current is None:
                log.error("static backend: %s is missing; keeping the last good routes", self.routes_file)
                continue
            try:
                routes = await asyncio.to_thread(load_routes, self.routes_file, self._routes)
            except ValueError as exc:
                log.error("static backend: keeping the last good routes: %s", exc)
                continue
            self._routes = routes  # one assignment: a lookup sees the old table or the new one
            log.info("static backend: reloaded %d route(s) from %s", len(routes), self.routes_file)

    def route(self, namespace: str, name: str) -> URL | None:
        found = self._routes.get((namespace, name))
        return None if found is None else found.url

    def phase_counts(self) -> dict[Phase, int]:
        return dict(Counter(self._notebook(route).status.phase for route in self._routes.values()))

    def proxy_behaviour(self, namespace: str, name: str) -> ProxyBehaviour:
        found = self._routes.get((namespace, name))
        return DEFAULT if found is None else found.behaviour

    async def list(self, namespace: str) -> list[Notebook]:
        routes = self._routes
        return [self._notebook(route) for key, route in sorted(routes.items()) if key[0] == namespace]

    async def list_all(self) -> builtins.list[Notebook]:
        return [self._notebook(route) for _, route in sorted(self._routes.items())]

    async def get(self, namespace: str, name: str) -> Notebook:
        found = self._routes.get((namespace, name))
        if found is None:
            raise NotebookNotFound(f"There is no notebook server {namespace}/{name} in {self.routes_file}.")
        return self._notebook(found)

    def _notebook(self, route: Route) -> Notebook:
        return Notebook(
            namespace=route.namespace,
            name=route.name,
            # The gateway does not know what runs upstream; empty quantities say "unknown".
            spec=NotebookSpec(name=route.name, image="(static upstream)", cpu="", memory=""),
            status=Status("ready"),
            created_at=route.since,
            notes=(
                f"The static backend routes to a fixed upstream ({route.url}) listed in {self.routes_file}; "
                "its image and resources are not known to the gateway.",
            ),
        )

    async def create(self, namespace: str, spec: NotebookSpec, *, creator: str | None) -> Notebook:
        self._refuse("create")

    async def stop(self, namespace: str, name: str) -> Notebook:
        self._refuse("stop")

    async def start(self, namespace: str, name: str) -> Notebook:
        self._refuse("start")

    async def delete(self, namespace: str, name: str, *, volumes: bool = False) -> Deletion:
        self._refuse("delete")

    def _refuse(self, verb: str) -> NoReturn:
        raise MethodNotSupported(
            f"The static backend serves fixed routes from {self.routes_file}; "
            f"it cannot {verb} notebook servers. Edit that file instead."
        )
