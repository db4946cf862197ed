"""What the NEW SERVER page shows of the spawner config: the server types with their images, the
limits' defaults, the GPU vendors and counts, the affinity and toleration choices and shared memory,
each left out where the backend cannot run it (the local backend runs JupyterLab processes, not pods)
and marked where the config makes it read-only. The API checks all of it again (`notebook_form`)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ..notebook_form import PULL_POLICIES
from ..quantities import scale_quantity
from ..spawner import PodChoice, SpawnerConfig

# server type -> (its name in the form, the id of its image select, that select's label)
SERVER_TYPES = {
    "jupyter": ("JupyterLab", "image", "Image"),
    "group-one": ("VS Code", "image-group-one", "VS Code image"),
    "group-two": ("RStudio", "image-group-two", "RStudio image"),
}


def spawner_form(spawner: SpawnerConfig, *, pods: bool) -> dict[str, object]:
    """The template's context for the form's fields; `pods`: the backend runs notebook servers as pods."""
    kinds = spawner.server_types if pods else ("jupyter",)
    server_types = []
    for kind in kinds:
        label, select_id, image_label = SERVER_TYPES[kind]
        default, images = spawner.images_for(kind)
        choices = list(dict.fromkeys(images or (default,)))
        server_types.append(
            {
                "value": kind,
                "label": label,
                "select_id": select_id,
                "image_label": image_label,
                "default": default,
                "images": [{"value": image, "label": image_label_of(image, spawner)} for image in choices],
            }
        )
    scheduling = [
        _choice("affinity-config", "affinityConfig", "Affinity", spawner.affinity_default, spawner.affinity_options),
        _choice(
            "toleration-group", "tolerationGroup", "Tolerations", spawner.toleration_default, spawner.toleration_options
        ),
    ]
    return {
        "pods": pods,
        "server_types": server_types,
        "pull_policies": PULL_POLICIES,
        "read_only": spawner.read_only,
        "limit_hints": {
            **_limit_hint("cpu", spawner.cpu, spawner.cpu_limit_factor),
            **_limit_hint("memory", spawner.memory, spawner.memory_limit_factor),
        },
        "gpu_vendors": spawner.gpu_vendors if pods else (),
        "scheduling": [choice for choice in scheduling if choice["options"]] if pods else [],
        "default_volumes": [default_volume(volume) for volume in spawner.data_volumes],
        "default_configurations": spawner.configurations,
    }


def default_volume(volume: dict[str, Any]) -> dict[str, str]:
    """A data volume of the config's `dataVolumes.value` as the page's script fills it in: `kind` (new
    or existing), `name` (a new claim's name may hold `{notebook-name}`), `size`, `mount`, `accessMode`.
    Already checked as a request's body when the app started (`notebook_form.check_defaults`)."""
    existing = volume.get("existingSource")
    if isinstance(existing, dict):
        claim = existing.get("persistentVolumeClaim") or {}
        name = claim.get("claimName", "") if isinstance(claim, dict) else ""
        return {"kind": "existing", "name": str(name), "size": "", "mount": str(volume["mount"]), "accessMode": ""}
    pvc = volume.get("newPvc")
    pvc = pvc if isinstance(pvc, dict) else {}
    metadata, spec = pvc.get("metadata") or {}, pvc.get("spec") or {}
    resources = spec.get("resources") or {}
    modes = spec.get("accessModes") or [""]
    return {
        "kind": "new",
        "name": str(metadata.get("name", "")),
        "size": str((resources.get("requests") or {}).get("storage", "")),
        "mount": str(volume["mount"]),
        "accessMode": str(modes[0]),
    }


def image_label_of(image: str, spawner: SpawnerConfig) -> str:
    """An image as the config wants it shown: without its registry (`hideRegistry`) or tag (`hideTag`)."""
    shown = image
    first, slash, rest = shown.partition("/")
    if spawner.hide_registry and slash and ("." in first or ":" in first or first == "localhost"):
        shown = rest
    if spawner.hide_tag:
        name, colon, tag = shown.rpartition(":")
        if colon and "/" not in tag:
            shown = name
    return shown


def _choice(element_id: str, field: str, label: str, default: str, options: tuple[PodChoice, ...]) -> dict[str, object]:
    return {"id": element_id, "field": field, "label": label, "default": default, "options": options}


def _limit_hint(kind: str, request: str, factor: str | None) -> dict[str, str]:
    """The limit an empty field gets (request x the config's limitFactor), as placeholder and hint."""
    if factor is None:
        return {kind: "", f"{kind}_text": "no limit."}
    try:
        example = scale_quantity(request, Decimal(factor))
    except ValueError:
        example = ""
    return {kind: example, f"{kind}_text": f"the request × {factor}."}
