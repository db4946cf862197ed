"""Request bodies as pydantic models: the one description of a body, which the handlers check it with and
`/api/openapi.json` publishes (web/api_models.py gathers them), and `parse_body`, which turns pydantic's
`ValidationError` into the gateway's 400 naming the field at fault.

Models are strict (`"yes"` is not a boolean, `1` not a string) and refuse unknown fields, so a typo never
passes silently. Field paths read as the Kubernetes API writes them: `secretMounts[0].mountPath`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from .errors import BadRequest

# pydantic's wording for the mistakes a hand-written client makes most, as the gateway's checks said them.
PLAIN_WORDS = {
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "int_type": "must be a whole number",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "missing": "is required",
}


class Model(BaseModel):
    """A request body (or a part of one): strict types, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M], body: object, *, error: type[BadRequest] = BadRequest, at: str = "") -> M:
    """`body` (parsed JSON) as `model`, or `error` (a 400) naming the field at fault and what is wrong with
    it. Unknown fields are named first, all of them. `at`: where `body` sits in a larger document."""
    if not isinstance(body, dict):
        if at:
            raise error(f"{at} must be an object.", field=at)
        fields = ", ".join(f'"{name}"' for name in model.model_fields)
        required = next((name for name, info in model.model_fields.items() if info.is_required()), None)
        raise error(f"The body must be a JSON object: {{{fields}}}.", field=required)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise refusal(exc.errors(), error=error, at=at, model=model) from None


def refusal(
    errors: Sequence[ErrorDetails],
    *,
    error: type[BadRequest] = BadRequest,
    at: str = "",
    model: type[BaseModel] | None = None,
) -> BadRequest:
    """The first of pydantic's `errors` as `error`; every unknown field when there are any. A field of `model`
    with a `title` is called by it (the label a form shows beside the field: "Memory", not "memory")."""
    unknown = [field_path(item["loc"], at) for item in errors if item["type"] == "extra_forbidden"]
    if unknown:
        return error(f"Unknown field(s): {', '.join(unknown)}.", field=unknown[0])
    first = errors[0]
    where = field_path(first["loc"], at)
    words = PLAIN_WORDS.get(first["type"]) or _expected(first) or first["msg"].removeprefix("Value error, ")
    field_info = model.model_fields.get(str(first["loc"][0])) if model is not None and len(first["loc"]) == 1 else None
    subject = field_info.title if field_info is not None and field_info.title else where
    return error(f"{subject}: {words}." if subject else f"{words}.", field=where or None)


def field_path(loc: Sequence[int | str], at: str = "") -> str:
    """`("env", 0, "name")` -> `env[0].name` (under `at`, when given)."""
    path = at
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else part
    return path


def _expected(item: ErrorDetails) -> str:
    context: dict[str, Any] = dict(item.get("ctx") or {})
    if item["type"] in ("literal_error", "enum") and "expected" in context:
        return f"must be one of {context['expected']}; got {str(item['input'])[:100]!r}"
    return ""
