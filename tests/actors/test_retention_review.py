"""Retention never stops the server (review F13b #2 and the statement-timeout finding): a refused
audit delete is reported like any refused step and the run is finished; an unexpected error in a
run is logged and counted and the next day's run still happens; a step hitting the statement
timeout is recorded and the rest of the run goes on."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import psycopg
import pytest
import trio
import trio.testing

from actors.retention import DAY_S, Cutoffs, RetentionSummary, RetentionTask
from storage import Database
from storage.audit import AuditEntry, append
from storage.retention import last_finished_run
from tests.conftest import AUDIT_TEST_KEY as KEY

NOW = dt.datetime(2026, 6, 10, 12, 0, tzinfo=dt.UTC)


def _old_entries_and_a_trigger_refusing_their_delete(conn: psycopg.Connection[Any]) -> None:
    for d in range(200, 0, -10):
        append(conn, KEY, AuditEntry("system", f"t{d}"), at=NOW - dt.timedelta(days=d))
    conn.execute(
        "CREATE FUNCTION keep() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'audit is append-only'; END $$"
    )
    conn.execute(
        "CREATE TRIGGER keep BEFORE DELETE ON audit_entries FOR EACH ROW EXECUTE FUNCTION keep()"
    )


async def test_a_refused_audit_delete_is_reported_as_refused_and_the_run_is_finished(
    db: Database,
) -> None:
    await db.run(_old_entries_and_a_trigger_refusing_their_delete)
    task = RetentionTask.for_database(db, lambda: 30, lambda: 180, clock=lambda: NOW)
    summary = await task.run_once()
    assert "audit is append-only" in summary.refused["audit_entries"]
    assert summary.deleted["audit_entries"] == 0
    last = await db.run(last_finished_run)
    assert last is not None and "audit_entries: audit is append-only" in last.error
    unfinished = await db.run(
        lambda c: c.execute(
            "SELECT count(*) FROM retention_runs WHERE finished_at IS NULL"
        ).fetchone()[0]
    )
    assert unfinished == 0


async def test_an_unexpected_error_in_a_run_is_logged_counted_and_the_next_days_run_happens(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    t0 = trio.current_time()
    ran: list[float] = []
    calls = 0

    def clock() -> dt.datetime:
        return NOW + dt.timedelta(seconds=trio.current_time() - t0)

    async def last_run() -> dt.datetime | None:
        return None

    async def execute(cutoffs: Cutoffs) -> RetentionSummary:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in a step")
        ran.append(trio.current_time() - t0)
        return RetentionSummary(cutoffs, {"jobs": 1}, 1, 0.0)

    task = RetentionTask(last_run, execute, clock, lambda: 30, lambda: 180)
    with caplog.at_level(logging.ERROR, logger="actors.retention"):
        async with trio.open_nursery() as nursery:
            await nursery.start(task.run)
            await trio.sleep(DAY_S + 1)
            nursery.cancel_scope.cancel()
    assert ran == [DAY_S]
    assert task.failures == 1 and task.runs == 1
    assert any("a bug in a step" in r.getMessage() or r.exc_info for r in caplog.records)


async def test_a_step_hitting_the_statement_timeout_is_recorded_and_the_run_goes_on(
    db_conninfo: str, db: Database
) -> None:
    short = Database(db_conninfo, size=2, statement_timeout_s=1, audit_key=KEY)
    await short.open()
    locked = trio.Event()
    release = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def hold_sessions(conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            conn.execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
            trio.from_thread.run_sync(locked.set, trio_token=token)
            trio.from_thread.run(release.wait, trio_token=token)

    try:
        task = RetentionTask.for_database(short, lambda: 30, lambda: 180, clock=lambda: NOW)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(db.run, hold_sessions)
            await locked.wait()
            with trio.fail_after(60):
                summary = await task.run_once()
            release.set()
    finally:
        await short.close()
    assert "statement timeout" in summary.refused["sessions"]
    assert "login_tokens" in summary.deleted  # the steps after it ran
    assert task.failures == 0
    last = await db.run(last_finished_run)
    assert last is not None and "sessions: " in last.error
