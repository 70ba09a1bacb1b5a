"""The host-state sink against a real PostgreSQL: poison rows isolated, a bounded queue."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from actors.persist import DatabaseSink
from storage import Database, Transition, delete_host, insert_host

from ..fakes import EPOCH, polled_state

pytestmark = pytest.mark.timeout(60)


async def three_hosts(db: Database) -> list[int]:
    def insert(conn: Any) -> list[int]:
        return [
            insert_host(conn, name=f"h{i}.example.com", address=f"192.0.2.{i}").id
            for i in range(1, 4)
        ]

    return await db.run(insert)


def transition(host_id: int, to_state: str = "unreachable") -> Transition:
    return Transition(host_id, EPOCH, "healthy", to_state, "connection refused")


async def test_a_transition_of_a_deleted_host_is_dropped_and_every_other_host_is_still_written(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    a, b, c = await three_hosts(db)
    sink = DatabaseSink(db)
    for host_id in (a, b, c):
        sink.submit_state(host_id, polled_state(health="unreachable"), transition(host_id))
    await db.run(delete_host, b)  # removed while its state waited for the flush
    await sink.flush()
    stored = await db.run(
        lambda conn: conn.execute(
            "SELECT h.id, h.health, count(t.*) FROM hosts h"
            " LEFT JOIN host_health_history t ON t.host_id = h.id GROUP BY 1, 2 ORDER BY 1"
        ).fetchall()
    )
    assert stored == [(a, "unreachable", 1), (c, "unreachable", 1)]
    assert sink.queued() == (0, 0)  # the poison row is gone, not retried forever
    assert sink.stats.dropped_rows == 2  # its state and its transition
    assert [r.levelno for r in caplog.records if f"of host {b}" in r.message] == [logging.ERROR]
    # Later batches are written as usual (the final flush at shutdown included).
    sink.submit_state(a, polled_state(health="healthy"), transition(a, "healthy"))
    await sink.flush()
    assert await db.run(
        lambda conn: conn.execute("SELECT health FROM hosts WHERE id = %s", (a,)).fetchone()
    ) == ("healthy",)


async def test_a_forgotten_host_writes_nothing(db: Database) -> None:
    a, b, _ = await three_hosts(db)
    sink = DatabaseSink(db)
    sink.submit_state(a, polled_state(health="degraded"), transition(a, "degraded"))
    sink.submit_state(b, polled_state(health="degraded"), transition(b, "degraded"))
    sink.forget(b)
    assert sink.queued() == (1, 1)
    await sink.flush()
    assert sink.stats.dropped_rows == 0


async def test_the_transition_queue_is_bounded_and_drops_the_oldest(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    (a, *_) = await three_hosts(db)
    sink = DatabaseSink(db, max_transitions=3)
    for i in range(5):
        sink.submit_state(a, polled_state(), transition(a, f"state{i}"))
    assert sink.queued() == (1, 3)
    assert sink.stats.dropped_rows == 2
    assert any("queue full" in r.message for r in caplog.records)
