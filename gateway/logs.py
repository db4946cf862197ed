"""Logging set-up: JSON lines with the request id on every record, and `scrub()` for what we log.

`configure()` is called once, from `cli.py`; every module just uses `logging.getLogger(__name__)`.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode

# Set by the `request_context` middleware for the duration of each request.
REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")

# Query keys whose values are secrets or single-use credentials: never written to a log.
SECRET_QUERY_KEYS = frozenset({"code", "state", "token", "key", "access_token", "id_token", "_xsrf"})


def scrub(path_qs: str) -> str:
    """`path_qs` with the values of secret query keys replaced by `***`."""
    path, sep, query = path_qs.partition("?")
    if not sep:
        return path
    pairs = parse_qsl(query, keep_blank_values=True)
    cleaned = [(k, "***" if k.lower() in SECRET_QUERY_KEYS else v) for k, v in pairs]
    return f"{path}?{urlencode(cleaned, safe='/*:,')}"


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, and any `extra` fields."""

    _STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "request_id"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        for key, value in vars(record).items():
            if key not in self._STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "INFO", fmt: str = "json") -> None:
    """Send every log record to stderr, as JSON lines or as text for people."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(level)
