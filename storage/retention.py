"""Retention (R-9.2): which operational rows are old enough to delete, one bounded batch at a
time, and the record of each pruning run. The loop, the timing and the audit log's own pruning
(``storage.audit.prune_audit``, which writes a signed checkpoint first) are the caller's.

Each ``prune_batch`` call deletes at most ``limit`` rows of one step in its own short
transaction (autocommit connection), so no lock is held longer than one batch. Steps run in
``PRUNE_STEPS`` order: children before their parents (attempts, rows, then jobs; scan results,
then scans), and removed hosts last, once no history refers to them.

History of a removed host keeps the host's id; ``removed_hosts`` (filled by a trigger on every
host delete, migration 0011) keeps its name and groups until retention removes both.
``known_hosts`` is the view of every host, live or removed, for history queries.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from .audit import prune_audit
from .errors import StorageError
from .scope import HostScope, scope_condition

_FINAL_JOB = "('succeeded', 'partially_failed', 'failed', 'cancelled')"
_OLD_JOB = f"j.finished_at < %(cutoff)s AND j.status IN {_FINAL_JOB}"
_OLD_SCAN = "s.status <> 'running' AND coalesce(s.finished_at, s.started_at) < %(cutoff)s"

AUDIT_STEP = "audit_entries"  # the audit log's step (prune_audit_entries), after PRUNE_STEPS

# step name -> DELETE of at most %(limit)s rows. %(cutoff)s is the operational cutoff, %(now)s
# the current time (expired credentials go whatever their age).
PRUNE_STEPS: Mapping[str, str] = {
    "host_health_history": "DELETE FROM host_health_history WHERE id IN (SELECT id FROM"
    " host_health_history WHERE at < %(cutoff)s ORDER BY at LIMIT %(limit)s)",
    "host_patches": "DELETE FROM host_patches WHERE id IN (SELECT id FROM host_patches"
    " WHERE resolved_at < %(cutoff)s ORDER BY resolved_at LIMIT %(limit)s)",
    "job_host_attempts": "DELETE FROM job_host_attempts WHERE id IN (SELECT a.id FROM"
    " job_host_attempts a JOIN job_hosts r ON r.id = a.row_id JOIN jobs j ON j.id = r.job_id"
    f" WHERE {_OLD_JOB} LIMIT %(limit)s)",
    "job_hosts": "DELETE FROM job_hosts WHERE id IN (SELECT r.id FROM job_hosts r JOIN jobs j"
    f" ON j.id = r.job_id WHERE {_OLD_JOB} LIMIT %(limit)s)",
    "jobs": f"DELETE FROM jobs WHERE id IN (SELECT j.id FROM jobs j WHERE {_OLD_JOB}"
    " AND NOT EXISTS (SELECT 1 FROM job_hosts r WHERE r.job_id = j.id) LIMIT %(limit)s)",
    "window_changes": "DELETE FROM window_changes WHERE id IN (SELECT id FROM window_changes"
    " WHERE at < %(cutoff)s ORDER BY at LIMIT %(limit)s)",
    "discovery_results": "DELETE FROM discovery_results WHERE (scan_id, address) IN (SELECT"
    " d.scan_id, d.address FROM discovery_results d JOIN discovery_scans s ON s.id = d.scan_id"
    f" WHERE {_OLD_SCAN} LIMIT %(limit)s)",
    "discovery_scans": "DELETE FROM discovery_scans WHERE id IN (SELECT s.id FROM"
    f" discovery_scans s WHERE {_OLD_SCAN} AND NOT EXISTS (SELECT 1 FROM discovery_results d"
    " WHERE d.scan_id = s.id) LIMIT %(limit)s)",
    "enrolments": "DELETE FROM enrolments WHERE id IN (SELECT id FROM enrolments"
    " WHERE expires_at < %(cutoff)s AND coalesce(decided_at, expires_at) < %(cutoff)s"
    " LIMIT %(limit)s)",
    "sessions": "DELETE FROM sessions WHERE token_hash IN (SELECT token_hash FROM sessions"
    " WHERE expires_at < %(now)s LIMIT %(limit)s)",
    "login_tokens": "DELETE FROM login_tokens WHERE token_hash IN (SELECT token_hash FROM"
    " login_tokens WHERE expires_at < %(now)s LIMIT %(limit)s)",
    "notification_messages": "DELETE FROM notification_messages WHERE id IN (SELECT id FROM"
    " notification_messages WHERE state IN ('sent', 'failed')"
    " AND coalesce(sent_at, created_at) < %(cutoff)s LIMIT %(limit)s)",
    "notification_events": "DELETE FROM notification_events WHERE id IN (SELECT id FROM"
    " notification_events WHERE dispatched_at < %(cutoff)s LIMIT %(limit)s)",
    "api_refresh_tokens": "DELETE FROM api_refresh_tokens WHERE id IN (SELECT id FROM"
    " api_refresh_tokens WHERE expires_at < %(now)s LIMIT %(limit)s)",
    # Expired or revoked before the cutoff (their groups, refresh tokens, families go along).
    "api_tokens": "DELETE FROM api_tokens WHERE id IN (SELECT id FROM api_tokens"
    " WHERE expires_at < %(cutoff)s OR revoked_at < %(cutoff)s LIMIT %(limit)s)",
    # A family with no refresh token left: its access JWTs (refused without the row) ended
    # with the last refresh token's hour, long before the cutoff; revoked ones after it.
    "api_token_families": "DELETE FROM api_token_families f WHERE family_id IN (SELECT"
    " f2.family_id FROM api_token_families f2 WHERE NOT EXISTS (SELECT 1 FROM"
    " api_refresh_tokens r WHERE r.family_id = f2.family_id)"
    " AND (f2.revoked_at IS NULL OR f2.revoked_at < %(cutoff)s) LIMIT %(limit)s)",
    "window_runs": "DELETE FROM window_runs WHERE (window_id, occurrence_start) IN (SELECT"
    " window_id, occurrence_start FROM window_runs WHERE occurrence_start < %(cutoff)s"
    " LIMIT %(limit)s)",
    # Runs started before the cutoff, finished or not (a failure repeated every retry_s
    # leaves an unfinished row each time).
    "retention_runs": "DELETE FROM retention_runs WHERE id IN (SELECT id FROM retention_runs"
    " WHERE started_at < %(cutoff)s LIMIT %(limit)s)",
    "sso_logins": "DELETE FROM sso_logins WHERE browser_hash IN (SELECT browser_hash FROM"
    " sso_logins WHERE expires_at < %(now)s LIMIT %(limit)s)",
    "risk_waivers": "DELETE FROM risk_waivers WHERE id IN (SELECT id FROM risk_waivers"
    " WHERE coalesce(revoked_at, expires_at) < %(cutoff)s LIMIT %(limit)s)",
    "removed_hosts": "DELETE FROM removed_hosts WHERE id IN (SELECT rh.id FROM removed_hosts rh"
    " WHERE rh.removed_at < %(cutoff)s"
    " AND NOT EXISTS (SELECT 1 FROM host_patches x WHERE x.host_id = rh.id)"
    " AND NOT EXISTS (SELECT 1 FROM host_health_history x WHERE x.host_id = rh.id)"
    " AND NOT EXISTS (SELECT 1 FROM job_hosts x WHERE x.host_id = rh.id)"
    " AND NOT EXISTS (SELECT 1 FROM job_host_attempts x WHERE x.host_id = rh.id)"
    " AND NOT EXISTS (SELECT 1 FROM risk_waivers x WHERE x.host_id = rh.id)"
    " LIMIT %(limit)s)",
}


class PruneRefused(StorageError):
    """The database refused a step's DELETE itself (e.g. a row another table still refers to,
    a trigger): retrying cannot help; the other steps can still run."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


def prune_batch(
    conn: psycopg.Connection[Any], step: str, cutoff: dt.datetime, now: dt.datetime, limit: int
) -> int:
    """Delete at most ``limit`` rows of ``step`` (a ``PRUNE_STEPS`` key) older than ``cutoff``;
    the number deleted (fewer than ``limit``: the step is done). One statement, one short
    transaction. Raises ``PruneRefused`` when the database refuses the rows (an outage is
    ``DatabaseUnavailable``, from ``Database.run``)."""
    query = PRUNE_STEPS[step]
    with _refusals(step):
        cur = conn.execute(query, {"cutoff": cutoff, "now": now, "limit": limit})
    return max(cur.rowcount, 0)


class PruneTimedOut(PruneRefused):
    """A step's statement hit the statement timeout (or was cancelled on the server): not an
    outage, so not retried every few minutes; recorded, and the next run tries again."""


@contextlib.contextmanager
def _refusals(step: str) -> Iterator[None]:
    """psycopg errors of ``step`` as ``PruneRefused`` / ``PruneTimedOut``; an outage (any
    other ``OperationalError``) propagates (``Database.run`` makes it DatabaseUnavailable)."""
    try:
        yield
    except psycopg.errors.QueryCanceled as exc:
        raise PruneTimedOut(step, f"statement timeout: {_first_line(exc)}") from exc
    except psycopg.OperationalError:
        raise
    except psycopg.Error as exc:
        raise PruneRefused(step, _first_line(exc)) from exc


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def prune_audit_entries(
    conn: psycopg.Connection[Any], key: bytes, cutoff: dt.datetime, limit: int
) -> int:
    """``storage.audit.prune_audit`` as a retention step (``AUDIT_STEP``): a delete the database
    refuses (a trigger, a permission) is ``PruneRefused``, a timeout ``PruneTimedOut``;
    ``AuditBroken`` (the chain does not verify up to the cut) propagates."""
    with _refusals(AUDIT_STEP):
        return prune_audit(conn, key, cutoff, limit)


# -- runs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetentionRun:
    id: int
    started_at: dt.datetime
    finished_at: dt.datetime | None
    operational_cutoff: dt.datetime
    audit_cutoff: dt.datetime
    deleted: Mapping[str, int]
    error: str


def start_run(
    conn: psycopg.Connection[Any],
    started_at: dt.datetime,
    operational_cutoff: dt.datetime,
    audit_cutoff: dt.datetime,
) -> int:
    row = conn.execute(
        "INSERT INTO retention_runs (started_at, operational_cutoff, audit_cutoff)"
        " VALUES (%s, %s, %s) RETURNING id",
        (started_at, operational_cutoff, audit_cutoff),
    ).fetchone()
    assert row is not None
    return int(row[0])


def finish_run(
    conn: psycopg.Connection[Any],
    run_id: int,
    finished_at: dt.datetime | None,
    deleted: Mapping[str, int],
    error: str = "",
) -> None:
    """Record a run's outcome: ``finished_at`` None for a run that broke off (``error`` says
    why); a finished run's ``error`` lists the steps the database refused, if any."""
    conn.execute(
        "UPDATE retention_runs SET finished_at = %s, deleted = %s, error = %s WHERE id = %s",
        (finished_at, json.dumps(dict(deleted)), error, run_id),
    )


def last_finished_run(conn: psycopg.Connection[Any]) -> RetentionRun | None:
    """The most recent run that completed; ``None`` before the first."""
    row = conn.execute(
        "SELECT id, started_at, finished_at, operational_cutoff, audit_cutoff, deleted, error"
        " FROM retention_runs WHERE finished_at IS NOT NULL"
        " ORDER BY finished_at DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    return RetentionRun(
        int(row[0]), row[1], row[2], row[3], row[4], {k: int(v) for k, v in row[5].items()}, row[6]
    )


# -- history of removed hosts ------------------------------------------------------------------


def history_scope(scope: HostScope, host_id: str) -> sql.Composable:
    """``scope_condition`` for a history table's host id column, which may name a removed host:
    a removed host is within the scope of the groups it was in when removed (admins: every
    host); the plain condition would admit every removed host to an "ungrouped" scope (it has no
    group rows left) and none to a group scope."""
    if scope.all_hosts:
        return sql.SQL("TRUE")
    column = sql.SQL(host_id)
    removed: list[sql.Composable] = []
    if scope.group_ids:
        removed.append(
            sql.SQL("rh.group_ids && {}::bigint[]").format(sql.Literal(sorted(scope.group_ids)))
        )
    if scope.ungrouped:
        removed.append(sql.SQL("cardinality(rh.group_ids) = 0"))
    removed_cond = sql.SQL(" OR ").join(removed) if removed else sql.SQL("FALSE")
    return sql.SQL(
        "(CASE WHEN EXISTS (SELECT 1 FROM removed_hosts rh WHERE rh.id = {c})"
        " THEN EXISTS (SELECT 1 FROM removed_hosts rh WHERE rh.id = {c} AND ({r}))"
        " ELSE {live} END)"
    ).format(c=column, r=removed_cond, live=scope_condition(scope, host_id))
