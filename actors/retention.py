"""The daily retention run (R-9.2): timing, the batch loop and the figures for /metrics.

What is old is decided in ``storage.retention`` (one bounded DELETE per call, each its own short
transaction); the audit log is pruned through ``storage.audit.prune_audit``, which verifies the
chain up to the cut and writes a signed checkpoint first, so ``audit verify`` still proves what
remains.

Timing: at start the last finished run is read from the database; if it is a day old or more (or
there is none) a run starts at once, else the first run waits until it is a day old. Afterwards a
run every ``every_s`` (drift-free, ``trio.sleep_until``). A database outage is waited out
(``retry_s``) and the run is retried whole (each batch is committed, so a retry resumes where it
stopped). A step the database refuses (a trigger, a constraint; the audit log's too) or that
hits the statement timeout is recorded in the run's ``error`` and skipped until the next run;
any other error is logged and counted (``failures``) and the next run happens as planned: the
task never ends the server. Cancellation stops between batches; a batch in flight is cancelled
on the server by ``Database.run``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import trio

from storage import AuditBroken, AuditEntry, Database, StorageError, run_audited
from storage.retention import (
    AUDIT_STEP,
    PRUNE_STEPS,
    PruneRefused,
    finish_run,
    last_finished_run,
    prune_audit_entries,
    prune_batch,
    start_run,
)

log = logging.getLogger(__name__)

DAY_S = 86_400.0
AUDIT_TABLE = AUDIT_STEP

PruneAudit = Callable[[dt.datetime, int], Awaitable[int]]


@dataclass(frozen=True)
class Cutoffs:
    """Rows older than ``operational`` (audit entries: ``audit``) are deleted; ``now`` is the
    run's instant (expired sessions and login tokens go whatever their age)."""

    now: dt.datetime
    operational: dt.datetime
    audit: dt.datetime

    @classmethod
    def at(cls, now: dt.datetime, operational_days: int, audit_days: int) -> Cutoffs:
        return cls(
            now, now - dt.timedelta(days=operational_days), now - dt.timedelta(days=audit_days)
        )


@dataclass(frozen=True)
class RetentionSummary:
    """One run: rows deleted per table, batches used, wall-clock duration."""

    cutoffs: Cutoffs
    deleted: Mapping[str, int]
    batches: int
    duration_s: float
    refused: Mapping[str, str] = field(default_factory=dict)  # step -> why the database refused

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


@dataclass(frozen=True)
class RetentionStatistics:
    """For /metrics: totals since start and the last run."""

    runs: int
    failures: int
    deleted_total: Mapping[str, int]
    last_run_at: dt.datetime | None  # wall clock, from the database at start
    last_duration_s: float | None


async def prune(
    db: Database,
    cutoffs: Cutoffs,
    *,
    batch: int = 1000,
    prune_audit: PruneAudit | None = None,
    steps: tuple[str, ...] = tuple(PRUNE_STEPS),
) -> RetentionSummary:
    """Delete every operational row older than the cutoffs, ``batch`` rows per transaction,
    then the audit log's old entries through ``prune_audit`` (its own batches and checkpoint).
    Raises ``StorageError`` when the database fails midway (what was deleted stays deleted)."""
    started = trio.current_time()
    deleted: dict[str, int] = {}
    batches = 0
    refused: dict[str, str] = {}
    for step in steps:
        total = 0
        while True:
            try:
                n = await db.run(prune_batch, step, cutoffs.operational, cutoffs.now, batch)
            except PruneRefused as exc:
                # Retrying cannot help (a constraint, a trigger): said once, the rest goes on.
                log.error("retention: %s not pruned: %s", step, exc.reason)
                refused[step] = exc.reason
                break
            batches += 1
            total += n
            if n < batch:
                break
        deleted[step] = total
    if prune_audit is not None:
        try:
            deleted[AUDIT_TABLE] = await prune_audit(cutoffs.audit, batch)
        except PruneRefused as exc:
            log.error("retention: %s not pruned: %s", AUDIT_TABLE, exc.reason)
            refused[AUDIT_TABLE] = exc.reason
            deleted[AUDIT_TABLE] = 0
    return RetentionSummary(cutoffs, deleted, batches, trio.current_time() - started, refused)


class DatabaseRetention:
    """The runs as recorded in the database: the last finished one, and ``execute`` (a run
    recorded in ``retention_runs``, its ``error`` set when it fails)."""

    def __init__(
        self, db: Database, clock: Callable[[], dt.datetime], *, batch: int = 1000,
        prune_audit: PruneAudit | None = None,
    ) -> None:  # fmt: skip
        self.db = db
        self.clock = clock
        self.batch = batch
        self.prune_audit = prune_audit

    async def last_run(self) -> dt.datetime | None:
        last = await self.db.run(last_finished_run)
        return None if last is None else last.finished_at

    async def execute(self, cutoffs: Cutoffs) -> RetentionSummary:
        run_id = await self.db.run(start_run, cutoffs.now, cutoffs.operational, cutoffs.audit)
        try:
            summary = await prune(self.db, cutoffs, batch=self.batch, prune_audit=self.prune_audit)
        except Exception as exc:
            # The outage may go on: then the run stays unfinished, which is as true.
            with trio.move_on_after(5), contextlib.suppress(StorageError):
                await self.db.run(finish_run, run_id, None, {}, str(exc) or type(exc).__name__)
            raise
        # The run is an action of the system's: audited with its record, in one transaction.
        entry = AuditEntry(
            "system", "retention.run", f"retention_run:{run_id}",
            after={"deleted": dict(summary.deleted), "refused": dict(summary.refused),
                   "operational_cutoff": cutoffs.operational.isoformat(),
                   "audit_cutoff": cutoffs.audit.isoformat()},
        ) if self.db.audit_key is not None else None  # fmt: skip
        error = "; ".join(f"{step}: {why}" for step, why in summary.refused.items())
        await run_audited(self.db, entry, finish_run, run_id, self.clock(), summary.deleted, error)
        return summary


@dataclass
class RetentionTask:
    """Runs ``execute`` once a day; see the module docstring for the timing. ``last_run`` and
    ``execute`` are ``DatabaseRetention``'s in production."""

    last_run: Callable[[], Awaitable[dt.datetime | None]]
    execute: Callable[[Cutoffs], Awaitable[RetentionSummary]]
    clock: Callable[[], dt.datetime]
    operational_days: Callable[[], int]  # read at each run: a configuration reload applies
    audit_days: Callable[[], int]
    every_s: float = DAY_S
    retry_s: float = 300.0
    runs: int = 0
    failures: int = 0
    deleted_total: dict[str, int] = field(default_factory=dict)
    last_run_at: dt.datetime | None = None
    last_duration_s: float | None = None
    ran: trio.Event = field(default_factory=trio.Event)  # set after each run (tests wait on it)

    @classmethod
    def for_database(
        cls,
        db: Database,
        operational_days: Callable[[], int],
        audit_days: Callable[[], int],
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> RetentionTask:
        """The production task: runs recorded in the database; the audit log pruned with the
        database's audit key (not at all without one). A chain that does not verify up to the
        cut is not pruned: logged as an error, the run goes on (``audit verify`` names the
        broken entry)."""
        key = db.audit_key

        async def audit(cutoff: dt.datetime, batch: int) -> int:
            assert key is not None
            try:
                return await db.run(prune_audit_entries, key, cutoff, batch)
            except AuditBroken as exc:  # refused like a step the database refuses
                raise PruneRefused(AUDIT_TABLE, str(exc)) from exc

        database = DatabaseRetention(db, clock, prune_audit=audit if key is not None else None)
        return cls(database.last_run, database.execute, clock, operational_days, audit_days)

    def statistics(self) -> RetentionStatistics:
        return RetentionStatistics(
            self.runs, self.failures, dict(self.deleted_total), self.last_run_at,
            self.last_duration_s,
        )  # fmt: skip

    async def _last_run(self) -> dt.datetime | None:
        while True:
            try:
                return await self.last_run()
            except StorageError as exc:
                log.warning("retention: last run not read (%s); retrying in %.0f s", exc,
                            self.retry_s)  # fmt: skip
                await trio.sleep(self.retry_s)

    async def run_once(self) -> RetentionSummary:
        """One whole run; after a database failure it is retried every ``retry_s``."""
        while True:
            cutoffs = Cutoffs.at(self.clock(), self.operational_days(), self.audit_days())
            try:
                summary = await self.execute(cutoffs)
            except StorageError as exc:
                self.failures += 1
                log.warning("retention run failed (%s); retrying in %.0f s", exc, self.retry_s)
                await trio.sleep(self.retry_s)
                continue
            break
        self.runs += 1
        for table, n in summary.deleted.items():
            self.deleted_total[table] = self.deleted_total.get(table, 0) + n
        self.last_run_at = self.clock()
        self.last_duration_s = summary.duration_s
        pruned = ", ".join(f"{t} {n}" for t, n in summary.deleted.items() if n) or "nothing"
        log.info(
            "retention: deleted %d row(s) older than %s (audit: older than %s) in %d batch(es),"
            " %.1f s: %s",
            summary.total, cutoffs.operational.isoformat(timespec="seconds"),
            cutoffs.audit.isoformat(timespec="seconds"), summary.batches, summary.duration_s,
            pruned,
        )  # fmt: skip
        done, self.ran = self.ran, trio.Event()
        done.set()
        return summary

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Runs until cancelled; ready at once (the first run happens in the background)."""
        task_status.started()
        last = await self._last_run()
        self.last_run_at = last
        deadline = trio.current_time()
        if last is not None:
            age = (self.clock() - last).total_seconds()
            deadline += max(0.0, self.every_s - age)
        while True:
            await trio.sleep_until(deadline)
            try:
                await self.run_once()
            except Exception:  # a bug, not an outage: never end the server; next run as planned
                self.failures += 1
                log.exception("retention run failed; the next one is in %.0f s", self.every_s)
            deadline += self.every_s
