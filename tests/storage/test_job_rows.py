"""The job row state machine in PostgreSQL: permits re-checked in the claim, owners and leases,
conditional transitions, attempt history, auto-apply in one transaction."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest

from storage import (
    NO_DEADLINE,
    Database,
    Decisions,
    HostScope,
    JobSpec,
    advance_row,
    apply_decisions,
    cancel_job,
    claim_next,
    create_job,
    create_window_job,
    finish_row,
    get_job,
    get_row,
    insert_host,
    job_rows,
    recorded_agent_jobs,
    renew_lease,
    retry_failed_rows,
    row_attempts,
    take_over,
)

A, B = "node-a", "node-b"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def setup(conn: psycopg.Connection[Any], hosts: int = 1, kind: str = "patch") -> list[int]:
    """A job on ``hosts`` new hosts; returns its row ids (ordered by host)."""
    ids = [insert_host(conn, name=f"h{i}", address=f"127.0.0.{i + 1}").id for i in range(hosts)]
    job_id = create_job(conn, JobSpec(kind=kind, schedule="now"), [(h, 0) for h in ids])
    return [r.id for r in sorted(job_rows(conn, job_id), key=lambda r: r.host_id)]


def permit(conn: psycopg.Connection[Any], row_id: int, until: dt.datetime | None) -> None:
    conn.execute("UPDATE job_hosts SET run_until = %s WHERE id = %s", (until, row_id))


async def test_claim_requires_a_valid_permit_checked_in_the_claim(db: Database) -> None:
    def run(conn: psycopg.Connection[Any]) -> None:
        [row_id] = setup(conn)
        host_id = get_row(conn, row_id).host_id
        assert claim_next(conn, host_id, A, 60) is None  # queued, no permit yet
        permit(conn, row_id, now() - dt.timedelta(seconds=1))  # its window has closed
        assert claim_next(conn, host_id, A, 60) is None
        permit(conn, row_id, now() + dt.timedelta(minutes=5))
        claimed = claim_next(conn, host_id, A, 60)
        assert claimed is not None
        assert (claimed.state, claimed.owner, claimed.attempts) == ("claimed", A, 1)
        assert claim_next(conn, host_id, B, 60) is None  # claimed once only

    await db.run(run)


async def test_sending_after_the_permit_ran_out_is_refused(db: Database) -> None:
    def run(conn: psycopg.Connection[Any]) -> None:
        [row_id] = setup(conn)
        permit(conn, row_id, now() + dt.timedelta(minutes=5))
        assert claim_next(conn, get_row(conn, row_id).host_id, A, 60) is not None
        permit(conn, row_id, now() - dt.timedelta(seconds=1))  # the runner waited too long
        assert not advance_row(conn, row_id, A, ("claimed",), "request_sent", within_permit=True)
        assert get_row(conn, row_id).state == "claimed"

    await db.run(run)


async def test_cancel_ends_claimed_rows_that_sent_nothing_and_the_send_is_refused(
    db: Database,
) -> None:
    def run(conn: psycopg.Connection[Any]) -> None:
        claimed, sent = setup(conn, hosts=2)
        for row_id in (claimed, sent):
            permit(conn, row_id, NO_DEADLINE)
            assert claim_next(conn, get_row(conn, row_id).host_id, A, 60) is not None
        assert advance_row(conn, sent, A, ("claimed",), "request_sent", within_permit=True)
        assert cancel_job(conn, get_row(conn, claimed).job_id) == 1
        assert get_row(conn, claimed).state == "cancelled"
        assert get_row(conn, sent).state == "request_sent"  # may be on the agent: followed
        assert not advance_row(conn, claimed, A, ("claimed",), "request_sent", within_permit=True)

    await db.run(run)


async def test_the_send_is_refused_when_the_job_is_no_longer_active(db: Database) -> None:
    def run(conn: psycopg.Connection[Any]) -> None:
        [row_id] = setup(conn)
        permit(conn, row_id, NO_DEADLINE)
        assert claim_next(conn, get_row(conn, row_id).host_id, A, 60) is not None
        conn.execute(
            "UPDATE jobs SET status = 'cancelled' WHERE id = %s", (get_row(conn, row_id).job_id,)
        )
        assert not advance_row(conn, row_id, A, ("claimed",), "request_sent", within_permit=True)
        assert get_row(conn, row_id).state == "claimed"

    await db.run(run)


async def test_transitions_need_the_expected_state_and_the_owner(db: Database) -> None:
    def run(conn: psycopg.Connection[Any]) -> None:
        [row_id] = setup(conn)
        permit(conn, row_id, NO_DEADLINE)
        claim_next(conn, get_row(conn, row_id).host_id, A, 60)
        assert not advance_row(conn, row_id, B, ("claimed",), "request_sent")  # not B's row
        assert not advance_row(conn, row_id, A, ("request_sent",), "accepted")  # wrong state
        assert advance_row(conn, row_id, A, ("claimed",), "request_sent", within_permit=True)
        row = get_row(conn, row_id)
        assert row.state == "request_sent" and row.sent_at is not None
        assert advance_row(conn, row_id, A, ("request_sent",), "accepted", agent_job_id="x" * 36)
        assert not finish_row(conn, row_id, B, "succeeded")
        assert finish_row(conn, row_id, A, "succeeded")
        assert get_row(conn, row_id).state == "succeeded"
        assert not finish_row(conn, row_id, A, "failed")  # final stays final

    await db.run(run)


async def test_take_over_own_rows_at_once_and_others_only_after_their_lease(db: Database) -> None:
    def run(conn: psycopg.Connection[Any]) -> None:
        [row_id] = setup(conn)
        host_id = get_row(conn, row_id).host_id
        permit(conn, row_id, NO_DEADLINE)
        claim_next(conn, host_id, A, 60)
        assert advance_row(conn, row_id, A, ("claimed",), "request_sent")
        assert take_over(conn, host_id, B, 60) == []  # A's lease is running
        assert [r.id for r in take_over(conn, host_id, A, 60)] == [row_id]  # A's runner restarted
        conn.execute(
            "UPDATE job_hosts SET lease_expires_at = now() - interval '1 s' WHERE id = %s",
            (row_id,),
        )
        [taken] = take_over(conn, host_id, B, 60)
        assert (taken.owner, taken.state) == (B, "request_sent")  # reconciled, not resent
        assert not renew_lease(conn, row_id, A, 60)  # A learns it lost the row
        assert renew_lease(conn, row_id, B, 60)

    await db.run(run)


async def test_a_restarted_process_takes_over_its_previous_owners_rows_at_once_only(
    db: Database,
) -> None:
    """Owners are per process start: a process on the same machine (another owner id) waits
    for the lease; the restart of the process that held the rows names it as its previous
    owner and resumes them at once."""

    def run(conn: psycopg.Connection[Any]) -> None:
        [row_id] = setup(conn)
        host_id = get_row(conn, row_id).host_id
        permit(conn, row_id, NO_DEADLINE)
        claim_next(conn, host_id, "vm:100:aa", 60)
        assert take_over(conn, host_id, "vm:200:bb", 60) == []  # a sibling process
        assert take_over(conn, host_id, "vm:300:cc", 60, previous=("vm:999:zz",)) == []
        [taken] = take_over(conn, host_id, "vm:300:cc", 60, previous=("vm:100:aa",))
        assert taken.id == row_id and taken.owner == "vm:300:cc"

    await db.run(run)


async def test_a_retry_clears_the_row_error_and_every_attempt_keeps_its_own(db: Database) -> None:
    def run(conn: psycopg.Connection[Any]) -> None:
        [row_id] = setup(conn)
        host_id = get_row(conn, row_id).host_id
        permit(conn, row_id, NO_DEADLINE)
        first = "1" * 36
        claim_next(conn, host_id, A, 60)
        advance_row(conn, row_id, A, ("claimed",), "request_sent")
        advance_row(conn, row_id, A, ("request_sent",), "accepted", agent_job_id=first)
        finish_row(conn, row_id, A, "failed", error_code="TIMEOUT", error_message="apt hung")
        conn.execute("UPDATE job_hosts SET state = 'queued' WHERE id = %s", (row_id,))  # retry
        claim_next(conn, host_id, A, 60)
        claimed = get_row(conn, row_id)
        assert (claimed.error_code, claimed.error_message, claimed.agent_job_id) == ("", "", None)
        advance_row(conn, row_id, A, ("claimed",), "request_sent")
        advance_row(conn, row_id, A, ("request_sent",), "accepted", agent_job_id="2" * 36)
        finish_row(conn, row_id, A, "succeeded")
        final = get_row(conn, row_id)
        assert (final.state, final.error_code, final.attempts) == ("succeeded", "", 2)
        attempts = row_attempts(conn, row_id)
        assert [(a.attempt, a.outcome, a.error_code) for a in attempts] == [
            (1, "failed", "TIMEOUT"),
            (2, "succeeded", ""),
        ]
        assert recorded_agent_jobs(conn, host_id) == {first, "2" * 36}

    await db.run(run)


async def test_auto_apply_claim_create_and_attach_are_one_transaction(db: Database) -> None:
    def run(conn: psycopg.Connection[Any]) -> None:
        host = insert_host(conn, name="w1", address="127.0.0.9").id
        window = conn.execute(
            "INSERT INTO maintenance_windows (host_id, recurrence, start_date, start_time,"
            " duration_minutes, timezone, auto_apply) VALUES (%s, 'daily', '2026-01-01',"
            " '02:00', 60, 'UTC', 'all') RETURNING id",
            (host,),
        ).fetchone()
        assert window is not None
        occurrence = dt.datetime(2026, 1, 2, 2, tzinfo=dt.UTC)
        spec = JobSpec(kind="patch", schedule="window", created_by=f"window {window[0]}")
        # A failure after the occurrence was claimed (here: a host that no longer exists)
        # must not leave the occurrence claimed without a job: nothing at all is left.
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            create_window_job(conn, window[0], occurrence, spec, [(host + 1000, 0)])
        assert conn.execute("SELECT count(*) FROM window_runs").fetchone() == (0,)
        job_id = create_window_job(conn, window[0], occurrence, spec, [(host, 0)])
        assert job_id is not None
        assert conn.execute("SELECT job_id FROM window_runs").fetchall() == [(job_id,)]
        assert create_window_job(conn, window[0], occurrence, spec, [(host, 0)]) is None

    await db.run(run)


async def test_a_manual_retry_queues_the_failed_rows_afresh_and_runs_the_job_again(
    db: Database,
) -> None:
    def run(conn: psycopg.Connection[Any]) -> None:
        failed, succeeded = setup(conn, hosts=2)
        job_id = get_row(conn, failed).job_id
        conn.execute(
            "UPDATE job_hosts SET state = 'failed', attempts = 2, error_code = 'TIMEOUT',"
            " run_until = now() WHERE id = %s",
            (failed,),
        )
        conn.execute("UPDATE job_hosts SET state = 'succeeded' WHERE id = %s", (succeeded,))
        conn.execute("UPDATE jobs SET status = 'partially_failed', finished_at = now()")
        assert retry_failed_rows(conn, job_id) == 1
        row = get_row(conn, failed)
        assert (row.state, row.attempts, row.error_code, row.run_until) == ("queued", 0, "", None)
        assert get_row(conn, succeeded).state == "succeeded"
        found = conn.execute(
            "SELECT status, finished_at FROM jobs WHERE id = %s", (job_id,)
        ).fetchone()
        assert found is not None and tuple(found) == ("running", None)

    await db.run(run)


async def test_an_automatic_retry_clears_the_last_tries_times_with_its_new_queued_time(
    db: Database,
) -> None:
    def run(conn: psycopg.Connection[Any]) -> None:
        [row_id] = setup(conn)
        host_id = get_row(conn, row_id).host_id
        permit(conn, row_id, NO_DEADLINE)
        claim_next(conn, host_id, A, 60)
        advance_row(conn, row_id, A, ("claimed",), "request_sent")
        advance_row(conn, row_id, A, ("request_sent",), "accepted", agent_job_id="1" * 36)
        finish_row(conn, row_id, A, "failed", error_code="TIMEOUT", error_message="apt hung")
        job_id = get_row(conn, row_id).job_id
        apply_decisions(conn, Decisions(job_id, retry=(row_id,)))
        queued = get_row(conn, row_id)
        assert queued.state == "queued"
        assert (queued.dispatched_at, queued.started_at, queued.finished_at) == (None, None, None)
        assert [a.outcome for a in row_attempts(conn, row_id)] == ["failed"]  # kept there

    await db.run(run)


async def test_a_scoped_roll_up_counts_rows_with_nothing_to_do_neither_way(db: Database) -> None:
    def run(conn: psycopg.Connection[Any]) -> None:
        nothing, skipped = (insert_host(conn, name=f"loose{i}", address=None).id for i in (0, 1))
        elsewhere = insert_host(conn, name="red0", address=None, groups=["red"]).id
        spec = JobSpec(
            kind="patch", schedule="now",
            nothing={nothing: ("NOTHING_PENDING", "nothing selected is pending")},
            skipped={skipped: ("PAUSED", "the host is paused")},
        )  # fmt: skip
        job_id = create_job(conn, spec, [(nothing, 0), (skipped, 0), (elsewhere, 0)])
        conn.execute("UPDATE jobs SET status = 'partially_failed' WHERE id = %s", (job_id,))
        # Within the scope nothing was sent (one paused, one with nothing to do): failed.
        assert get_job(conn, job_id, HostScope(ungrouped=True)).status == "failed"

    await db.run(run)
