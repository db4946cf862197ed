"""The policy stores: atomic writes that survive a crash, versions checked on write, concurrent
writers on one file losing nothing, and noticing edits made on disk."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.authz.rules import EMPTY, PolicyDoc, PolicyError, Rule, make_rule, parse_policy
from gateway.authz.stores import FilePolicyStore

BOB = make_rule("user:bob@example.com", "team-a", "edit")


def grant(doc: PolicyDoc) -> PolicyDoc:
    return doc.with_rule(BOB)


async def test_a_missing_file_is_created_with_its_header(tmp_path: Path) -> None:
    store = FilePolicyStore(tmp_path / "new" / "policy.csv")
    doc = await store.load()
    assert doc.rules == () and doc.version == EMPTY.version
    assert (tmp_path / "new" / "policy.csv").read_text().startswith("# Notebook Gateway policies")


async def test_an_update_writes_the_file_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = FilePolicyStore(tmp_path / "policy.csv")
    await store.load()
    before, after = await store.update(grant)
    assert before.version != after.version
    assert parse_policy((tmp_path / "policy.csv").read_bytes()).rules == (BOB,)
    assert sorted(os.listdir(tmp_path)) == [".policy.csv.lock", "policy.csv"]


async def test_a_crash_before_the_rename_leaves_the_old_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "policy.csv"
    store = FilePolicyStore(path)
    await store.load()
    old = path.read_bytes()
    # A real process, killed (SIGKILL) after writing and syncing its temporary file, before the rename.
    script = f"""
        import asyncio, os, signal
        from pathlib import Path
        from gateway.authz.rules import make_rule
        from gateway.authz.stores import FilePolicyStore
        os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
        rule = make_rule("user:mallory@example.com", "*", "cluster-admin")
        asyncio.run(FilePolicyStore(Path({str(path)!r})).update(lambda doc: doc.with_rule(rule)))
    """
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", textwrap.dedent(script), cwd=Path.cwd())
    assert await proc.wait() == -signal.SIGKILL
    assert path.read_bytes() == old
    assert any(name.endswith(".tmp") for name in os.listdir(tmp_path))  # the half-done write, never renamed
    assert (await FilePolicyStore(path).update(grant))[1].rules == (BOB,)


async def test_two_stores_on_one_file_lose_no_update(tmp_path: Path) -> None:
    path = tmp_path / "policy.csv"
    one, two = FilePolicyStore(path), FilePolicyStore(path)
    await one.load()
    rules = [make_rule(f"user:u{n}@example.com", "team-a", "view") for n in range(40)]

    def granting(rule: Rule) -> Callable[[PolicyDoc], PolicyDoc]:
        return lambda doc: doc.with_rule(rule)

    await asyncio.gather(*((one if n % 2 else two).update(granting(r)) for n, r in enumerate(rules)))
    assert set(parse_policy(path.read_bytes()).rules) == set(rules)


async def test_an_edit_on_disk_is_noticed_once_and_a_bad_one_is_reported_once(tmp_path: Path) -> None:
    path = tmp_path / "policy.csv"
    store = FilePolicyStore(path)
    await store.load()
    assert await store.changed() is None
    path.write_text(BOB.to_line() + "\n")
    changed = await store.changed()
    assert changed is not None and changed.rules == (BOB,)
    assert await store.changed() is None
    path.write_text("p, user:bob@example.com, team-a\n")
    with pytest.raises(PolicyError, match="line 1: expected 6 fields"):
        await store.changed()
    assert await store.changed() is None
    os.unlink(path)
    with pytest.raises(PolicyError, match="is gone"):
        await store.changed()


async def test_rewriting_the_same_content_is_not_a_change(tmp_path: Path) -> None:
    path = tmp_path / "policy.csv"
    store = FilePolicyStore(path)
    doc = await store.load()
    path.write_text(doc.text)
    assert await store.changed() is None
    os.utime(path)  # touched: a new mtime, the same bytes
    assert await store.changed() is None
