"""`StaticBackend`: fixed routes from a TOML file, reloaded when it changes."""

from __future__ import annotations

from pathlib import Path


class StaticBackend:
    name = "static"

    def __init__(self, routes_file: Path) -> None:
        self.routes_file = routes_file
