"""What the incremental job coordinator reads, and what moved out of its way.

- ``coordinator_jobs`` / ``coordinator_rows``: active jobs and their rows with only the columns
  the rollout policy needs (no package snapshots, no host join, no error texts), the whole set
  at start and after an outage, then only the jobs and rows a change concerns.
- ``JobListener``: a dedicated connection that ``LISTEN``s on ``pm_jobs`` (migration 0022's
  triggers: ``job:<id>`` when a job is created or its status changes, ``row:<job>:<row>`` when a
  row's state, permit or attempts change, ``windows`` when windows, group membership or
  blackouts change) and hands the changes over as ``JobNotices``.
- A row's package snapshots live in ``job_host_snapshots`` (``storage.job_snapshots``), never
  read here.

Errors: a lost listening connection raises ``DatabaseUnavailable`` (the caller reconnects and
resynchronises: notices sent meanwhile are lost).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from .errors import DatabaseUnavailable
from .jobs import JobHostRow, JobRow

CHANNEL = "pm_jobs"

_JOB_COLUMNS = (
    "id, kind, selection, packages, schedule, allow_reboot, reboot_delay_s, batch_size,"
    " batch_percent, failure_threshold, canary, status, rollback_of, created_by, created_at,"
    " started_at, finished_at"
)
# The rollout policy's columns only (actors.rollout.decide): state, batch, attempts,
# error_code, run_until.
_LEAN_ROW = "r.id, r.job_id, r.host_id, r.batch, r.state, r.attempts, r.error_code, r.run_until"


def _job(row: Sequence[Any]) -> JobRow:
    values = list(row)
    values[3] = tuple(values[3] or ())
    return JobRow(*values)


def _lean(row: Sequence[Any]) -> JobHostRow:
    row_id, job_id, host_id, batch, state, attempts, error_code, run_until = row
    return JobHostRow(
        row_id, job_id, host_id, batch, state, attempts, None, None, None, None, 0,
        error_code, "", "", run_until=run_until,
    )  # fmt: skip


def coordinator_jobs(
    conn: psycopg.Connection[Any], job_ids: Sequence[int] | None = None
) -> list[tuple[JobRow, list[JobHostRow]]]:
    """Active jobs (those of ``job_ids`` only, when given) with every row of each, lean: the
    rows carry what the rollout policy reads and nothing else. Two statements, whatever the
    number of jobs."""
    where = "status IN ('queued', 'running')"
    params: list[Any] = []
    if job_ids is not None:
        where += " AND id = ANY(%s)"
        params.append(list(job_ids))
    jobs = [
        _job(r)
        for r in conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE {where} ORDER BY id", params
        ).fetchall()
    ]
    rows: dict[int, list[JobHostRow]] = {j.id: [] for j in jobs}
    if jobs:
        for r in conn.execute(
            f"SELECT {_LEAN_ROW} FROM job_hosts r WHERE r.job_id = ANY(%s) ORDER BY r.id",
            (list(rows),),
        ).fetchall():
            rows[int(r[1])].append(_lean(r))
    return [(j, rows[j.id]) for j in jobs]


def coordinator_rows(conn: psycopg.Connection[Any], row_ids: Sequence[int]) -> list[JobHostRow]:
    """These rows as they are now (lean, as ``coordinator_jobs`` gives them); rows that no
    longer exist are left out."""
    return [
        _lean(r)
        for r in conn.execute(
            f"SELECT {_LEAN_ROW} FROM job_hosts r WHERE r.id = ANY(%s)", (list(row_ids),)
        ).fetchall()
    ]


# -- change notices ----------------------------------------------------------------------------


@dataclass
class JobNotices:
    """Changes heard on ``pm_jobs``: jobs to reload whole, rows to reload (by job)."""

    jobs: set[int] = field(default_factory=set)
    rows: dict[int, set[int]] = field(default_factory=dict)  # job id -> row ids
    windows: bool = False  # windows, their hosts or blackouts changed
    # The listener is not connected (an attempt failed): changes are not heard until it is;
    # whoever decides must read everything every time meanwhile.
    unheard: bool = False

    def __bool__(self) -> bool:
        return bool(self.jobs or self.rows or self.windows or self.unheard)

    def add(self, payload: str) -> None:
        if payload == "windows":
            self.windows = True
            return
        kind, _, rest = payload.partition(":")
        try:
            if kind == "job":
                self.jobs.add(int(rest))
            elif kind == "row":
                job_id, _, row_id = rest.partition(":")
                self.rows.setdefault(int(job_id), set()).add(int(row_id))
        except ValueError:
            pass  # not ours (someone else NOTIFYing on the channel)

    def merge(self, other: JobNotices) -> None:
        self.jobs |= other.jobs
        self.windows |= other.windows
        self.unheard |= other.unheard
        for job_id, row_ids in other.rows.items():
            self.rows.setdefault(job_id, set()).update(row_ids)


class JobListener:
    """A dedicated autocommit connection listening on ``pm_jobs``. Its methods block: call them
    from ONE worker thread at a time (``trio.to_thread.run_sync``). ``connect`` and ``wait``
    raise ``DatabaseUnavailable`` when the server cannot be reached or the connection broke."""

    def __init__(self, conninfo: str, *, connect_timeout: float = 5.0) -> None:
        self.conninfo = conninfo
        self.connect_timeout = connect_timeout
        self._conn: psycopg.Connection[Any] | None = None

    def connect(self) -> None:
        self.close()
        try:
            conn = psycopg.connect(
                self.conninfo,
                autocommit=True,
                connect_timeout=max(1, int(self.connect_timeout)),
                application_name="patch-manager-jobs-listener",
            )
            conn.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"cannot listen for job changes: {exc}") from None
        self._conn = conn

    def wait(self, timeout: float) -> JobNotices:
        """The notices that arrive within ``timeout`` seconds: returns as soon as some came
        (with every one already queued), or empty at the timeout."""
        if self._conn is None:
            raise DatabaseUnavailable("the job listener is not connected")
        found = JobNotices()
        try:
            for notice in self._conn.notifies(timeout=timeout, stop_after=1):
                found.add(notice.payload)
            if found:
                for notice in self._conn.notifies(timeout=0.0):
                    found.add(notice.payload)
        except psycopg.Error as exc:
            self.close()
            raise DatabaseUnavailable(f"job listener lost its connection: {exc}") from None
        return found

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):  # already broken: nothing to close politely
                conn.close()


__all__ = [
    "CHANNEL",
    "JobListener",
    "JobNotices",
    "coordinator_jobs",
    "coordinator_rows",
]
