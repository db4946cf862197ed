"""`read_stream_copy()`: what the Redis audit stream holds of one directory's chain, for `audit verify
--redis` to hold the files against. Several replicas ship to one stream, each numbering its own chain
from 1, so entries are told apart by the chain id each carries (field `c`, from the `chain-id` file).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import redis.asyncio as redis

from .redis_sink import PREFIX, position_key
from .verify import CopiedEvent, StreamCopy

PAGE = 1000  # stream entries per XRANGE: one round trip each, and Redis never busy for long


def read_chain_id(directory: Path) -> str | None:
    """The directory's chain id (its `chain-id` file), or None when it has none. Never creates one."""
    try:
        return (directory / "chain-id").read_text().strip() or None
    except FileNotFoundError:
        return None


async def read_stream_copy(client: redis.Redis, chain_id: str, *, prefix: str = PREFIX) -> StreamCopy:
    """Walk the whole stream (oldest first) and keep this chain's events. Raises RedisError or OSError
    when Redis cannot be read: the caller must then say it could not check, never that all is well."""
    copy = StreamCopy(chain_id)
    shipped = await client.get(position_key(prefix, chain_id))
    copy.shipped = int(shipped) if shipped is not None else None
    label = chain_id.encode()
    low = "-"
    while True:
        entries = await client.xrange(prefix, min=low, max="+", count=PAGE) or []
        for _, fields in entries:
            if fields is None:
                continue
            chain = fields.get(b"c")
            if chain is None:
                copy.unlabelled += 1
            elif chain == label:
                _keep(copy, fields.get(b"e"))
        if len(entries) < PAGE:
            return copy
        last = entries[-1][0]
        low = "(" + (last.decode() if isinstance(last, bytes) else str(last))


def _keep(copy: StreamCopy, line: object) -> None:
    record: object = None
    if isinstance(line, bytes):
        with contextlib.suppress(ValueError):
            record = json.loads(line)
    seq = record.get("seq") if isinstance(record, dict) else None
    digest = record.get("hash") if isinstance(record, dict) else None
    if not isinstance(line, bytes) or not isinstance(seq, int) or not isinstance(digest, str):
        copy.unreadable += 1
        return
    # An event shipped twice (Redis lost its position) keeps its first, oldest copy: the one nearer the original.
    copy.events.setdefault(seq, CopiedEvent(digest, hashlib.sha256(line).digest()))
