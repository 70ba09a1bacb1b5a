"""The job coordinator, run by the scheduler actor. It never hands work to an actor: it writes
permits (a row may run until the end of its open window, or without deadline for an apply-now
job's current batch), skips the rows that can no longer run (with the reason), rolls jobs up and
starts auto-apply deployments when windows open. Host job runners pull permitted rows from the
database themselves (``storage.claim_next``)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

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
from storage import Decisions, JobHostRow, JobRow, JobSpec, WindowRow

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

    async def apply(self, decisions: Decisions) -> None: ...

    async def windows(self) -> WindowSet: ...

    async def create_window_job(
        self, window_id: int, occurrence: dt.datetime, spec: JobSpec, host_ids: list[int]
    ) -> int | None: ...


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
    """One pass per ``tick`` (or sooner after ``poke()``).

    ``host_blocked(host_id)`` says why a host cannot run anything now (paused, its actor
    failed), or "" when it can. ``permits_granted()`` is called after a pass wrote permits
    (the runners are woken); ``on_change`` gets every roll-up change."""

    def __init__(
        self,
        store: CoordinatorStore,
        *,
        wall: Callable[[], dt.datetime],
        host_blocked: Callable[[int], str] = lambda host_id: "",
        permits_granted: Callable[[list[int]], None] = lambda host_ids: None,
        on_change: Callable[[JobChange], None] = lambda change: None,
        tick: float = 1.0,
    ) -> None:
        self.store = store
        self.wall = wall
        self.host_blocked = host_blocked
        self.permits_granted = permits_granted
        self.on_change = on_change
        self.tick = tick
        self.passes = 0
        self._poke = trio.Event()
        self._passed = trio.Event()

    def poke(self) -> None:
        self._poke.set()

    async def wait_pass(self) -> None:
        """Wait for the next completed pass (tests)."""
        await self._passed.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                await self.run_once()
            except Exception:  # the database may be down; the next pass retries
                log.exception("job coordinator pass failed")
            self.passes += 1
            self._passed.set()
            self._passed = trio.Event()
            with trio.move_on_after(self.tick):
                await self._poke.wait()
            self._poke = trio.Event()

    async def run_once(self) -> None:
        now = self.wall()
        windows = await self.store.windows()
        for window, occurrence in windows.opened_auto_windows(now):
            await self._auto_apply(window, occurrence, windows)
        for job, rows in await self.store.active():
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
                await self.store.apply(decisions)
                if decisions.status:
                    log.info("job %d is %s", job.id, decisions.status)
                    self.on_change(JobChange(job.id, decisions.status))
                if decisions.permits or decisions.retry:
                    by_id = {r.id: r.host_id for r in rows}
                    woken = [by_id[i] for i, _ in decisions.permits]
                    self.permits_granted(woken + [by_id[i] for i in decisions.retry])

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
