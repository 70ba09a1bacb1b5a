"""Issue 16 (job page): a row's queued time is kept (migration 0020), set when the row is
created and again when it is queued once more (a manual or automatic retry); a retried row
loses the drift note of its last try (the next try records its own)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

from storage import Database, Decisions, apply_decisions, get_row, retry_failed_rows

from .test_job_rows import setup


def _fail_with_drift(conn: psycopg.Connection[Any], row_id: int) -> None:
    conn.execute(
        "UPDATE job_hosts SET state = 'failed', attempts = 1, dispatched_at = now(),"
        " finished_at = now(), drift = '1 package newer than planned (curl)',"
        " queued_at = now() - interval '1 hour' WHERE id = %s",
        (row_id,),
    )


async def test_a_new_row_has_its_queued_time(db: Database) -> None:
    def run(conn: psycopg.Connection[Any]) -> None:
        (row_id,) = setup(conn, hosts=1)
        row = get_row(conn, row_id)
        assert row.queued_at is not None
        assert abs(row.queued_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)

    await db.run(run)


async def test_a_manual_retry_clears_the_drift_and_sets_a_new_queued_time(db: Database) -> None:
    def run(conn: psycopg.Connection[Any]) -> None:
        (row_id,) = setup(conn, hosts=1)
        _fail_with_drift(conn, row_id)
        assert retry_failed_rows(conn, get_row(conn, row_id).job_id) == 1
        row = get_row(conn, row_id)
        assert row.drift == ""
        assert row.queued_at is not None
        assert dt.datetime.now(dt.UTC) - row.queued_at < dt.timedelta(minutes=1)

    await db.run(run)


async def test_an_automatic_retry_clears_the_drift_and_sets_a_new_queued_time(
    db: Database,
) -> None:
    def run(conn: psycopg.Connection[Any]) -> None:
        (row_id,) = setup(conn, hosts=1)
        _fail_with_drift(conn, row_id)
        apply_decisions(conn, Decisions(get_row(conn, row_id).job_id, retry=(row_id,)))
        row = get_row(conn, row_id)
        assert row.state == "queued"
        assert row.drift == ""
        assert row.queued_at is not None
        assert dt.datetime.now(dt.UTC) - row.queued_at < dt.timedelta(minutes=1)

    await db.run(run)
