"""The spawner form's defaults and standard images, read from a file shaped like Kubeflow's
`spawner_ui_config.yaml` (only `spawnerFormDefaults` matters to us)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

DEFAULT_FILE = "spawner_ui_config.yaml"


@dataclass(frozen=True, slots=True)
class SpawnerConfig:
    image: str
    images: tuple[str, ...]
    allow_custom_image: bool
    cpu: str
    memory: str
    cpu_limit_factor: str | None
    memory_limit_factor: str | None
    image_pull_policy: str
    workspace_mount: str
    workspace_name_template: str  # "{notebook-name}-workspace"
    workspace_size: str
    workspace_access_mode: str

    @classmethod
    def load(cls, path: Path | None = None) -> SpawnerConfig:
        """Read `path`, or the copy shipped with the gateway. Raises ValueError on a malformed file."""
        if path is None:
            text = resources.files("gateway").joinpath(DEFAULT_FILE).read_text()
        else:
            try:
                text = path.read_text()
            except OSError as exc:  # e.g. unreadable: a clear line at start, not a traceback
                raise ValueError(f"spawner config {path} cannot be read: {exc.strerror or exc}") from None
        try:
            return cls.from_mapping(yaml.safe_load(text)["spawnerFormDefaults"])
        except (KeyError, TypeError, yaml.YAMLError) as exc:
            raise ValueError(f"spawner config {path or DEFAULT_FILE} is malformed: {exc!r}") from exc

    @classmethod
    def from_mapping(cls, form: dict[str, Any]) -> SpawnerConfig:
        workspace = form.get("workspaceVolume", {}).get("value", {}) or {}
        new_pvc = workspace.get("newPvc", {})
        return cls(
            image=str(form["image"]["value"]),
            images=tuple(str(i) for i in form["image"].get("options", [])),
            allow_custom_image=bool(form.get("allowCustomImage", True)),
            cpu=str(form["cpu"]["value"]),
            memory=str(form["memory"]["value"]),
            cpu_limit_factor=_opt_str(form["cpu"].get("limitFactor")),
            memory_limit_factor=_opt_str(form["memory"].get("limitFactor")),
            image_pull_policy=str(form.get("imagePullPolicy", {}).get("value", "IfNotPresent")),
            workspace_mount=str(workspace.get("mount", "/home/jovyan")),
            workspace_name_template=str(new_pvc.get("metadata", {}).get("name", "{notebook-name}-workspace")),
            workspace_size=str(new_pvc.get("spec", {}).get("resources", {}).get("requests", {}).get("storage", "5Gi")),
            workspace_access_mode=str((new_pvc.get("spec", {}).get("accessModes") or ["ReadWriteOnce"])[0]),
        )


def _opt_str(value: object) -> str | None:
    return None if value in (None, "", "none") else str(value)
