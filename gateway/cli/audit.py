"""`notebook-gateway audit verify DIR` (is the hash chain whole, and does it hold what was kept of it
elsewhere: anchors, the Redis stream?) and `notebook-gateway audit query` (the API's filters, for the
terminal: JSON lines or CSV, newest first)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import redis.asyncio as redis
from redis.exceptions import RedisError

from .. import config
from ..audit.index import FileIndex
from ..audit.query import MAX_LIMIT, AuditStore, BadQuery, Filter, StoreUnavailable, make_filter, to_csv
from ..audit.redis_sink import RedisAuditStore
from ..audit.stream_copy import read_chain_id, read_stream_copy
from ..audit.verify import Anchor, Report, StreamCopy, verify
from ..redis_connection import close_redis, open_redis

FILTERS = ("user", "namespace", "notebook", "action", "outcome", "since", "until", "text")
# `--redis` with no URL: the gateway's own Redis, opened from its settings by the factory every replica uses, so
# Sentinel, ACL users, TLS and passwords read from files work here as they do in `serve`.
FROM_SETTINGS = "settings"
REDIS_HELP = (
    "with no URL: the gateway's Redis from its settings (GATEWAY_REDIS_URL, or GATEWAY_REDIS_SENTINELS, "
    "with their credentials); put it after the directory, or write --redis=URL"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="audit_command", required=True)
    check = commands.add_parser("verify", help="check the hash chain of an audit directory; exit 1 if it was altered")
    check.add_argument("directory", type=Path, help="the audit directory (GATEWAY_AUDIT_DIR), or a copy of it")
    check.add_argument("--key-file", type=Path, help="file holding the HMAC key (default: GATEWAY_AUDIT_HMAC_KEY)")
    check.add_argument("--complete", action="store_true", help="fail if the chain does not begin at event 1")
    check.add_argument(
        "--anchor",
        action="append",
        default=[],
        type=_anchor,
        metavar="SEQ:HASH",
        help="fail unless the files hold event SEQ with this hash (an `anchor:` an earlier verify printed); repeatable",
    )
    check.add_argument(
        "--redis",
        nargs="?",
        const=FROM_SETTINGS,
        metavar="URL",
        help="also compare with this directory's events in the Redis stream (catches events cut from the end); "
        + REDIS_HELP,
    )
    search = commands.add_parser("query", help="search the audit log (newest first) as JSON lines or CSV")
    source = search.add_mutually_exclusive_group()
    source.add_argument("--dir", type=Path, help="an audit directory (default: GATEWAY_AUDIT_DIR)")
    source.add_argument(
        "--redis",
        nargs="?",
        const=FROM_SETTINGS,
        metavar="URL",
        help="read the cluster-wide stream from this Redis instead; " + REDIS_HELP,
    )
    search.add_argument("--user", help="events by this user")
    search.add_argument("--namespace", help="events in this namespace")
    search.add_argument("--notebook", help="events on this notebook server (with --namespace)")
    search.add_argument("--action", help="an action (notebook.create) or a family (auth.*)")
    search.add_argument("--outcome", choices=("allowed", "denied", "failed"))
    search.add_argument("--since", help="ISO time or date, or an age: 15m, 24h, 7d")
    search.add_argument("--until", help="ISO time or date, or an age (exclusive)")
    search.add_argument("--text", help="case-insensitive text anywhere in the event")
    search.add_argument("--limit", type=int, default=100, help="at most this many events (0: all); default 100")
    search.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")


def run(args: argparse.Namespace) -> int:
    if args.audit_command == "verify":
        return run_verify(args)
    return asyncio.run(run_query(args))


def _settings(args: argparse.Namespace) -> config.Settings | None:
    try:
        return config.load(args.config)
    except config.ConfigError as exc:
        print("notebook-gateway: invalid configuration:", *exc.problems, sep="\n  ", file=sys.stderr)
        return None


def _anchor(text: str) -> Anchor:
    try:
        return Anchor.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_verify(args: argparse.Namespace) -> int:
    if not args.directory.is_dir():
        print(f"notebook-gateway: {args.directory} is not a directory", file=sys.stderr)
        return 2
    if args.key_file is not None:
        key: bytes | None = args.key_file.read_bytes().rstrip(b"\r\n")
    else:
        settings = _settings(args)
        if settings is None:
            return 2
        key = settings.audit_hmac_key.get_secret_value().encode() if settings.audit_hmac_key else None
    copy: StreamCopy | None = None
    if args.redis is not None:
        # Redis first, then the files: the shipper reads the files, so whatever the stream holds now was
        # in the files before; read the other way round, events shipped meanwhile would look cut.
        chain_id = read_chain_id(args.directory)
        if chain_id is None:
            print(
                f"notebook-gateway: cannot check against Redis: {args.directory} has no chain-id file", file=sys.stderr
            )
            return 2
        client = _redis_client(args)
        if client is None:
            return 2
        try:
            copy = asyncio.run(_read_copy(client, chain_id))
        except (RedisError, OSError, ValueError) as exc:
            print(f"notebook-gateway: cannot check against Redis: {exc}", file=sys.stderr)
            return 2
    report = verify(args.directory, key, complete=args.complete, anchors=args.anchor, copy=copy)
    _print_report(report, copy)
    if report.problem is not None:
        print(report.problem)
        if report.problem.kind == "missing_key":
            print("give the key with --key-file or GATEWAY_AUDIT_HMAC_KEY", file=sys.stderr)
            return 2
        if report.problem.kind == "unchecked":
            print("CANNOT CHECK: nothing in Redis to compare with", file=sys.stderr)
            return 2
        print("FAILED: the audit log was tampered with (the first problem is shown)", file=sys.stderr)
        return 1
    if report.events:
        print(f"OK: the chain is whole. Last event: {report.last_seq} at {report.last_time}, hash {report.last_hash}")
        print(f"anchor: {report.anchor}")
        if copy is None and not args.anchor:
            print("(keep that anchor elsewhere; `verify --anchor` with it later catches events cut from the end)")
    return 0


def _redis_client(args: argparse.Namespace) -> redis.Redis | None:
    """The Redis named by `--redis URL`, or (bare `--redis`) the gateway's own; None after reporting bad settings."""
    if args.redis != FROM_SETTINGS:
        return redis.Redis.from_url(args.redis, socket_timeout=10, socket_connect_timeout=5)
    settings = _settings(args)
    return open_redis(settings) if settings is not None else None


async def _read_copy(client: redis.Redis, chain_id: str) -> StreamCopy:
    try:
        return await read_stream_copy(client, chain_id)
    finally:
        await close_redis(client)


def _print_report(report: Report, copy: StreamCopy | None) -> None:
    span = f" ({report.first_seq}-{report.last_seq})" if report.events else ""
    print(f"checked {report.files} file(s), {report.events} event(s){span}" + (f", {report.alg}" if report.alg else ""))
    for note in report.notes:
        print(note)
    for anchor in report.anchors:
        print(f"anchor {anchor.seq} matches")
    if copy is not None and report.problem is None:
        compared, others = report.compared, report.events - len(report.compared)
        span = f" ({min(compared)}-{max(compared)})" if compared else ""
        print(
            f"compared {len(compared)} of {report.events} event(s){span} with the Redis stream (chain {copy.chain_id})"
            + (f"; the other {others} are not in it (trimmed, or not shipped yet)" if others else "")
        )


async def run_query(args: argparse.Namespace) -> int:
    try:
        filter = make_filter({name: getattr(args, name) or "" for name in FILTERS})
    except BadQuery as exc:
        print(f"notebook-gateway: --{exc.field}: {exc}", file=sys.stderr)
        return 2
    if args.limit < 0:
        print("notebook-gateway: --limit must be 0 (all) or more", file=sys.stderr)
        return 2
    client = _redis_client(args) if args.redis else None
    store: AuditStore
    if args.redis and client is None:
        return 2
    if client is not None:
        store = RedisAuditStore(client)
    else:
        directory = args.dir
        if directory is None:
            settings = _settings(args)
            if settings is None:
                return 2
            directory = settings.audit_dir
        if not directory.is_dir():
            print(f"notebook-gateway: {directory} is not a directory", file=sys.stderr)
            return 2
        store = FileIndex(directory)
    try:
        return await _print_events(store, filter, args.limit, args.format)
    except StoreUnavailable as exc:
        print(f"notebook-gateway: {exc}", file=sys.stderr)
        return 1
    finally:
        if client is not None:
            await close_redis(client)
        if isinstance(store, FileIndex):
            await store.stop()


async def _print_events(store: AuditStore, filter: Filter, limit: int, fmt: str) -> int:
    remaining = limit or None
    cursor: str | None = None
    first = True
    while True:
        size = min(MAX_LIMIT, remaining) if remaining is not None else MAX_LIMIT
        page = await store.search(filter, cursor=cursor, limit=size)
        if fmt == "csv":
            sys.stdout.write(to_csv(page.events, header=first))
        else:
            for record in page.events:
                sys.stdout.write(json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n")
        first = False
        if remaining is not None:
            remaining -= len(page.events)
        if page.next_cursor is None or remaining == 0:
            return 0
        cursor = page.next_cursor
