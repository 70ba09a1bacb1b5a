"""Deployment jobs, their per-host rows, maintenance windows and blackouts."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from .errors import NotFound
from .job_snapshots import split_snapshots, write_snapshots
from .retention import history_scope
from .scope import HostScope, scope_condition

EVERYTHING = HostScope(all_hosts=True)

# The row state machine (see storage/migrations/0006_job_execution.sql and design.md):
# queued → claimed → request_sent → following → succeeded | failed | skipped | cancelled
# (the write storing the agent job id makes a row ``following``; ``accepted`` is left only in
# rows written before that, which a resume moves to ``following``)
ACTIVE_ROW_STATES = ("claimed", "request_sent", "accepted", "following")
WAITING_ROW_STATES = ("queued", "waiting_window")
FINAL_ROW_STATES = ("succeeded", "failed", "cancelled", "skipped")
# A permit that never runs out (apply-now jobs); PostgreSQL's 'infinity' does not load in Python.
NO_DEADLINE = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class JobSpec:
    kind: str  # patch | install | update | remove | reboot | rollback
    schedule: str  # now | window
    selection: str = "all"  # all | security | list
    packages: tuple[Any, ...] = ()  # names, or {"name", "version"} for install/rollback
    allow_reboot: bool = False
    reboot_delay_s: int = 0
    batch_size: int | None = None
    batch_percent: int | None = None
    failure_threshold: int | None = None
    canary: bool = False
    rollback_of: int | None = None
    created_by: str = ""
    # The deployment plan the job was made from (what the Deploy page showed): stored on the
    # job; ``planned`` (host id → {package: version}) on each row; ``skipped`` (host id →
    # (code, reason)) rows start skipped.
    plan: Mapping[str, Any] | None = None
    planned: Mapping[int, Mapping[str, str]] = field(default_factory=dict)
    skipped: Mapping[int, tuple[str, str]] = field(default_factory=dict)
    # host id → (code, reason): rows that start succeeded with nothing to do (NOTHING_PENDING:
    # nothing selected was pending at the last poll; no request is sent).
    nothing: Mapping[int, tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class JobRow:
    id: int
    kind: str
    selection: str
    packages: tuple[Any, ...]
    schedule: str
    allow_reboot: bool
    reboot_delay_s: int
    batch_size: int | None
    batch_percent: int | None
    failure_threshold: int | None
    canary: bool
    status: str
    rollback_of: int | None
    created_by: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


@dataclass(frozen=True)
class JobHostRow:
    id: int
    job_id: int
    host_id: int
    batch: int
    state: str
    attempts: int
    agent_job_id: str | None
    dispatched_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    progress: int
    error_code: str
    error_message: str
    error_stderr: str
    packages_before: dict[str, str] | None = None
    packages_after: dict[str, str] | None = None
    host_name: str = ""
    owner: str | None = None
    sent_at: dt.datetime | None = None
    run_until: dt.datetime | None = None
    agent_status: str = ""
    uptime_before: int | None = None
    planned: dict[str, str] | None = None  # the plan's {package: version} for this host
    drift: str = ""  # how the host's pending list differed from the plan when it ran
    display_name: str = ""  # the host's display name (its name when it has none)
    address: str = ""
    queued_at: dt.datetime | None = None  # when the row was queued: created, or retried


_JOB_COLUMNS = (
    "id, kind, selection, packages, schedule, allow_reboot, reboot_delay_s, batch_size,"
    " batch_percent, failure_threshold, canary, status, rollback_of, created_by, created_at,"
    " started_at, finished_at"
)
# A row joined to its host and its package snapshots (a side table since migration 0022).
_ROW_FROM = (
    "job_hosts r JOIN hosts h ON h.id = r.host_id LEFT JOIN job_host_snapshots s ON s.row_id = r.id"
)
_ROW_COLUMNS = (
    "r.id, r.job_id, r.host_id, r.batch, r.state, r.attempts, r.agent_job_id, r.dispatched_at,"
    " r.started_at, r.finished_at, r.progress, r.error_code, r.error_message, r.error_stderr,"
    " s.packages_before, s.packages_after, h.name, r.owner, r.sent_at, r.run_until,"
    " r.agent_status, r.uptime_before, r.planned, r.drift,"
    " coalesce(nullif(h.display_name, ''), h.name), coalesce(host(h.address), ''), r.queued_at"
)


def _planned(spec: JobSpec, host_id: int) -> Jsonb | None:
    versions = spec.planned.get(host_id)
    return None if versions is None else Jsonb(dict(versions))


def _job(row: Sequence[Any]) -> JobRow:
    values = list(row)
    values[3] = tuple(values[3] or ())
    return JobRow(*values)


def _row(row: Sequence[Any]) -> JobHostRow:
    return JobHostRow(*row)


def create_job(
    conn: psycopg.Connection[Any], spec: JobSpec, batches: Sequence[tuple[int, int]]
) -> int:
    """Insert a job and all its host rows ``(host_id, batch)`` in one transaction."""
    if not batches:
        raise ValueError("a job needs at least one host")
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO jobs (kind, selection, packages, schedule, allow_reboot,"
            " reboot_delay_s, batch_size, batch_percent, failure_threshold, canary,"
            " rollback_of, created_by, plan)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (
                spec.kind,
                spec.selection,
                Jsonb(list(spec.packages)),
                spec.schedule,
                spec.allow_reboot,
                spec.reboot_delay_s,
                spec.batch_size,
                spec.batch_percent,
                spec.failure_threshold,
                spec.canary,
                spec.rollback_of,
                spec.created_by,
                None if spec.plan is None else Jsonb(dict(spec.plan)),
            ),
        ).fetchone()
        assert row is not None
        job_id = int(row[0])
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO job_hosts (job_id, host_id, batch, planned) VALUES (%s, %s, %s, %s)",
                [(job_id, host_id, batch, _planned(spec, host_id)) for host_id, batch in batches],
            )
            for state, ended in (("skipped", spec.skipped), ("succeeded", spec.nothing)):
                for host_id, (code, reason) in ended.items():
                    cur.execute(
                        "UPDATE job_hosts SET state = %s, finished_at = now(), error_code = %s,"
                        " error_message = %s WHERE job_id = %s AND host_id = %s",
                        (state, code, reason, job_id, host_id),
                    )
    return job_id


def _job_visible(scope: HostScope) -> sql.Composable:
    """A job is visible when any of its hosts is within the scope (admins: every job)."""
    if scope.all_hosts:
        return sql.SQL("TRUE")
    return sql.SQL("EXISTS (SELECT 1 FROM job_hosts vj WHERE vj.job_id = jobs.id AND {c})").format(
        c=history_scope(scope, "vj.host_id")
    )


def _status(scope: HostScope) -> sql.Composable:
    """The job's status as ``scope`` sees it. A finished job that also reached hosts outside
    the scope is rolled up over the rows within it (as ``actors.rollout.roll_up`` does over
    all rows; rows with nothing to do count neither way), so a failure elsewhere does not
    show; anything else is the job's status."""
    if scope.all_hosts:
        return sql.SQL("jobs.status")
    return sql.SQL(
        "CASE WHEN jobs.status IN ('succeeded', 'partially_failed', 'failed', 'cancelled')"
        " AND EXISTS (SELECT 1 FROM job_hosts so WHERE so.job_id = jobs.id AND NOT {o})"
        " THEN (SELECT CASE"
        " WHEN count(*) FILTER (WHERE si.state = 'succeeded') = count(*) THEN 'succeeded'"
        " WHEN count(*) FILTER (WHERE si.state = 'succeeded'"
        " AND coalesce(si.error_code, '') <> 'NOTHING_PENDING') > 0 THEN 'partially_failed'"
        " WHEN count(*) FILTER (WHERE si.state = 'failed') > 0 THEN 'failed'"
        " WHEN count(*) FILTER (WHERE si.state = 'cancelled') > 0 THEN 'cancelled'"
        " ELSE 'failed' END FROM job_hosts si WHERE si.job_id = jobs.id AND {i})"
        " ELSE jobs.status END"
    ).format(o=history_scope(scope, "so.host_id"), i=history_scope(scope, "si.host_id"))


def _job_columns(scope: HostScope) -> sql.Composable:
    before, after = _JOB_COLUMNS.split(" status,")
    return sql.Composed([sql.SQL(before + " "), _status(scope), sql.SQL("," + after)])


def get_job(conn: psycopg.Connection[Any], job_id: int, scope: HostScope = EVERYTHING) -> JobRow:
    """The job; ``NotFound`` when unknown or when none of its hosts is within ``scope``."""
    query = sql.SQL("SELECT {cols} FROM jobs WHERE id = %s AND {v}").format(
        cols=_job_columns(scope), v=_job_visible(scope)
    )
    row = conn.execute(query, (job_id,)).fetchone()
    if row is None:
        raise NotFound(f"no job {job_id}")
    return _job(row)


def list_jobs(
    conn: psycopg.Connection[Any],
    status: str = "",
    limit: int = 100,
    scope: HostScope = EVERYTHING,
) -> list[tuple[JobRow, dict[str, int]]]:
    """Jobs visible within ``scope`` newest first, each with its row counts by state, counted
    over the rows of hosts within ``scope`` (nothing tells a scoped user how many hosts
    outside it a job reaches)."""
    where = sql.SQL("{s} = %s AND {v}" if status else "{v}").format(
        s=_status(scope), v=_job_visible(scope)
    )
    params: list[Any] = [status] if status else []
    jobs = [
        _job(r)
        for r in conn.execute(
            sql.SQL("SELECT {cols} FROM jobs WHERE {w} ORDER BY id DESC LIMIT %s").format(
                cols=_job_columns(scope), w=where
            ),
            [*params, limit],
        ).fetchall()
    ]
    counts: dict[int, dict[str, int]] = {j.id: {} for j in jobs}
    if jobs:
        counted = sql.SQL(
            "SELECT r.job_id, r.state, count(*) FROM job_hosts r"
            " WHERE r.job_id = ANY(%s) AND {c} GROUP BY 1, 2"
        ).format(c=history_scope(scope, "r.host_id"))
        for job_id, state, count in conn.execute(counted, ([j.id for j in jobs],)).fetchall():
            counts[job_id][state] = int(count)
    return [(j, counts[j.id]) for j in jobs]


def job_rows(
    conn: psycopg.Connection[Any], job_id: int, scope: HostScope = EVERYTHING
) -> list[JobHostRow]:
    """The job's rows for the hosts within ``scope``."""
    query = sql.SQL(
        "SELECT {cols} FROM " + _ROW_FROM + " WHERE r.job_id = %s AND {c}"
        " ORDER BY r.batch, h.name_key, h.address"
    ).format(cols=sql.SQL(_ROW_COLUMNS), c=scope_condition(scope, "r.host_id"))
    return [_row(r) for r in conn.execute(query, (job_id,)).fetchall()]


def job_hosts_outside(conn: psycopg.Connection[Any], job_id: int, scope: HostScope) -> int:
    """How many of the job's rows are for hosts outside ``scope`` (a job may be changed only
    by someone whose scope holds every host it targets; callers must not show the number to
    a scoped user)."""
    if scope.all_hosts:
        return 0
    query = sql.SQL("SELECT count(*) FROM job_hosts r WHERE r.job_id = %s AND NOT {c}").format(
        c=history_scope(scope, "r.host_id")
    )
    row = conn.execute(query, (job_id,)).fetchone()
    return int(row[0]) if row else 0


def active_jobs(conn: psycopg.Connection[Any]) -> list[tuple[JobRow, list[JobHostRow]]]:
    jobs = [
        _job(r)
        for r in conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status IN ('queued', 'running') ORDER BY id"
        ).fetchall()
    ]
    return [(job, job_rows(conn, job.id)) for job in jobs]


def _row_by_id(conn: psycopg.Connection[Any], row_id: int) -> JobHostRow:
    found = conn.execute(
        f"SELECT {_ROW_COLUMNS} FROM {_ROW_FROM} WHERE r.id = %s",
        (row_id,),
    ).fetchone()
    if found is None:
        raise NotFound(f"no job row {row_id}")
    return _row(found)


def get_row(conn: psycopg.Connection[Any], row_id: int) -> JobHostRow:
    return _row_by_id(conn, row_id)


# -- the executing side: every transition is one conditional UPDATE ------------------------------


def claim_next(
    conn: psycopg.Connection[Any], host_id: int, owner: str, lease_s: float
) -> JobHostRow | None:
    """Claim this host's next runnable row: ``queued`` with a permit still valid, of a job still
    active. The permit is re-checked in the same statement (``FOR UPDATE SKIP LOCKED``), so a
    row whose window closed is never claimed, however late the runner comes. A claim starts a
    new attempt: the previous attempt's error and agent job id leave the row (they are kept in
    ``job_host_attempts``)."""
    found = conn.execute(
        "UPDATE job_hosts SET state = 'claimed', owner = %s,"
        " lease_expires_at = now() + make_interval(secs => %s), attempts = attempts + 1,"
        " dispatched_at = now(), agent_job_id = NULL, sent_at = NULL, started_at = NULL,"
        " finished_at = NULL, progress = 0, error_code = '', error_message = '',"
        " error_stderr = '', agent_status = '', uptime_before = NULL, updated_at = now()"
        " WHERE id = (SELECT r.id FROM job_hosts r JOIN jobs j ON j.id = r.job_id"
        "   WHERE r.host_id = %s AND r.state = 'queued' AND r.run_until > now()"
        "   AND j.status IN ('queued', 'running') ORDER BY r.id LIMIT 1"
        "   FOR UPDATE OF r SKIP LOCKED)"
        " AND state = 'queued' AND run_until > now() RETURNING id",
        (owner, lease_s, host_id),
    ).fetchone()
    return None if found is None else _row_by_id(conn, int(found[0]))


def take_over(
    conn: psycopg.Connection[Any],
    host_id: int,
    owner: str,
    lease_s: float,
    previous: Sequence[str] = (),
) -> list[JobHostRow]:
    """This host's rows left in flight by ``owner`` itself (a restarted runner), by one of the
    ``previous`` owners (this process's predecessor, which is known to be gone) or by an owner
    whose lease ran out; they become ``owner``'s with a fresh lease. Their recorded state says
    how to go on (follow, reconcile), never a guess."""
    ids = conn.execute(
        "UPDATE job_hosts SET owner = %s, lease_expires_at = now() + make_interval(secs => %s),"
        " updated_at = now() WHERE host_id = %s AND state = ANY(%s)"
        " AND (owner IS NULL OR owner = %s OR owner = ANY(%s) OR lease_expires_at IS NULL"
        "      OR lease_expires_at < now()) RETURNING id",
        (owner, lease_s, host_id, list(ACTIVE_ROW_STATES), owner, list(previous)),
    ).fetchall()
    return [_row_by_id(conn, int(i[0])) for i in sorted(ids)]


def renew_lease(conn: psycopg.Connection[Any], row_id: int, owner: str, lease_s: float) -> bool:
    """Extend the lease; False when the row is no longer ours (or no longer in flight)."""
    return bool(
        conn.execute(
            "UPDATE job_hosts SET lease_expires_at = now() + make_interval(secs => %s)"
            " WHERE id = %s AND owner = %s AND state = ANY(%s)",
            (lease_s, row_id, owner, list(ACTIVE_ROW_STATES)),
        ).rowcount
    )


_ROW_FIELDS = {
    "agent_job_id",
    "started_at",
    "progress",
    "error_code",
    "error_message",
    "error_stderr",
    "packages_before",
    "packages_after",
    "agent_status",
    "uptime_before",
    "reboot_job_id",
    "drift",
}


def _assignments(values: dict[str, Any]) -> tuple[str, list[Any]]:
    unknown = set(values) - _ROW_FIELDS
    if unknown:
        raise ValueError(f"unknown job row fields {sorted(unknown)}")
    params = [
        Jsonb(v) if k.startswith("packages_") and v is not None else v for k, v in values.items()
    ]
    return "".join(f", {k} = %s" for k in values), params


def advance_row(
    conn: psycopg.Connection[Any],
    row_id: int,
    owner: str,
    from_states: Sequence[str],
    to_state: str,
    *,
    within_permit: bool = False,
    **values: Any,
) -> bool:
    """One transition ``from_states → to_state`` of a row this ``owner`` holds; False when the
    row is not (or no longer) in one of ``from_states`` or not ours. With ``within_permit`` the
    row's permit must still be valid and its job still active (not cancelled): the last check
    before a request goes to the agent."""
    if to_state not in ACTIVE_ROW_STATES:
        raise ValueError(f"{to_state!r} is not an in-flight state (use finish_row)")
    values, snapshots = split_snapshots(values)
    sets, params = _assignments(values)
    sent = ", sent_at = now()" if to_state == "request_sent" else ""
    permit = (
        " AND run_until > now() AND EXISTS (SELECT 1 FROM jobs j WHERE j.id = job_id"
        " AND j.status IN ('queued', 'running'))"
        if within_permit
        else ""
    )
    # One statement unless a snapshot goes with it (then both in one transaction).
    with conn.transaction() if snapshots else contextlib.nullcontext():
        done = bool(
            conn.execute(
                f"UPDATE job_hosts SET state = %s{sent}{sets}, updated_at = now()"
                f" WHERE id = %s AND owner = %s AND state = ANY(%s){permit}",
                [to_state, *params, row_id, owner, list(from_states)],
            ).rowcount
        )
        if done:
            write_snapshots(conn, row_id, snapshots)
    return done


def update_row(conn: psycopg.Connection[Any], row_id: int, owner: str, **values: Any) -> bool:
    """Change fields (not the state) of an in-flight row this ``owner`` holds."""
    values, snapshots = split_snapshots(values)
    sets, params = _assignments(values)
    # One statement unless a snapshot goes with it (then both in one transaction).
    with conn.transaction() if snapshots else contextlib.nullcontext():
        done = bool(
            conn.execute(
                f"UPDATE job_hosts SET updated_at = now(){sets}"
                " WHERE id = %s AND owner = %s AND state = ANY(%s)",
                [*params, row_id, owner, list(ACTIVE_ROW_STATES)],
            ).rowcount
        )
        if done:
            write_snapshots(conn, row_id, snapshots)
    return done


def finish_row(
    conn: psycopg.Connection[Any], row_id: int, owner: str, state: str, **values: Any
) -> bool:
    """End the current attempt of an in-flight row this ``owner`` holds: the row becomes
    ``state`` (final) and the attempt is recorded with its error, in one transaction."""
    if state not in FINAL_ROW_STATES:
        raise ValueError(f"{state!r} is not a final state")
    values, snapshots = split_snapshots(values)
    sets, params = _assignments(values)
    progress = ", progress = 100" if state == "succeeded" and "progress" not in values else ""
    with conn.transaction():
        found = conn.execute(
            f"UPDATE job_hosts SET state = %s, finished_at = now(), lease_expires_at = NULL"
            f"{progress}{sets}, updated_at = now()"
            " WHERE id = %s AND owner = %s AND state = ANY(%s)"
            " RETURNING host_id, attempts, agent_job_id, dispatched_at, error_code, error_message",
            [state, *params, row_id, owner, list(ACTIVE_ROW_STATES)],
        ).fetchone()
        if found is None:
            return False
        write_snapshots(conn, row_id, snapshots)
        host_id, _, agent_job_id, started, code, message = found
        # Numbered per row across manual retries too (which start the row's count again).
        conn.execute(
            "INSERT INTO job_host_attempts (row_id, host_id, attempt, agent_job_id, started_at,"
            " outcome, error_code, error_message) SELECT %s, %s, coalesce(max(attempt), 0) + 1,"
            " %s, %s, %s, %s, %s FROM job_host_attempts WHERE row_id = %s",
            (row_id, host_id, agent_job_id, started, state, code, message, row_id),
        )
    return True


def recorded_agent_jobs(conn: psycopg.Connection[Any], host_id: int) -> set[str]:
    """Every agent job id this host's rows (and their earlier attempts, and the separate reboot
    jobs of older agents) already account for."""
    return {
        str(r[0])
        for r in conn.execute(
            "SELECT agent_job_id FROM job_hosts WHERE host_id = %s AND agent_job_id IS NOT NULL"
            " UNION SELECT reboot_job_id FROM job_hosts"
            " WHERE host_id = %s AND reboot_job_id IS NOT NULL"
            " UNION SELECT agent_job_id FROM job_host_attempts"
            " WHERE host_id = %s AND agent_job_id IS NOT NULL",
            (host_id, host_id, host_id),
        ).fetchall()
    }


@dataclass(frozen=True)
class AttemptRow:
    row_id: int
    attempt: int
    agent_job_id: str | None
    started_at: dt.datetime | None
    finished_at: dt.datetime
    outcome: str
    error_code: str
    error_message: str


def row_attempts(conn: psycopg.Connection[Any], row_id: int) -> list[AttemptRow]:
    return [
        AttemptRow(*r)
        for r in conn.execute(
            "SELECT row_id, attempt, agent_job_id, started_at, finished_at, outcome, error_code,"
            " error_message FROM job_host_attempts WHERE row_id = %s ORDER BY attempt",
            (row_id,),
        ).fetchall()
    ]


def job_attempts(conn: psycopg.Connection[Any], job_id: int) -> dict[int, list[AttemptRow]]:
    """The earlier attempts of every row of a job, by row id (the job page's history)."""
    found: dict[int, list[AttemptRow]] = {}
    for r in conn.execute(
        "SELECT a.row_id, a.attempt, a.agent_job_id, a.started_at, a.finished_at, a.outcome,"
        " a.error_code, a.error_message FROM job_host_attempts a"
        " JOIN job_hosts r ON r.id = a.row_id WHERE r.job_id = %s ORDER BY a.row_id, a.attempt",
        (job_id,),
    ).fetchall():
        found.setdefault(int(r[0]), []).append(AttemptRow(*r))
    return found


# -- the coordinating side -------------------------------------------------------------------


@dataclass(frozen=True)
class Decisions:
    """What the coordinator decided for one job in one pass."""

    job_id: int
    waiting: tuple[int, ...] = ()  # rows → waiting_window (no permit)
    permits: tuple[tuple[int, dt.datetime], ...] = ()  # rows → queued, runnable until then
    skipped: tuple[tuple[int, str], ...] = ()  # waiting rows → skipped, with the reason
    no_window: tuple[tuple[int, str], ...] = ()  # waiting rows → skipped NO_WINDOW, reason
    retry: tuple[int, ...] = ()  # failed rows → queued again (retry once)
    status: str | None = None  # new job status, if it changed
    started: bool = False  # set started_at
    finished: bool = False  # set finished_at


def apply_decisions(conn: psycopg.Connection[Any], d: Decisions) -> bool:
    """Write one pass's decisions for a job, in one transaction. Returns False when a final
    job status was decided but not written (a row is not final in the database: e.g. a runner
    claimed it while the coordinator decided to skip it), True otherwise."""
    with conn.transaction():
        if d.waiting:
            conn.execute(
                "UPDATE job_hosts SET state = 'waiting_window', run_until = NULL,"
                " updated_at = now() WHERE id = ANY(%s) AND state = 'queued'",
                (list(d.waiting),),
            )
        if d.retry:
            conn.execute(
                "UPDATE job_hosts SET state = 'queued', updated_at = now(), queued_at = now(),"
                " dispatched_at = NULL, started_at = NULL, finished_at = NULL, progress = 0,"
                " drift = '' WHERE id = ANY(%s) AND state = 'failed'",  # the try's times: history
                (list(d.retry),),
            )
        by_until: dict[dt.datetime, list[int]] = {}
        for row_id, until in d.permits:
            by_until.setdefault(until, []).append(row_id)
        for until, row_ids in by_until.items():  # one statement per window end, not per row
            conn.execute(
                "UPDATE job_hosts SET state = 'queued', run_until = %s, updated_at = now()"
                " WHERE id = ANY(%s) AND state = ANY(%s)"
                " AND (run_until IS DISTINCT FROM %s OR state <> 'queued')",
                (until, row_ids, list(WAITING_ROW_STATES), until),
            )
        for code, ended in (("SKIPPED", d.skipped), ("NO_WINDOW", d.no_window)):
            for row_id, reason in ended:
                conn.execute(
                    "UPDATE job_hosts SET state = 'skipped', finished_at = now(),"
                    " run_until = NULL, error_code = %s, error_message = %s, updated_at = now()"
                    " WHERE id = %s AND state = ANY(%s)",
                    (code, reason, row_id, list(WAITING_ROW_STATES)),
                )
        sets = []
        params: list[Any] = []
        if d.status is not None:
            sets.append("status = %s")
            params.append(d.status)
        if d.started:
            sets.append("started_at = coalesce(started_at, now())")
        if d.finished:
            sets.append("finished_at = now()")
        if sets:
            # A final status only while every row is final: a coordinator deciding on rows it
            # has not re-read yet (a manual retry just queued some) must not end the job.
            final = d.status in ("succeeded", "partially_failed", "failed", "cancelled")
            guard = (
                " AND NOT EXISTS (SELECT 1 FROM job_hosts r WHERE r.job_id = jobs.id"
                " AND r.state <> ALL(%s))"
                if final
                else ""
            )
            written = conn.execute(
                f"UPDATE jobs SET {', '.join(sets)} WHERE id = %s{guard}",
                [*params, d.job_id, *([list(FINAL_ROW_STATES)] if final else [])],
            ).rowcount
            if final and not written:
                return False
    return True


def create_window_job(
    conn: psycopg.Connection[Any],
    window_id: int,
    occurrence: dt.datetime,
    spec: JobSpec,
    batches: Sequence[tuple[int, int]],
) -> int | None:
    """Auto-apply: claim the window occurrence, create its job and attach it, in ONE
    transaction (a crash in between leaves either nothing or everything). None when this
    occurrence already has its deployment."""
    with conn.transaction():
        claimed = conn.execute(
            "INSERT INTO window_runs (window_id, occurrence_start) VALUES (%s, %s)"
            " ON CONFLICT DO NOTHING RETURNING window_id",
            (window_id, occurrence),
        ).fetchone()
        if claimed is None:
            return None
        job_id = create_job(conn, spec, batches)
        conn.execute(
            "UPDATE window_runs SET job_id = %s WHERE window_id = %s AND occurrence_start = %s",
            (job_id, window_id, occurrence),
        )
    return job_id


def retry_failed_rows(conn: psycopg.Connection[Any], job_id: int) -> int:
    """A manual retry: the job's failed rows queue again (attempts counted afresh, no permit:
    the coordinator gives one; the last try's times and progress cleared: its history keeps
    them), and the job runs again; returns how many rows."""
    with conn.transaction():
        changed = conn.execute(
            "UPDATE job_hosts SET state = 'queued', attempts = 0, run_until = NULL,"
            " error_code = '', error_message = '', error_stderr = '', updated_at = now(),"
            " dispatched_at = NULL, started_at = NULL, finished_at = NULL, progress = 0,"
            " queued_at = now(), drift = '' WHERE job_id = %s AND state = 'failed'"
            " AND EXISTS (SELECT 1 FROM hosts h WHERE h.id = job_hosts.host_id)",  # not removed
            (job_id,),
        ).rowcount
        if changed:
            conn.execute(
                "UPDATE jobs SET status = 'running', finished_at = NULL WHERE id = %s", (job_id,)
            )
        return int(changed)


def cancel_job(conn: psycopg.Connection[Any], job_id: int) -> int:
    """Cancel the rows that sent nothing yet (waiting, queued, or ``claimed``: a runner waiting
    out refusals or the unreachable ladder; its send then finds the row cancelled and stops);
    returns how many."""
    with conn.transaction():
        get_job(conn, job_id)
        return conn.execute(
            "UPDATE job_hosts SET state = 'cancelled', finished_at = now(), run_until = NULL,"
            " lease_expires_at = NULL, updated_at = now() WHERE job_id = %s AND state = ANY(%s)",
            (job_id, [*WAITING_ROW_STATES, "claimed"]),
        ).rowcount


# -- windows and blackouts ---------------------------------------------------------------------


@dataclass(frozen=True)
class WindowRow:
    id: int
    name: str
    host_id: int | None
    group_id: int | None
    recurrence: str
    start_date: dt.date
    start_time: dt.time
    duration_minutes: int
    timezone: str
    weekdays: tuple[int, ...]
    day_of_month: int
    short_month: str
    nth: int
    until: dt.date | None
    enabled: bool
    auto_apply: str
    allow_reboot: bool
    target: str = ""  # host or group name, for display
    target_address: str = ""  # a host window's host address ('' for a group), for display


WINDOW_FIELDS = (
    "name",
    "host_id",
    "group_id",
    "recurrence",
    "start_date",
    "start_time",
    "duration_minutes",
    "timezone",
    "weekdays",
    "day_of_month",
    "short_month",
    "nth",
    "until",
    "enabled",
    "auto_apply",
    "allow_reboot",
)


def window_scope_condition(scope: HostScope) -> sql.Composable:
    """Windows visible within ``scope``: those of a host within it or of one of its groups
    (every window for a scope of all hosts)."""
    if scope.all_hosts:
        return sql.SQL("TRUE")
    return sql.SQL("((w.host_id IS NOT NULL AND {c}) OR w.group_id = ANY({g}))").format(
        c=scope_condition(scope, "w.host_id"), g=sql.Literal(sorted(scope.group_ids))
    )


def list_windows(conn: psycopg.Connection[Any], scope: HostScope = EVERYTHING) -> list[WindowRow]:
    """The windows visible within ``scope``, in id order."""
    query = sql.SQL(
        "SELECT w.id, {cols}, coalesce(nullif(h.display_name, ''), h.name, 'group ' || g.name),"
        " coalesce(host(h.address), '')"
        " FROM maintenance_windows w"
        " LEFT JOIN hosts h ON h.id = w.host_id LEFT JOIN groups g ON g.id = w.group_id"
        " WHERE {v} ORDER BY w.id"
    ).format(cols=sql.SQL(", ".join("w." + f for f in WINDOW_FIELDS)),
             v=window_scope_condition(scope))  # fmt: skip
    rows = conn.execute(query).fetchall()
    return [WindowRow(*r[:9], tuple(r[9]), *r[10:]) for r in rows]  # type: ignore[call-arg]


def save_window(
    conn: psycopg.Connection[Any], values: dict[str, Any], window_id: int | None, actor: str
) -> int:
    """Create (``window_id`` None) or replace a window; the change is recorded."""
    columns = [f for f in WINDOW_FIELDS if f in values]
    with conn.transaction():
        if window_id is None:
            row = conn.execute(
                f"INSERT INTO maintenance_windows ({', '.join(columns)})"
                f" VALUES ({', '.join(['%s'] * len(columns))}) RETURNING id",
                [values[c] for c in columns],
            ).fetchone()
            assert row is not None
            window_id, action = int(row[0]), "created"
        else:
            updated = conn.execute(
                f"UPDATE maintenance_windows SET {', '.join(f'{c} = %s' for c in columns)},"
                " updated_at = now() WHERE id = %s",
                [*[values[c] for c in columns], window_id],
            ).rowcount
            if not updated:
                raise NotFound(f"no window {window_id}")
            action = "updated"
        _record_change(conn, window_id, action, actor)
    return window_id


def window_visible(conn: psycopg.Connection[Any], window_id: int, scope: HostScope) -> bool:
    """Whether the window exists and is visible within ``scope``."""
    query = sql.SQL("SELECT 1 FROM maintenance_windows w WHERE w.id = %s AND {v}").format(
        v=window_scope_condition(scope)
    )
    return conn.execute(query, (window_id,)).fetchone() is not None


def delete_window(conn: psycopg.Connection[Any], window_id: int, actor: str) -> None:
    with conn.transaction():
        _record_change(conn, window_id, "deleted", actor)
        if not conn.execute("DELETE FROM maintenance_windows WHERE id = %s", (window_id,)).rowcount:
            raise NotFound(f"no window {window_id}")


def _record_change(conn: psycopg.Connection[Any], window_id: int, action: str, actor: str) -> None:
    conn.execute(
        "INSERT INTO window_changes (window_id, action, actor, snapshot)"
        " SELECT %s, %s, %s, coalesce((SELECT to_jsonb(w) FROM maintenance_windows w"
        " WHERE w.id = %s), '{}'::jsonb)",
        (window_id, action, actor, window_id),
    )


def window_changes(conn: psycopg.Connection[Any], window_id: int) -> list[tuple[str, dt.datetime]]:
    return [
        (r[0], r[1])
        for r in conn.execute(
            "SELECT action, at FROM window_changes WHERE window_id = %s ORDER BY id",
            (window_id,),
        ).fetchall()
    ]


def host_window_map(conn: psycopg.Connection[Any]) -> dict[int, list[int]]:
    """Window ids that apply to each host: its own and its groups'."""
    result: dict[int, list[int]] = {}
    for host_id, window_id in conn.execute(
        "SELECT w.host_id, w.id FROM maintenance_windows w WHERE w.host_id IS NOT NULL"
        " UNION SELECT hg.host_id, w.id FROM maintenance_windows w"
        " JOIN host_groups hg ON hg.group_id = w.group_id"
    ).fetchall():
        result.setdefault(host_id, []).append(window_id)
    return result


@dataclass(frozen=True)
class BlackoutRow:
    id: int
    name: str
    starts_at: dt.datetime
    ends_at: dt.datetime


def list_blackouts(conn: psycopg.Connection[Any]) -> list[BlackoutRow]:
    return [
        BlackoutRow(*r)
        for r in conn.execute(
            "SELECT id, name, starts_at, ends_at FROM blackouts ORDER BY starts_at"
        ).fetchall()
    ]


def create_blackout(
    conn: psycopg.Connection[Any], name: str, starts_at: dt.datetime, ends_at: dt.datetime
) -> int:
    row = conn.execute(
        "INSERT INTO blackouts (name, starts_at, ends_at) VALUES (%s, %s, %s) RETURNING id",
        (name, starts_at, ends_at),
    ).fetchone()
    assert row is not None
    return int(row[0])


def delete_blackout(conn: psycopg.Connection[Any], blackout_id: int) -> None:
    if not conn.execute("DELETE FROM blackouts WHERE id = %s", (blackout_id,)).rowcount:
        raise NotFound(f"no blackout {blackout_id}")


def pending_union(conn: psycopg.Connection[Any], host_ids: Sequence[int]) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT name, (array_agg(severity ORDER BY CASE severity WHEN 'critical' THEN 0"
        " WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END))[1],"
        " count(DISTINCT host_id), bool_or(requires_reboot)"
        " FROM host_patches WHERE resolved_at IS NULL AND host_id = ANY(%s)"
        " GROUP BY name ORDER BY count(DISTINCT host_id) DESC, name",
        (list(host_ids),),
    ).fetchall()
    return [
        {"name": r[0], "severity": r[1], "hosts": int(r[2]), "requires_reboot": r[3]} for r in rows
    ]


def host_security_patches(conn: psycopg.Connection[Any], host_id: int) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT name FROM host_patches WHERE host_id = %s AND resolved_at IS NULL"
            " AND severity IN ('critical', 'high') ORDER BY name",
            (host_id,),
        ).fetchall()
    ]
