"""Review F16a #10: a manual retry shows the row as new, without the timings of its last try."""

from __future__ import annotations

from typing import Any

import psycopg

from storage import Database, get_row, retry_failed_rows

from .test_job_rows import setup


async def test_a_manual_retry_clears_the_rows_dispatched_started_and_finished_times(
    db: Database,
) -> None:
    def run(conn: psycopg.Connection[Any]) -> None:
        (failed,) = setup(conn, hosts=1)
        job_id = get_row(conn, failed).job_id
        conn.execute(
            "UPDATE job_hosts SET state = 'failed', attempts = 1, dispatched_at = now(),"
            " started_at = now(), finished_at = now(), progress = 40 WHERE id = %s",
            (failed,),
        )
        assert retry_failed_rows(conn, job_id) == 1
        row = get_row(conn, failed)
        assert (row.dispatched_at, row.started_at, row.finished_at) == (None, None, None)
        assert row.progress == 0

    await db.run(run)
