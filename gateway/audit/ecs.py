"""`to_ecs()`: an audit event as Elastic Common Schema (ECS) fields, for `GET /api/audit/export
?format=ecs`. Elasticsearch, OpenSearch and most SIEMs (Elastic Security, Splunk with its ECS add-on,
Sentinel's ASIM mappings) ingest these JSON lines without a parser. docs/security.md has the table.

ECS has no field for a few of ours; they go under `notebook_gateway.*`, as ECS asks of custom fields.
"""

from __future__ import annotations

from collections.abc import Mapping

ECS_VERSION = "8.11.0"

# event.category / event.type by action family and action (ECS allowed values).
_CATEGORY = {
    "auth": ["authentication"],
    "notebook": ["process"],
    "access": ["web"],
    "policy": ["iam", "configuration"],
    "profile": ["iam"],
    "audit": ["database"],
    "configuration": ["configuration"],
}
_TYPE = {
    "auth.login": ["start"],
    "auth.logout": ["end"],
    "auth.refresh_failed": ["info"],
    "auth.rate_limited": ["denied"],
    "notebook.create": ["creation"],
    "notebook.start": ["start"],
    "notebook.stop": ["end"],
    "notebook.delete": ["deletion"],
    "notebook.discovered": ["info"],
    "notebook.access": ["access"],
    "access.denied": ["denied"],
    "access.denied_summary": ["denied"],
    "policy.grant": ["change", "group"],
    "policy.revoke": ["change", "group"],
    "policy.reload": ["change"],
    "profile.create": ["creation"],
    "profile.delete": ["deletion"],
    "audit.read": ["access"],
    "configuration.create": ["creation"],
    "configuration.delete": ["deletion"],
}
# Our outcome -> ECS event.outcome (ECS has no "denied": a denial is a failure of the attempt).
_OUTCOME = {"allowed": "success", "denied": "failure", "failed": "failure"}


def to_ecs(record: Mapping[str, object]) -> dict[str, object]:
    """The ECS document for one event (`GatewayEvent.to_record()` or a stored line): nested objects,
    no empty values."""
    action = str(record.get("action", ""))
    details = record.get("details") if isinstance(record.get("details"), dict) else {}
    assert isinstance(details, dict)
    actor = record.get("actor")
    event: dict[str, object] = {
        "kind": "event",
        "module": "notebook_gateway",
        "dataset": "notebook_gateway.audit",
        "id": record.get("event_id"),
        "action": action,
        "category": _CATEGORY.get(action.partition(".")[0], ["host"]),
        "type": _TYPE.get(action, ["info"]),
        "outcome": _OUTCOME.get(str(record.get("outcome")), "unknown"),
        "reason": record.get("reason") or None,
        "sequence": record.get("seq"),
        "hash": record.get("hash"),
    }
    document: dict[str, object] = {
        "@timestamp": record.get("time"),
        "ecs": {"version": ECS_VERSION},
        "event": event,
        "user": {
            "name": actor if actor and actor != "-" else None,
            "group": {"name": record.get("groups") or None},
        },
        "client": {"ip": record.get("client_ip")},
        "source": {"ip": record.get("client_ip")},
        "user_agent": {"original": record.get("user_agent")},
        "http": {
            "request": {"id": record.get("request_id"), "method": details.get("method")},
            "response": {"status_code": details.get("status")},
        },
        "url": {"path": details.get("path")},
        "orchestrator": {
            "type": "kubernetes",
            "namespace": record.get("namespace"),
            "resource": {"type": "notebook", "name": record.get("notebook")} if record.get("notebook") else None,
        },
        "notebook_gateway": {
            "outcome": record.get("outcome"),
            "auth_method": record.get("auth_method"),
            "session": record.get("session"),
            "schema_version": record.get("version"),
            "details": details or None,
            "chain": {"prev": record.get("prev"), "alg": record.get("alg")},
        },
    }
    pruned = _prune(document)
    assert isinstance(pruned, dict)
    if not record.get("namespace"):
        pruned.pop("orchestrator", None)  # "kubernetes" alone says nothing about this event
    return pruned


def _prune(value: object) -> object:
    """Drop None, empty strings and emptied objects, so a SIEM does not index blanks."""
    if isinstance(value, dict):
        kept = {key: _prune(item) for key, item in value.items()}
        return {key: item for key, item in kept.items() if item not in (None, "", {}, [])}
    return value
