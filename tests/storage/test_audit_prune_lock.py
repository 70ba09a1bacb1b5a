"""Pruning a long audit log does not hold the chain's lock while it verifies (review F13b #1)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import psycopg
import pytest
import trio

from storage import AuditEntry, Database, DatabaseUnavailable
from storage.audit import (
    _ENTRY_COLUMNS,
    StoredEntry,
    _head_mac,
    _jsonb,
    append,
    count_entries,
    entry_mac,
    prune_audit,
    verify,
)
from tests.conftest import AUDIT_TEST_KEY as KEY

pytestmark = pytest.mark.timeout(240)

N = 60_000
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _fill(conn: psycopg.Connection[Any]) -> None:
    """N chained entries, one a minute, written in bulk (appending one by one takes minutes)."""
    prev = ""
    rows = []
    for i in range(1, N + 1):
        e = StoredEntry(i, T0 + dt.timedelta(minutes=i), "user:alice", "127.0.0.1", "r" * 32,
                        "host.refresh", f"host:{i % 50}", None, {"x": i}, "ok", "", "")  # fmt: skip
        e = replace(e, mac=entry_mac(KEY, prev, e))
        prev = e.mac
        rows.append((e.id, e.at, e.actor, e.source, e.request_id, e.action, e.target,
                     _jsonb(e.before), _jsonb(e.after), e.outcome, e.detail, e.mac))  # fmt: skip
    with conn.transaction():
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO audit_entries ({_ENTRY_COLUMNS}) VALUES"
                " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                rows,
            )
        conn.execute(
            "INSERT INTO audit_head (one, last_id, last_mac, mac) VALUES (true, %s, %s, %s)",
            (N, prev, _head_mac(KEY, N, prev)),
        )


async def test_audited_writes_during_a_prune_of_60000_entries_never_wait_a_second_for_the_lock(
    db: Database,
) -> None:
    await db.run(_fill)
    done = trio.Event()
    timed_out: list[str] = []
    written = 0

    def write_once(conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            conn.execute("SET LOCAL lock_timeout = '1s'")
            append(conn, KEY, AuditEntry("user:bob", "host.add"))

    async def writer() -> None:
        nonlocal written
        while not done.is_set():
            try:
                await db.run(write_once)
                written += 1
            except DatabaseUnavailable as exc:  # the lock timeout: what this test looks for
                timed_out.append(str(exc))

    deleted = 0

    async def pruner() -> None:
        nonlocal deleted
        try:
            deleted = await db.run(prune_audit, KEY, T0 + dt.timedelta(minutes=N // 2 + 1), 1000)
        finally:
            done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        nursery.start_soon(pruner)

    assert timed_out == []
    assert deleted == N // 2
    assert written > 0
    assert await db.run(count_entries) == N - N // 2 + written
    result = await db.run(lambda conn: verify(conn, KEY))
    assert result.ok, result.problem
