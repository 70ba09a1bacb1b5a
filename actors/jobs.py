"""The job coordinator, run by the scheduler actor. It never hands work to an actor: it writes
permits (a row may run until the end of its open window, or without deadline for an apply-now
job's current batch), skips the rows that can no longer run (with the reason), rolls jobs up and
starts auto-apply deployments when windows open. Host job runners pull permitted rows from the
database themselves (``storage.claim_next``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, runtime_checkable

import trio

from maintenance import (
    NO_WINDOW_HORIZON,
    Interval,
    WindowRule,
    assign_batches,
    next_window,
    occurrences,
    open_window,
)
from storage import DatabaseUnavailable, Decisions, JobHostRow, JobRow, JobSpec, WindowRow
from storage.coordinator import JobListener, JobNotices

from .rollout import decide, rule_of

log = logging.getLogger(__name__)


@dataclass
class WindowSet:
    """Every window, which hosts it applies to, and the blackouts."""

    windows: list[WindowRow] = field(default_factory=list)
    hosts_of: dict[int, list[int]] = field(default_factory=dict)  # window id -> host ids
    blackouts: list[Interval] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rules: dict[int, WindowRule] = {w.id: rule_of(w) for w in self.windows if w.enabled}
        self._by_host: dict[int, list[WindowRule]] = {}
        self._ahead: dict[tuple[tuple[int, ...], dt.datetime], bool] = {}
        for window_id, hosts in self.hosts_of.items():
            if window_id in self._rules:
                for host_id in hosts:
                    self._by_host.setdefault(host_id, []).append(self._rules[window_id])

    def is_open(self, host_id: int, now: dt.datetime) -> bool:
        return self.open_until(host_id, now) is not None

    def open_until(self, host_id: int, now: dt.datetime) -> dt.datetime | None:
        """The end of the host's window occurrence open at ``now`` (None when closed)."""
        rules = self._by_host.get(host_id, [])
        if not rules:
            return None
        piece = open_window(rules, now, self.blackouts)
        return None if piece is None else piece.end

    def window_ahead(self, host_id: int, now: dt.datetime) -> bool:
        """Whether the host has an enabled window occurrence open at ``now`` or starting
        within ``NO_WINDOW_HORIZON``."""
        rules = self._by_host.get(host_id, [])
        if not rules:
            return False
        key = (tuple(id(r) for r in rules), now)  # hosts sharing windows are computed once
        if key not in self._ahead:
            self._ahead[key] = (
                open_window(rules, now, self.blackouts) is not None
                or next_window(rules, now, self.blackouts, NO_WINDOW_HORIZON) is not None
            )
        return self._ahead[key]

    def opened_auto_windows(self, now: dt.datetime) -> list[tuple[WindowRow, Interval]]:
        """Auto-apply windows open right now, with the occurrence that is open."""
        found = []
        for window in self.windows:
            rule = self._rules.get(window.id)
            if rule is None or window.auto_apply == "none":
                continue
            for piece in occurrences(
                rule, now - rule.duration, now + dt.timedelta(seconds=1), self.blackouts
            ):
                if piece.contains(now):
                    found.append((window, piece))
        return found


class CoordinatorStore(Protocol):
    async def active(self) -> list[tuple[JobRow, list[JobHostRow]]]: ...

    async def apply(self, decisions: Decisions) -> bool | None:
        """Write the decisions; False when a final job status was refused (a row is not
        final in the store), True or None otherwise."""

    async def windows(self) -> WindowSet: ...

    async def create_window_job(
        self, window_id: int, occurrence: dt.datetime, spec: JobSpec, host_ids: list[int]
    ) -> int | None: ...


@runtime_checkable
class JobFeed(Protocol):
    """What makes the coordinator incremental (``DatabaseJobStore`` provides it): the jobs and
    rows a change concerns, read alone, and the changes themselves.

    ``listen(deliver)`` runs until cancelled: it calls ``deliver(notices)`` with every batch of
    changes, ``deliver(None)`` each time it (re)connects (changes made while it was not
    listening are unknown: everything is read again) and ``JobNotices(unheard=True)`` after an
    attempt that failed (nothing is heard until it connects: every pass reads everything)."""

    async def read_jobs(self, job_ids: Sequence[int]) -> list[tuple[JobRow, list[JobHostRow]]]: ...

    async def read_rows(self, row_ids: Sequence[int]) -> list[JobHostRow]: ...

    async def listen(
        self,
        deliver: Callable[[JobNotices | None], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None: ...


async def listen_for_changes(
    listener: JobListener,
    deliver: Callable[[JobNotices | None], None],
    *,
    wait_s: float = 0.5,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``listener`` (blocking, in a worker thread) until cancelled: ``deliver(None)`` after
    each (re)connection, ``deliver(JobNotices(unheard=True))`` after each failed attempt (while
    nobody listens the coordinator reads everything at every pass), ``deliver(notices)`` with
    what was heard. A lost connection (database
    outage) is retried with a backoff (0.5 s doubling to 10 s), never raised. Cancellation
    takes effect within ``wait_s`` (a thread waiting on the connection is not abandoned: the
    connection is never used by two threads)."""
    task_status.started()
    delay = 0.5
    try:
        while True:
            try:
                await trio.to_thread.run_sync(listener.connect)
            except DatabaseUnavailable as exc:
                log.warning("job changes: %s; retrying in %.1fs", exc, delay)
                deliver(JobNotices(unheard=True))  # not listening: read everything meanwhile
                await trio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            delay = 0.5
            deliver(None)
            try:
                while True:
                    notices = await trio.to_thread.run_sync(listener.wait, wait_s)
                    if notices:
                        deliver(notices)
            except DatabaseUnavailable as exc:
                log.warning("job changes: %s; reconnecting", exc)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(listener.close)


def batches_for(spec: JobSpec, host_ids: list[int]) -> list[tuple[int, int]]:
    numbers = assign_batches(
        len(host_ids),
        batch_size=spec.batch_size,
        batch_percent=spec.batch_percent,
        canary=spec.canary,
    )
    return list(zip(host_ids, numbers, strict=True))


@dataclass(frozen=True)
class JobChange:
    """A job's roll-up changed (published so that open job pages update without polling)."""

    job_id: int
    status: str


class JobChanges:
    """Fan-out of ``JobChange`` to subscribers (the live relay). Bounded per subscriber: a
    subscriber that lags loses changes (counted), the publisher never blocks."""

    def __init__(self) -> None:
        self._subscribers: list[trio.MemorySendChannel[JobChange]] = []
        self.dropped = 0

    def publish(self, change: JobChange) -> None:
        for send in list(self._subscribers):
            try:
                send.send_nowait(change)
            except trio.WouldBlock:
                self.dropped += 1
            except trio.BrokenResourceError:
                self._subscribers.remove(send)

    @contextmanager
    def subscribe(self, buffer: int = 64) -> Iterator[trio.MemoryReceiveChannel[JobChange]]:
        send, receive = trio.open_memory_channel[JobChange](buffer)
        self._subscribers.append(send)
        try:
            yield receive
        finally:
            if send in self._subscribers:
                self._subscribers.remove(send)
            send.close()


class JobCoordinator:
    """One pass per ``tick`` (or sooner after ``poke()`` or a change heard).

    Incremental when the store is a ``JobFeed``: every row of the active jobs is held in
    memory, lean (what the rollout policy reads: no package snapshots), by job, read whole at
    start, after the change feed (re)connects and every ``resync``
    seconds (a safety net); in between only the jobs and rows a change names are read again
    (job runners, the web's create/cancel/retry/rollback, another process: the database
    triggers of migration 0022 notify them all). A pass decides in memory and writes only its
    decisions, which it also applies to its own copy. Without a feed every pass reads every
    active job (``store.active()``).

    ``host_blocked(host_id)`` says why a host cannot run anything now (paused, its actor
    failed), or "" when it can. ``permits_granted()`` is called after a pass wrote permits
    (the runners are woken); ``on_change`` gets every roll-up change. A pass that fails (the
    database is down) is logged and the next one reads everything again."""

    def __init__(
        self,
        store: CoordinatorStore,
        *,
        wall: Callable[[], dt.datetime],
        host_blocked: Callable[[int], str] = lambda host_id: "",
        permits_granted: Callable[[list[int]], None] = lambda host_ids: None,
        on_change: Callable[[JobChange], None] = lambda change: None,
        tick: float = 1.0,
        resync: float = 60.0,
        min_gap: float = 0.1,
    ) -> None:
        self.store = store
        self.feed = store if isinstance(store, JobFeed) else None
        self.wall = wall
        self.host_blocked = host_blocked
        self.permits_granted = permits_granted
        self.on_change = on_change
        self.tick = tick
        self.resync = resync
        # Incremental only: passes woken by changes are at least this far apart (a burst of
        # rows finishing is decided together, not once per row).
        self.min_gap = min_gap if self.feed is not None else 0.0
        self.passes = 0
        self.full_reads = 0  # passes that read every active job (start, reconnect, resync)
        self._poke = trio.Event()
        self._passed = trio.Event()
        # The in-memory copy: active jobs and their rows by job. Final rows stay (the roll-up
        # counts them, a failed row may be retried); the current batch is found by ``decide``
        # (0.6 ms for 2,500 rows), so no batch index is kept.
        self._jobs: dict[int, JobRow] = {}
        self._rows: dict[int, dict[int, JobHostRow]] = {}  # job id -> row id -> row
        self._windows: WindowSet | None = None
        self._stale = True  # read everything at the next pass
        self._heard = JobNotices()
        self._next_resync = 0.0
        self._auto_done: set[tuple[int, dt.datetime]] = set()  # occurrences already handled
        self._listening = trio.Event()  # the feed connected once
        self._deaf = False  # the feed cannot listen: every pass reads everything

    def poke(self) -> None:
        self._poke.set()

    async def wait_pass(self) -> None:
        """Wait for the next completed pass (tests)."""
        await self._passed.wait()

    def rows_held(self) -> int:
        """How many job rows the coordinator holds in memory."""
        return sum(len(rows) for rows in self._rows.values())

    def heard(self, notices: JobNotices | None) -> None:
        """Changes heard (``None``: unknown changes, read everything). Never blocks."""
        if notices is None or notices.unheard:
            self._stale = True
            self._listening.set()
            self._deaf = notices is not None  # until the listener connects: None
        else:
            self._heard.merge(notices)
        self._poke.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            if self.feed is not None:
                await nursery.start(partial(self.feed.listen, self.heard))
            task_status.started()
            if self.feed is not None:
                # The first full read follows LISTEN (nothing falls between them), unless the
                # database cannot be reached: then the passes go on and the read follows.
                with trio.move_on_after(5.0):
                    await self._listening.wait()
            while True:
                try:
                    await self.run_once()
                except Exception:  # the database may be down; the next pass reads everything
                    log.exception("job coordinator pass failed")
                    self._stale = True
                self.passes += 1
                self._passed.set()
                self._passed = trio.Event()
                passed = trio.current_time()
                with trio.move_on_after(self.tick):
                    await self._poke.wait()
                    await trio.sleep_until(passed + self.min_gap)
                self._poke = trio.Event()

    async def run_once(self) -> None:
        await self._refresh()
        assert self._windows is not None
        windows = self._windows
        now = self.wall()
        for window, occurrence in windows.opened_auto_windows(now):
            if (window.id, occurrence.start) not in self._auto_done:
                await self._auto_apply(window, occurrence, windows)
                self._auto_done.add((window.id, occurrence.start))
        for job_id in sorted(self._jobs):
            job, rows = self._jobs[job_id], list(self._rows[job_id].values())
            decisions = decide(
                job,
                rows,
                lambda host_id: windows.open_until(host_id, now),
                self.host_blocked,
                now,
                lambda host_id: windows.window_ahead(host_id, now),
            )
            if (
                decisions.waiting
                or decisions.permits
                or decisions.skipped
                or decisions.no_window
                or decisions.retry
                or decisions.status
                or decisions.started
                or decisions.finished
            ):
                if await self.store.apply(decisions) is False:
                    # The store refused to end the job: a row is not final there (a runner
                    # claimed it while this pass decided on the copy). Nothing is published,
                    # the job stays and is read again at the next pass.
                    log.info("job %d: not %s yet, a row is not final: reading it again",
                             job.id, decisions.status)  # fmt: skip
                    decisions = dataclasses.replace(decisions, status=None, finished=False)
                    self._heard.jobs.add(job.id)
                    self._poke.set()
                self._applied(decisions)
                if decisions.status:
                    log.info("job %d is %s", job.id, decisions.status)
                    self.on_change(JobChange(job.id, decisions.status))
                if decisions.permits or decisions.retry:
                    by_id = {r.id: r.host_id for r in rows}
                    woken = [by_id[i] for i, _ in decisions.permits]
                    self.permits_granted(woken + [by_id[i] for i in decisions.retry])

    # -- the in-memory copy ---------------------------------------------------------------------

    async def _refresh(self) -> None:
        """Bring the copy up to date: everything when stale (or without a feed, or when the
        resync is due), else only what the heard changes name."""
        due = self.feed is not None and trio.current_time() >= self._next_resync
        if self._stale or self._deaf or self.feed is None or due or self._windows is None:
            self._heard = JobNotices()  # everything is read: what was heard is included
            self._stale = False
            try:
                self._windows = await self.store.windows()
                self._replace(await self.store.active(), everything=True)
            except BaseException:
                self._stale = True
                raise
            self.full_reads += 1
            self._next_resync = trio.current_time() + self.resync
            return
        heard, self._heard = self._heard, JobNotices()
        if not heard:
            return
        try:
            await self._read(heard)
        except BaseException:
            self._stale = True  # what was heard is lost: read everything next time
            raise

    async def _read(self, heard: JobNotices) -> None:
        assert self.feed is not None
        if heard.windows:
            self._windows = await self.store.windows()
        whole = set(heard.jobs) | {j for j in heard.rows if j not in self._jobs}
        if whole:
            found = await self.feed.read_jobs(sorted(whole))
            for job_id in whole:
                self._drop(job_id)
            self._replace(found, everything=False)
        row_ids = [r for j, ids in heard.rows.items() if j not in whole for r in ids]
        if row_ids:
            for row in await self.feed.read_rows(row_ids):
                if row.job_id in self._jobs:
                    self._rows[row.job_id][row.id] = row

    def _replace(self, jobs: list[tuple[JobRow, list[JobHostRow]]], *, everything: bool) -> None:
        if everything:
            self._jobs, self._rows = {}, {}
        for job, rows in jobs:
            self._jobs[job.id] = job
            self._rows[job.id] = {row.id: row for row in rows}

    def _drop(self, job_id: int) -> None:
        self._jobs.pop(job_id, None)
        self._rows.pop(job_id, None)

    def _set(self, job_id: int, row_id: int, **values: Any) -> None:
        row = self._rows.get(job_id, {}).get(row_id)
        if row is not None:
            self._rows[job_id][row_id] = dataclasses.replace(row, **values)

    def _applied(self, d: Decisions) -> None:
        """What ``store.apply(d)`` wrote, in the copy too (the notices it causes confirm it)."""
        job_id = d.job_id
        for row_id in d.waiting:
            self._set(job_id, row_id, state="waiting_window", run_until=None)
        for row_id in d.retry:
            self._set(job_id, row_id, state="queued")
        for row_id, until in d.permits:
            self._set(job_id, row_id, state="queued", run_until=until)
        for code, ended in (("SKIPPED", d.skipped), ("NO_WINDOW", d.no_window)):
            for row_id, _ in ended:
                self._set(job_id, row_id, state="skipped", run_until=None, error_code=code)
        job = self._jobs.get(job_id)
        if job is None:
            return
        if d.status is not None:
            job = dataclasses.replace(job, status=d.status)
        if d.started and job.started_at is None:
            job = dataclasses.replace(job, started_at=self.wall())
        if d.finished or job.status not in ("queued", "running"):
            self._drop(job_id)  # finished: nothing more to decide (a retry notifies it again)
        else:
            self._jobs[job_id] = job

    async def _auto_apply(
        self, window: WindowRow, occurrence: Interval, windows: WindowSet
    ) -> None:
        hosts = sorted(windows.hosts_of.get(window.id, []))
        if not hosts:
            return
        spec = JobSpec(
            kind="patch",
            schedule="window",
            selection=window.auto_apply,
            allow_reboot=window.allow_reboot,
            created_by=f"window {window.id}",
        )
        job_id = await self.store.create_window_job(window.id, occurrence.start, spec, hosts)
        if job_id is not None:
            log.info(
                "window %d opened: auto-apply job %d for %d host(s)", window.id, job_id, len(hosts)
            )
