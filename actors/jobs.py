"""The job coordinator, run by the scheduler actor: opens windows, dispatches job rows to host
actors, applies the rollout policy, and starts auto-apply deployments when windows open."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from maintenance import Interval, WindowRule, occurrences, open_window
from storage import Decisions, JobHostRow, JobRow, JobSpec, WindowRow

from .rollout import assign_batches, decide, rule_of

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
        for window_id, hosts in self.hosts_of.items():
            if window_id in self._rules:
                for host_id in hosts:
                    self._by_host.setdefault(host_id, []).append(self._rules[window_id])

    def is_open(self, host_id: int, now: dt.datetime) -> bool:
        rules = self._by_host.get(host_id, [])
        return bool(rules) and open_window(rules, now, self.blackouts) is not None

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

    async def create_job(self, spec: JobSpec, host_ids: list[int]) -> int: ...

    async def claim_window_run(self, window_id: int, occurrence: dt.datetime) -> bool: ...

    async def attach_window_run(
        self, window_id: int, occurrence: dt.datetime, job_id: int
    ) -> None: ...


def batches_for(spec: JobSpec, host_ids: list[int]) -> list[tuple[int, int]]:
    numbers = assign_batches(
        len(host_ids),
        batch_size=spec.batch_size,
        batch_percent=spec.batch_percent,
        canary=spec.canary,
    )
    return list(zip(host_ids, numbers, strict=True))


class JobCoordinator:
    """One pass per ``tick`` (or sooner after ``poke()``)."""

    def __init__(
        self,
        store: CoordinatorStore,
        dispatch: Callable[[JobRow, JobHostRow], bool],
        *,
        wall: Callable[[], dt.datetime],
        tick: float = 1.0,
    ) -> None:
        self.store = store
        self.dispatch = dispatch
        self.wall = wall
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
            decisions, starts = decide(job, rows, lambda host_id: windows.is_open(host_id, now))
            if (
                decisions.waiting
                or decisions.skipped
                or decisions.retry
                or decisions.status
                or decisions.started
                or decisions.finished
            ):
                await self.store.apply(decisions)
                if decisions.status:
                    log.info("job %d is %s", job.id, decisions.status)
            for row in starts:
                self.dispatch(job, row)

    async def _auto_apply(
        self, window: WindowRow, occurrence: Interval, windows: WindowSet
    ) -> None:
        hosts = sorted(windows.hosts_of.get(window.id, []))
        if not hosts or not await self.store.claim_window_run(window.id, occurrence.start):
            return
        spec = JobSpec(
            kind="patch",
            schedule="window",
            selection=window.auto_apply,
            allow_reboot=window.allow_reboot,
            created_by=f"window {window.id}",
        )
        job_id = await self.store.create_job(spec, hosts)
        await self.store.attach_window_run(window.id, occurrence.start, job_id)
        log.info(
            "window %d opened: auto-apply job %d for %d host(s)", window.id, job_id, len(hosts)
        )
