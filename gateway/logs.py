"""Logging set-up: JSON lines with the request id on every record, and `scrub()` for what we log.

`configure()` is called once, from `cli.py`; every module just uses `logging.getLogger(__name__)`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TextIO
from urllib.parse import unquote_plus

# Set by the `request_context` middleware for the duration of each request; tasks a request
# starts inherit it, so their lines carry the id too.
REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")

# Query keys whose values are secrets or single-use credentials: never written to a log.
SECRET_QUERY_KEYS = frozenset(
    {"code", "state", "nonce", "code_verifier", "assertion", "client_assertion", "ticket", "_xsrf"}
    | {"sig", "signature", "x-amz-signature", "x-goog-signature", "session", "sid"}
)
# Any key that names a token, a secret or a password anywhere (`id_token_hint`, `logout_token`, `client_secret`,
# `passwd`), and any that ends in `key` (`api_key`), is scrubbed too.
_SECRET_PARTS = ("token", "secret", "password", "passwd", "credential")
_SECRET_SUFFIXES = ("key",)
SCRUBBED = "***"


def is_secret_key(key: str) -> bool:
    """True for a query key whose value must never be logged."""
    name = key.lower()
    return name in SECRET_QUERY_KEYS or name.endswith(_SECRET_SUFFIXES) or any(p in name for p in _SECRET_PARTS)


def scrub(path_qs: str) -> str:
    """`path_qs` with the values of secret query keys replaced by `***`; the rest left byte for byte."""
    path, sep, query = path_qs.partition("?")
    if not sep:
        return path
    # Split by hand rather than parse and re-encode, so the log shows what the client really sent.
    parts = []
    for pair in query.split("&"):
        raw_key, eq, _ = pair.partition("=")
        if is_secret_key(unquote_plus(raw_key)):
            parts.append(f"{raw_key}={SCRUBBED}")
        else:
            parts.append(pair if eq or not pair else raw_key)
    return f"{path}?{'&'.join(parts)}"


_STARTED = time.time()


class AccessRecord(logging.LogRecord):
    """An access line's record, made without what `LogRecord.__init__` looks up for every record (the caller's
    file and function, the thread and process, the time's parts): one is made per request. `fields` are the
    line's structured fields in the order it shows them; like `extra`, they are attributes of the record too,
    so filters and text formats see them as they see any record's."""

    def __init__(self, name: str, message: str, fields: dict[str, object]) -> None:
        self.__dict__.update(fields)
        self.fields = fields
        self.name = name
        self.msg = message
        self.args = ()
        self.levelname = "INFO"
        self.levelno = logging.INFO
        self.pathname = __file__
        self.filename = "logs.py"
        self.module = "logs"
        self.lineno = 0
        self.funcName = "access"
        self.exc_info = None
        self.exc_text = None
        self.stack_info = None
        self.created = created = time.time()
        self.msecs = (created - int(created)) * 1000
        self.relativeCreated = (created - _STARTED) * 1000  # since this module was loaded, near enough
        self.thread = self.threadName = self.processName = self.process = None


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current request id, unless the caller passed one in `extra`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, and any `extra` fields."""

    _STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "request_id", "fields"}
    # Built once: `json.dumps(..., default=str)` would build a new encoder for every line, and the
    # access log writes one line per request.
    _encoder = json.JSONEncoder(default=str)  # default=str: an odd `extra` value is logged as text

    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")  # one tuple, so threads never see half an update

    def _time(self, created: float) -> str:
        # Most lines share their second with the one before, so format the date part once per second.
        second, text = self._second
        if int(created) != second:
            second = int(created)
            text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = (second, text)
        return f"{text}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        if type(record) is AccessRecord:  # its fields are known and in order: no sorting out of the record's
            line: dict[str, object] = {
                "time": self._time(record.created),
                "level": record.levelname,
                "logger": record.name,
                "message": record.msg,
            }
            line.update(record.fields)
            return self._encoder.encode(line)
        fields = record.__dict__
        entry: dict[str, object] = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": fields.get("request_id", REQUEST_ID.get()),
        }
        for key in sorted(fields.keys() - self._STANDARD):
            entry[key] = fields[key]
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return self._encoder.encode(entry)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def make_handler(fmt: str = "json", stream: TextIO | None = None) -> logging.Handler:
    """A handler writing `json` lines or `text` for people, with the request id on every record."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    return handler


def configure(level: str = "INFO", fmt: str = "json") -> None:
    """Send every log record to stderr, as JSON lines or as text for people."""
    # No format prints the thread or process: not looking them up makes every record cheaper (the logging
    # HOWTO's "Optimization"), and the access log makes one record per request.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [make_handler(fmt)]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(level)
