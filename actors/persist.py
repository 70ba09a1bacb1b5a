"""The actors' PostgreSQL side: batched state writes, patch diffs, the host directory."""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from maintenance import Interval
from storage import (
    AuditArg,
    AuditEntry,
    Database,
    DatabaseUnavailable,
    Decisions,
    DiscoveryResult,
    EachWritten,
    HostChangeListener,
    HostRow,
    HostState,
    JobHostRow,
    JobRow,
    JobSpec,
    NotFound,
    RowsRefused,
    Transition,
    add_scan_results,
    advance_row,
    apply_decisions,
    claim_next,
    create_job,
    create_scan,
    create_window_job,
    finish_row,
    get_job,
    get_row,
    get_scan,
    host_security_patches,
    host_window_map,
    last_health_change,
    list_blackouts,
    list_hosts,
    list_windows,
    load_host_state,
    load_patch_data,
    recorded_agent_jobs,
    renew_lease,
    run_audited,
    take_over,
    update_row,
    update_scan,
    write_host_batch,
    write_host_states_each,
    write_patch_changes,
)
from storage.coordinator import JobListener, JobNotices, coordinator_jobs, coordinator_rows

from .agent_records import Package, PatchList
from .discovery import Found, ScanProgress, ScanReport
from .jobs import WindowSet, batches_for, listen_for_changes
from .ports import PatchDiff, StoredHost, data_digest, diff_patch_data, fresh_rows

log = logging.getLogger(__name__)


@dataclass
class WriteStatistics:
    flushes: int = 0
    state_rows: int = 0
    transition_rows: int = 0
    patch_rows: int = 0
    patch_writes: int = 0  # polls whose patch data was diffed against the database
    failed_flushes: int = 0
    dropped_rows: int = 0  # refused rows (e.g. of a host deleted meanwhile), queue overflow


class DatabaseSink:
    """``HostSink`` on PostgreSQL. Host states are coalesced per host and written every
    ``flush_interval`` seconds in one transaction; nothing is lost while the database is down
    (the latest state per host and every transition wait for the next flush).

    A batch the database refuses (``RowsRefused``) is written again one host at a time: rows it
    still refuses (a transition of a host deleted meanwhile) are dropped with an error log,
    every other host's state is written. The queue is bounded: one state per host and at most
    ``max_transitions`` transitions (beyond that the oldest are dropped, counted and logged).
    """

    def __init__(
        self, db: Database, *, flush_interval: float = 1.0, max_transitions: int = 100_000
    ) -> None:
        self.db = db
        self.flush_interval = flush_interval
        self.max_transitions = max_transitions
        self.stats = WriteStatistics()
        self._states: dict[int, HostState] = {}
        self._transitions: list[Transition] = []
        self._pending = trio.Event()
        self._flushed = trio.Event()
        self._flush_lock = trio.Lock()  # one batch at a time: no lock-order deadlocks
        self._urgent = trio.Event()

    async def load(self, host_id: int) -> StoredHost:
        """The host's state and the digest of its stored patch data (the maps stay here: an
        actor keeps only the digest)."""

        def read(conn: Any) -> StoredHost:
            patches, packages = load_patch_data(conn, host_id)
            digest = data_digest(patches, packages)
            since = last_health_change(conn, host_id)
            return StoredHost(load_host_state(conn, host_id), digest=digest, health_since=since)

        return await self.db.run(read)

    def submit_state(self, host_id: int, state: HostState, transition: Transition | None) -> None:
        self._states[host_id] = state
        if transition is not None:
            self._transitions.append(transition)
            self._bound_transitions()
            self._urgent.set()  # health changes are written at once, not at the next tick
        self._pending.set()

    def _bound_transitions(self) -> None:
        excess = len(self._transitions) - self.max_transitions
        if excess > 0:
            del self._transitions[:excess]
            self.stats.dropped_rows += excess
            log.error("health transition queue full: dropped the %d oldest", excess)

    async def write_patches(self, host_id: int, diff: PatchDiff, now: dt.datetime) -> int:
        rows = await self.db.run(
            lambda conn: write_patch_changes(
                conn,
                host_id,
                now=now,
                upserts=diff.upserts,
                resolved=diff.resolved,
                package_upserts=diff.package_upserts,
                package_deletes=diff.package_deletes,
            )
        )
        self.stats.patch_rows += rows
        return rows

    async def write_patch_data(
        self, host_id: int, patches: PatchList, packages: tuple[Package, ...], now: dt.datetime
    ) -> int:
        """Diff a fresh poll against the stored data and write what changed: read, diff and
        write in one transaction, in a worker thread (nothing of it on the event loop)."""

        def write(conn: Any) -> int:
            with conn.transaction():
                known_patches, known_packages = load_patch_data(conn, host_id)
                if not known_patches and not known_packages:  # nothing stored: no diff
                    fresh, installed = fresh_rows(patches, packages)
                    return write_patch_changes(
                        conn,
                        host_id,
                        now=now,
                        upserts=[fresh[name] for name in sorted(fresh)],
                        package_upserts=installed,
                    )
                diff = diff_patch_data(known_patches, known_packages, patches, packages)
                if not diff:
                    return 0
                return write_patch_changes(
                    conn,
                    host_id,
                    now=now,
                    upserts=diff.upserts,
                    resolved=diff.resolved,
                    package_upserts=diff.package_upserts,
                    package_deletes=diff.package_deletes,
                )

        rows = await self.db.run(write)
        self.stats.patch_writes += 1
        self.stats.patch_rows += rows
        return rows

    def forget(self, host_id: int) -> None:
        """Drop queued writes of a removed host (the scheduler calls it)."""
        self._states.pop(host_id, None)
        self._transitions = [t for t in self._transitions if t.host_id != host_id]

    def queued(self) -> tuple[int, int]:
        """States and transitions waiting to be written."""
        return len(self._states), len(self._transitions)

    async def flush(self) -> None:
        async with self._flush_lock:
            await self._flush()

    def _requeue(self, states: dict[int, HostState], transitions: list[Transition]) -> None:
        for host_id, state in states.items():
            self._states.setdefault(host_id, state)  # newer states submitted meanwhile win
        self._transitions[:0] = transitions
        self._bound_transitions()

    async def _flush(self) -> None:
        if not self._states and not self._transitions:
            return
        states, self._states = dict(sorted(self._states.items())), {}
        transitions, self._transitions = self._transitions, []
        try:
            await self.db.run(write_host_batch, list(states.items()), transitions)
        except DatabaseUnavailable as exc:
            self._requeue(states, transitions)
            self.stats.failed_flushes += 1
            log.warning("host state write failed, will retry: %s", exc)
            return
        except RowsRefused as exc:
            log.warning("host state batch refused (%s); writing host by host", exc)
            if not await self._flush_each(states, transitions):
                return
        self.stats.flushes += 1
        self.stats.state_rows += len(states)
        self.stats.transition_rows += len(transitions)
        if transitions:
            log.info("recorded %d health transition(s)", len(transitions))
        self._flushed.set()
        self._flushed = trio.Event()

    async def _flush_each(
        self, states: dict[int, HostState], transitions: list[Transition]
    ) -> bool:
        """Write one host at a time; False if the database went away (the rest is queued)."""
        by_host: dict[int, list[Transition]] = {}
        for transition in transitions:
            by_host.setdefault(transition.host_id, []).append(transition)
        try:
            result = await self.db.run(write_host_states_each, states, by_host)
        except DatabaseUnavailable as exc:
            result = EachWritten(outage=str(exc))
        for host_id, error in result.refused:
            rows = (host_id in states) + len(by_host.get(host_id, []))
            self.stats.dropped_rows += rows
            log.error("dropped %d unwritable state row(s) of host %d: %s", rows, host_id, error,
                      extra={"host_id": host_id})  # fmt: skip
        if result.outage:
            done = set(result.written) | {h for h, _ in result.refused}
            self._requeue({h: s for h, s in states.items() if h not in done},
                          [t for t in transitions if t.host_id not in done])  # fmt: skip
            self.stats.failed_flushes += 1
            log.warning("host state write interrupted, will retry: %s", result.outage)
            return False
        return True

    async def wait_flushed(self) -> None:
        """Wait until the next successful flush (tests, shutdown)."""
        await self._flushed.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                await self._pending.wait()
                self._pending = trio.Event()
                with trio.move_on_after(self.flush_interval):
                    await self._urgent.wait()
                self._urgent = trio.Event()
                await self.flush()
                if self._states or self._transitions:
                    self._pending.set()  # not written (database down): try again next tick
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self.flush()


def parse_refresh_payload(payload: str) -> list[int] | None:
    """``host_refresh`` payloads: comma-separated host ids, or empty for every host."""
    if not payload.strip():
        return None
    return [int(part) for part in payload.split(",") if part.strip().isdigit()]


class HostDirectory:
    """The desired set of hosts (the hosts table) and its change notifications."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def list_hosts(self) -> list[HostRow]:
        return await self.db.run(list_hosts)

    async def watch(
        self,
        on_change: Callable[[], None],
        on_refresh: Callable[[list[int] | None], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """LISTEN on a dedicated connection: ``hosts_changed`` calls ``on_change``,
        ``host_refresh`` (sent by ``patch-manager hosts refresh``) calls ``on_refresh``.

        Reports readiness after the first attempt to listen (successful or not); runs until
        cancelled, reconnecting after database errors. Other errors propagate (the scheduler
        restarts the listener).
        """
        started = False
        while True:
            try:
                listener = await trio.to_thread.run_sync(HostChangeListener, self.db.conninfo)
            except DatabaseUnavailable as exc:
                log.warning("%s", exc)
                if not started:
                    started = True
                    task_status.started()
                await trio.sleep(5)
                continue
            try:
                if not started:
                    started = True
                    task_status.started()
                while True:
                    notes = await trio.to_thread.run_sync(
                        listener.wait, 1.0, abandon_on_cancel=True
                    )
                    for channel, payload in notes:
                        if channel == "host_refresh":
                            on_refresh(parse_refresh_payload(payload))
                        else:
                            on_change()
            except DatabaseUnavailable as exc:
                log.warning("%s", exc)
                await trio.sleep(1)
                on_change()  # a change may have been missed while disconnected
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(listener.close)


class DatabaseDiscoveryStore:
    """Discovery scans and their results in PostgreSQL (kept for later registration)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, cidr: str, total: int, audit: AuditArg = None) -> int:
        return await run_audited(self.db, audit, create_scan, cidr, total)

    async def progress(
        self, scan_id: int, progress: ScanProgress, status: str | None, error: str = ""
    ) -> None:
        await self.db.run(
            lambda conn: update_scan(
                conn,
                scan_id,
                probed=progress.probed,
                found=progress.found,
                status=status,
                error=error,
            )
        )

    async def get(self, scan_id: int) -> ScanReport | None:
        """A stored scan. One marked running is not running in *this* process (only finished
        scans leave its memory): it was interrupted, and is reported as failed."""
        row = await self.db.run(get_scan, scan_id)
        if row is None:
            return None
        interrupted = row.status == "running"
        progress = ScanProgress(
            row.cidr,
            row.total,
            row.probed,
            row.found,
            done=True,
            cancelled=row.status == "cancelled",
            failed=row.status == "failed" or interrupted,
            error="interrupted before it finished" if interrupted else row.error,
        )
        found = tuple(Found(r.address, r.hostname, r.os, r.agent_version) for r in row.results)
        return ScanReport(row.id, progress, found)

    async def add(self, scan_id: int, found: Sequence[Found]) -> None:
        results = [DiscoveryResult(f.address, f.hostname, f.os, f.agent_version) for f in found]
        if results:
            await self.db.run(add_scan_results, scan_id, results)


class DatabaseJobStore:
    """Jobs in PostgreSQL, for the coordinator and for the host job runners.

    ``owner`` names this process start in the rows it runs (their lease holder): host name,
    process id and a random part, so two processes on one machine never share rows. Rows
    another owner holds are left alone until that owner's lease runs out, except those of this
    process's predecessor: ``owner_file`` (in the data directory) records the owner id of the
    last start, whose rows a restart resumes at once (it is gone: the file is rewritten by
    each start)."""

    def __init__(
        self,
        db: Database,
        *,
        owner: str = "",
        lease_s: float = 60.0,
        owner_file: Path | None = None,
    ) -> None:
        self.db = db
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.lease_s = lease_s
        self.previous: tuple[str, ...] = ()
        if owner_file is not None:
            self.previous = _swap_owner(owner_file, self.owner)

    # runner side (one owner, leases)
    async def claim_next(self, host_id: int) -> JobHostRow | None:
        return await self.db.run(claim_next, host_id, self.owner, self.lease_s)

    async def take_over(self, host_id: int) -> list[JobHostRow]:
        return await self.db.run(take_over, host_id, self.owner, self.lease_s, self.previous)

    async def renew(self, row_id: int) -> bool:
        return await self.db.run(renew_lease, row_id, self.owner, self.lease_s)

    async def row(self, row_id: int) -> JobHostRow | None:
        try:
            return await self.db.run(get_row, row_id)
        except NotFound:
            return None

    async def advance(
        self,
        row_id: int,
        from_states: Sequence[str],
        to_state: str,
        *,
        within_permit: bool = False,
        **values: Any,
    ) -> bool:
        return await self.db.run(
            lambda conn: advance_row(
                conn,
                row_id,
                self.owner,
                from_states,
                to_state,
                within_permit=within_permit,
                **values,
            )
        )

    async def update(self, row_id: int, **values: Any) -> bool:
        return await self.db.run(lambda conn: update_row(conn, row_id, self.owner, **values))

    async def finish(self, row_id: int, state: str, **values: Any) -> bool:
        return await self.db.run(lambda conn: finish_row(conn, row_id, self.owner, state, **values))

    async def recorded_agent_jobs(self, host_id: int) -> set[str]:
        return await self.db.run(recorded_agent_jobs, host_id)

    async def job(self, job_id: int) -> JobRow:
        return await self.db.run(get_job, job_id)

    async def security_patches(self, host_id: int) -> list[str]:
        return await self.db.run(host_security_patches, host_id)

    # coordinator side (a JobFeed: it reads lean rows and hears changes)
    async def active(self) -> list[tuple[JobRow, list[JobHostRow]]]:
        return await self.db.run(coordinator_jobs, None)

    async def read_jobs(self, job_ids: Sequence[int]) -> list[tuple[JobRow, list[JobHostRow]]]:
        return await self.db.run(coordinator_jobs, job_ids)

    async def read_rows(self, row_ids: Sequence[int]) -> list[JobHostRow]:
        return await self.db.run(coordinator_rows, row_ids)

    async def listen(
        self,
        deliver: Callable[[JobNotices | None], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        listener = JobListener(self.db.conninfo)
        await listen_for_changes(listener, deliver, task_status=task_status)

    async def apply(self, decisions: Decisions) -> bool:
        return bool(await self.db.run(apply_decisions, decisions))

    async def windows(self) -> WindowSet:
        def read(conn: Any) -> WindowSet:
            windows = list_windows(conn)
            hosts_of: dict[int, list[int]] = {}
            for host_id, window_ids in host_window_map(conn).items():
                for window_id in window_ids:
                    hosts_of.setdefault(window_id, []).append(host_id)
            blackouts = [Interval(b.starts_at, b.ends_at) for b in list_blackouts(conn)]
            return WindowSet(windows, hosts_of, blackouts)

        return await self.db.run(read)

    async def create_job(self, spec: JobSpec, host_ids: list[int], audit: AuditArg = None) -> int:
        return await run_audited(self.db, audit, create_job, spec, batches_for(spec, host_ids))

    async def create_window_job(
        self, window_id: int, occurrence: dt.datetime, spec: JobSpec, host_ids: list[int]
    ) -> int | None:
        """Claim the occurrence, create its job and attach it: one transaction (with its audit
        entry, by ``system``, when the database carries the audit key)."""

        def entry(job_id: int | None) -> AuditEntry | None:
            if job_id is None:
                return None
            after = {"window_id": window_id, "hosts": len(host_ids), "kind": spec.kind}
            return AuditEntry("system", "job.create", f"job:{job_id}", after=after)

        return await run_audited(
            self.db,
            entry if self.db.audit_key else None,
            create_window_job,
            window_id,
            occurrence,
            spec,
            batches_for(spec, host_ids),
        )


def _swap_owner(path: Path, owner: str) -> tuple[str, ...]:
    """The owner id recorded by the previous start (if any); records ``owner`` instead
    (atomically: a crash leaves either id, never half of one)."""
    try:
        previous = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        previous = ""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(owner + "\n", encoding="utf-8")
    temporary.replace(path)
    return (previous,) if previous and previous != owner else ()
