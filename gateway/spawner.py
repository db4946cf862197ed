"""The spawner form's defaults and standard images, read from a file shaped like Kubeflow's
`spawner_ui_config.yaml` (only `spawnerFormDefaults` matters to us): each field's `value`, whether it is
`readOnly` (the user cannot change it), and the admin's maximums, which Kubeflow's file lacks: `max` and
`limitMax` under `cpu` and `memory`, `maxSize` under `workspaceVolume` and `dataVolumes`."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .quantities import parse_quantity

DEFAULT_FILE = "spawner_ui_config.yaml"
# The spawner config's fields that may be `readOnly`, as the form's keys name them.
READ_ONLY_FIELDS = {
    "image": ("image", "customImage"),
    "imagePullPolicy": ("imagePullPolicy",),
    "cpu": ("cpu", "cpuLimit"),
    "memory": ("memory", "memoryLimit"),
    "workspaceVolume": ("workspace", "noWorkspace"),
    "dataVolumes": ("datavols",),
    "configurations": ("configurations",),
}


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
    read_only: frozenset[str] = frozenset()  # the form's keys the user must leave at their defaults
    # The admin's ceilings (Kubernetes quantities; None: none): requests, limits and new volumes' sizes.
    maximums: dict[str, str] = field(default_factory=dict)  # form key -> quantity, e.g. {"cpu": "8"}

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
        except (KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
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
            read_only=frozenset(
                key
                for section, keys in READ_ONLY_FIELDS.items()
                if isinstance(form.get(section), dict) and form[section].get("readOnly") is True
                for key in keys
            ),
            maximums=_maximums(form),
        )


def _maximums(form: dict[str, Any]) -> dict[str, str]:
    """Form key -> the admin's maximum, from `cpu.max`, `cpu.limitMax`, `memory.max`, `memory.limitMax`,
    `workspaceVolume.maxSize` and `dataVolumes.maxSize`. Checked by `parse_quantity` at load time."""
    where = {
        "cpu": ("cpu", "max"),
        "cpuLimit": ("cpu", "limitMax"),
        "memory": ("memory", "max"),
        "memoryLimit": ("memory", "limitMax"),
        "workspace": ("workspaceVolume", "maxSize"),
        "datavols": ("dataVolumes", "maxSize"),
    }
    found = {}
    for key, (section, name) in where.items():
        value = _opt_str((form.get(section) or {}).get(name))
        if value is not None:
            parse_quantity(value)  # a ValueError here is a malformed file
            found[key] = value
    return found


def _opt_str(value: object) -> str | None:
    return None if value in (None, "", "none") else str(value)
