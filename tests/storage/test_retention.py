"""Retention on a real database with explicit cutoffs: a removed host's history stays in the
reports (within its groups' scope) until retention removes it; 90 days of every kind of
operational row are pruned in bounded batches, the newest kept; the audit log is pruned behind a
signed checkpoint and still verifies."""

from __future__ import annotations

import datetime as dt
from typing import Any

from actors.retention import AUDIT_TABLE, Cutoffs, DatabaseRetention, prune
from reports import ComplianceRules, Context
from reports.model import history_report
from storage import Database, HostScope, delete_host, get_job, list_jobs, retry_failed_rows
from storage.audit import AuditEntry, append, count_entries, prune_audit, verify
from storage.reports import ReportFilter, remediation_times
from storage.retention import PRUNE_STEPS, last_finished_run

from ..conftest import AUDIT_TEST_KEY

NOW = dt.datetime(2026, 6, 10, 12, 0, tzinfo=dt.UTC)
RULES = ComplianceRules(default_patch_interval_s=3600)
DAY = dt.timedelta(days=1)


def one(conn: Any, query: str, params: Any = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def host_with_history(conn: Any, name: str, group: str | None = None) -> int:
    """A host with a finished job row (and its attempt), a resolved and an open patch episode
    and a health transition, all 10 days old."""
    host = one(conn, "INSERT INTO hosts (name) VALUES (%s) RETURNING id", (name,))
    if group is not None:
        gid = one(conn, "SELECT id FROM groups WHERE name = %s", (group,)) or one(
            conn, "INSERT INTO groups (name) VALUES (%s) RETURNING id", (group,)
        )
        conn.execute("INSERT INTO host_groups VALUES (%s, %s)", (host, gid))
    at = NOW - 10 * DAY
    job = one(
        conn,
        "INSERT INTO jobs (kind, schedule, created_by, status, created_at, finished_at)"
        " VALUES ('patch', 'now', 'ops', 'failed', %s, %s) RETURNING id",
        (at, at),
    )
    row = one(
        conn,
        "INSERT INTO job_hosts (job_id, host_id, state, finished_at, error_code)"
        " VALUES (%s, %s, 'failed', %s, 'PKG_MANAGER_ERROR') RETURNING id",
        (job, host, at),
    )
    conn.execute(
        "INSERT INTO job_host_attempts (row_id, host_id, attempt, finished_at, outcome)"
        " VALUES (%s, %s, 1, %s, 'failed')",
        (row, host, at),
    )
    conn.execute(
        "INSERT INTO host_patches (host_id, name, severity, first_seen_at, resolved_at)"
        " VALUES (%s, 'openssl', 'high', %s, %s), (%s, 'curl', 'low', %s, NULL)",
        (host, at - DAY, at, host, at),
    )
    conn.execute(
        "INSERT INTO host_health_history (host_id, at, from_state, to_state)"
        " VALUES (%s, %s, 'pending', 'healthy')",
        (host, at),
    )
    return int(host)


async def test_removed_host_history_stays_in_the_patch_history_report_until_retention(
    db: Database,
) -> None:
    host = await db.run(host_with_history, "web1.example.org")
    await db.run(delete_host, host)
    await db.run(lambda c: c.execute("UPDATE removed_hosts SET removed_at = %s", (NOW - 9 * DAY,)))
    ctx = Context(db, HostScope.everything(), RULES, NOW)
    rows = (await history_report(ctx, ReportFilter())).rows
    assert [(r.host, r.state, r.error_code) for r in rows] == [
        ("web1.example.org", "failed", "PKG_MANAGER_ERROR")
    ]
    remediated = await db.run(remediation_times, HostScope.everything(), ReportFilter())
    assert {r.severity: r.resolved for r in remediated}["high"] == 1

    # retention with a cutoff after the history: rows, attempts, episodes, transitions and
    # finally the removed host's record go
    summary = await prune(db, Cutoffs(NOW, NOW - 5 * DAY, NOW - 200 * DAY), batch=100)
    assert summary.deleted["job_hosts"] == 1 and summary.deleted["job_host_attempts"] == 1
    assert summary.deleted["host_patches"] == 1 and summary.deleted["removed_hosts"] == 1
    assert (await history_report(ctx, ReportFilter())).rows == []
    left = await db.run(
        lambda c: [
            one(c, f"SELECT count(*) FROM {t}")
            for t in ("removed_hosts", "host_patches", "host_health_history", "jobs")
        ]
    )
    assert left == [0, 0, 0, 0]


async def test_removing_a_host_ends_its_unfinished_rows_and_drops_its_open_patches(
    db: Database,
) -> None:
    def setup(conn: Any) -> tuple[int, int, int]:
        a = host_with_history(conn, "a.example.org")
        b = host_with_history(conn, "b.example.org")
        job = one(
            conn,
            "INSERT INTO jobs (kind, schedule, status) VALUES ('patch', 'now', 'running')"
            " RETURNING id",
        )
        conn.execute(
            "INSERT INTO job_hosts (job_id, host_id, state) VALUES (%s, %s, 'queued'),"
            " (%s, %s, 'failed')",
            (job, a, job, b),
        )
        return a, b, int(job)

    a, b, job = await db.run(setup)
    await db.run(delete_host, a)
    await db.run(delete_host, b)
    states = await db.run(
        lambda c: c.execute(
            "SELECT host_id, state, error_code FROM job_hosts WHERE job_id = %s ORDER BY host_id",
            (job,),
        ).fetchall()
    )
    assert states == [(a, "cancelled", "HOST_REMOVED"), (b, "failed", "")]
    # a retry does not queue a row no actor will ever run
    assert await db.run(retry_failed_rows, job) == 0
    assert await db.run(one, "SELECT count(*) FROM host_patches WHERE resolved_at IS NULL") == 0
    # the name is free again: the host can be registered anew
    await db.run(one, "INSERT INTO hosts (name) VALUES ('a.example.org') RETURNING id")


async def test_removed_host_history_is_seen_only_within_the_groups_it_was_in(
    db: Database,
) -> None:
    def setup(conn: Any) -> tuple[int, int]:
        host_with_history(conn, "red1", "red")
        host_with_history(conn, "blue1", "blue")
        host_with_history(conn, "loose1")
        return (
            one(conn, "SELECT id FROM groups WHERE name = 'red'"),
            one(conn, "SELECT id FROM groups WHERE name = 'blue'"),
        )

    red, _ = await db.run(setup)
    for name in ("red1", "blue1", "loose1"):
        await db.run(delete_host, name)

    async def seen(scope: HostScope, f: ReportFilter | None = None) -> set[str]:
        ctx = Context(db, scope, RULES, NOW)
        return {r.host for r in (await history_report(ctx, f or ReportFilter())).rows}

    assert await seen(HostScope(group_ids=frozenset({red}))) == {"red1"}
    assert await seen(HostScope(ungrouped=True)) == {"loose1"}
    assert await seen(HostScope.everything(), ReportFilter(group="blue")) == {"blue1"}
    assert await seen(HostScope()) == set()
    # jobs: an ungrouped scope does not see the red host's job (its rows are not in scope)
    ungrouped = HostScope(ungrouped=True)
    jobs = await db.run(lambda c: list_jobs(c, scope=ungrouped))
    assert len(jobs) == 1 and sum(jobs[0][1].values()) == 1
    assert (await db.run(lambda c: get_job(c, jobs[0][0].id, ungrouped))).id == jobs[0][0].id


def ninety_days(conn: Any) -> None:
    """One row a day for 90 days (day 0 = NOW) in every table retention prunes."""
    host = one(conn, "INSERT INTO hosts (name) VALUES ('keep.example.org') RETURNING id")
    user = one(conn, "INSERT INTO users (username, password_hash) VALUES ('u', 'x') RETURNING id")
    for d in range(90):
        at = NOW - d * DAY
        conn.execute(
            "INSERT INTO host_health_history (host_id, at, from_state, to_state)"
            " VALUES (%s, %s, 'healthy', 'degraded')",
            (host, at),
        )
        conn.execute(
            "INSERT INTO host_patches (host_id, name, first_seen_at, resolved_at)"
            " VALUES (%s, %s, %s, %s)",
            (host, f"p{d}", at - DAY, at),
        )
        job = one(
            conn,
            "INSERT INTO jobs (kind, schedule, status, created_at, finished_at)"
            " VALUES ('patch', 'now', 'succeeded', %s, %s) RETURNING id",
            (at, at),
        )
        row = one(
            conn,
            "INSERT INTO job_hosts (job_id, host_id, state) VALUES (%s, %s, 'succeeded')"
            " RETURNING id",
            (job, host),
        )
        conn.execute(
            "INSERT INTO job_host_attempts (row_id, host_id, attempt, outcome)"
            " VALUES (%s, %s, 1, 'succeeded')",
            (row, host),
        )
        scan = one(
            conn,
            "INSERT INTO discovery_scans (cidr, status, total, started_at, finished_at)"
            " VALUES ('10.0.0.0/30', 'finished', 2, %s, %s) RETURNING id",
            (at, at),
        )
        conn.execute(
            "INSERT INTO discovery_results (scan_id, address) VALUES (%s, '10.0.0.1')", (scan,)
        )
        conn.execute(
            "INSERT INTO window_changes (window_id, action, at, snapshot)"
            " VALUES (1, 'created', %s, '{}')",
            (at,),
        )
        conn.execute(
            "INSERT INTO sessions (token_hash, user_id, csrf_token, expires_at)"
            " VALUES (%s, %s, 'c', %s)",
            (f"s{d}".encode(), user, at + 12 * dt.timedelta(hours=1)),
        )
        conn.execute(
            "INSERT INTO login_tokens (token_hash, expires_at) VALUES (%s, %s)",
            (f"t{d}".encode(), at + dt.timedelta(hours=1)),
        )
    api_token = one(
        conn,
        "INSERT INTO api_tokens (user_id, name, scope, token_hash, hint, expires_at)"
        " VALUES (%s, 't', 'read', 'h', 'h', %s) RETURNING id",
        (user, NOW + 365 * DAY),
    )
    for d in range(90):
        at = NOW - d * DAY
        conn.execute(
            "INSERT INTO notification_messages (recipient, subject, body, state, created_at,"
            " sent_at) VALUES ('a@example.org', 's', 'b', 'sent', %s, %s)",
            (at, at),
        )
        conn.execute(
            "INSERT INTO notification_events (kind, created_at, dispatched_at)"
            " VALUES ('test', %s, %s)",
            (at, at),
        )
        conn.execute(
            "INSERT INTO api_refresh_tokens (token_hash, api_token_id, family_id, expires_at)"
            " VALUES (%s, %s, gen_random_uuid(), %s)",
            (f"r{d}".encode(), api_token, at + dt.timedelta(hours=1)),
        )
        conn.execute(
            "INSERT INTO sso_logins (browser_hash, state, nonce, code_verifier, redirect_uri,"
            " expires_at) VALUES (%s, 's', 'n', 'v', 'https://x', %s)",
            (f"b{d}".encode(), at + dt.timedelta(hours=1)),
        )
    # a message still being retried is never pruned, however old
    conn.execute(
        "INSERT INTO notification_messages (recipient, subject, body, created_at)"
        " VALUES ('a@example.org', 's', 'b', %s)",
        (NOW - 89 * DAY,),
    )
    # an open episode and an unfinished job are never pruned, however old
    conn.execute(
        "INSERT INTO host_patches (host_id, name, first_seen_at) VALUES (%s, 'old-open', %s)",
        (host, NOW - 89 * DAY),
    )
    conn.execute(
        "INSERT INTO jobs (kind, schedule, status, created_at) VALUES"
        " ('patch', 'window', 'queued', %s)",
        (NOW - 89 * DAY,),
    )


async def test_ninety_days_are_pruned_in_batches_and_the_newest_thirty_kept(db: Database) -> None:
    await db.run(ninety_days)
    cutoffs = Cutoffs.at(NOW, operational_days=30, audit_days=180)
    summary = await prune(db, cutoffs, batch=7)
    # days 31..89 (59 rows) of each table; day 30 is exactly at the cutoff and kept
    for table in ("host_health_history", "host_patches", "jobs", "job_hosts",
                  "job_host_attempts", "discovery_scans", "discovery_results",
                  "window_changes", "notification_messages",
                  "notification_events"):  # fmt: skip
        assert summary.deleted[table] == 59, table
    # expired credentials go whatever their age: all but today's (not expired yet)
    assert summary.deleted["login_tokens"] == 89 and summary.deleted["sessions"] == 89
    assert summary.deleted["api_refresh_tokens"] == 89 and summary.deleted["sso_logins"] == 89
    # bounded batches: 59 rows in batches of 7 take 9 DELETEs per table
    assert summary.batches >= 10 * 9

    def remaining(conn: Any) -> dict[str, Any]:
        return {
            "oldest_transition": one(conn, "SELECT min(at) FROM host_health_history"),
            "jobs": one(conn, "SELECT count(*) FROM jobs"),
            "open": one(conn, "SELECT count(*) FROM host_patches WHERE resolved_at IS NULL"),
            "scans": one(conn, "SELECT count(*) FROM discovery_scans"),
            "messages": one(conn, "SELECT count(*) FROM notification_messages"),
        }

    left = await db.run(remaining)
    assert left["oldest_transition"] == NOW - 30 * DAY
    assert left["jobs"] == 31 + 1 and left["open"] == 1 and left["scans"] == 31
    assert left["messages"] == 31 + 1
    # a second run finds nothing more
    again = await prune(db, cutoffs, batch=7)
    assert again.total == 0


async def test_audit_is_pruned_behind_a_checkpoint_and_still_verifies(db: Database) -> None:
    def entries(conn: Any) -> None:
        for d in range(89, -1, -1):
            append(conn, AUDIT_TEST_KEY, AuditEntry(actor="system", action=f"test.day{d}"),
                   at=NOW - d * DAY)  # fmt: skip

    await db.run(entries)

    async def audit(cutoff: dt.datetime, batch: int) -> int:
        return await db.run(prune_audit, AUDIT_TEST_KEY, cutoff, batch)

    retention = DatabaseRetention(db, lambda: NOW, batch=7, prune_audit=audit)
    summary = await retention.execute(Cutoffs.at(NOW, 30, 60))
    assert summary.deleted[AUDIT_TABLE] == 29  # days 61..89
    result = await db.run(verify, AUDIT_TEST_KEY)
    assert result.ok and result.checkpoint is not None, result.problem
    # 61 kept, and the run itself: an action of the system's
    assert await db.run(count_entries) == 62
    run_entry = await db.run(
        lambda c: c.execute(
            "SELECT actor, action, after FROM audit_entries ORDER BY id DESC LIMIT 1"
        ).fetchone()
    )
    assert run_entry[:2] == ("system", "retention.run")
    assert run_entry[2]["deleted"][AUDIT_TABLE] == 29
    last = await db.run(last_finished_run)
    assert last is not None and last.deleted[AUDIT_TABLE] == 29
    assert await retention.last_run() == NOW


async def test_every_prune_step_runs_on_an_empty_database(db: Database) -> None:
    summary = await prune(db, Cutoffs.at(NOW, 30, 180), batch=10)
    assert set(summary.deleted) == set(PRUNE_STEPS) and summary.total == 0


async def test_a_step_the_database_refuses_is_reported_and_the_others_still_run(
    db: Database,
) -> None:
    def setup(conn: Any) -> None:
        ninety_days(conn)
        conn.execute(
            "CREATE FUNCTION keep() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'window changes are kept here'; END $$"
        )
        conn.execute(
            "CREATE TRIGGER keep BEFORE DELETE ON window_changes FOR EACH ROW"
            " EXECUTE FUNCTION keep()"
        )

    await db.run(setup)
    retention = DatabaseRetention(db, lambda: NOW, batch=50)
    summary = await retention.execute(Cutoffs.at(NOW, 30, 180))
    assert summary.refused == {"window_changes": "window changes are kept here"}
    assert summary.deleted["window_changes"] == 0 and summary.deleted["jobs"] == 59
    last = await db.run(last_finished_run)
    assert last is not None and last.error == "window_changes: window changes are kept here"
    assert await retention.last_run() == NOW  # it ran: the next run is a day later
