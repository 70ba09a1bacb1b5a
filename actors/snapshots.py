"""The daily compliance snapshot task: timing only. What a snapshot is (and the first run's
backfill) is given by the composition root as two functions, so this module needs nothing but
the clock and the storage errors it waits out.

On start: the backfill (a no-op once any snapshot exists), then today's snapshot; afterwards
today's snapshot is rewritten every ``every_s`` seconds (drift-free), so the last write of a UTC
day stands for that day and a restart or the first polls after start never leave a day with
stale figures. A database outage is waited out (``retry_s``); the day's row set is replaced as
a whole, so a retry writes it once.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable

import trio

from storage import StorageError

log = logging.getLogger(__name__)

TakeSnapshot = Callable[[dt.date, dt.datetime], Awaitable[int]]
Backfill = Callable[[dt.datetime], Awaitable[int]]


class SnapshotTask:
    def __init__(
        self,
        take: TakeSnapshot,
        backfill: Backfill,
        clock: Callable[[], dt.datetime],
        *,
        every_s: float = 3600.0,
        retry_s: float = 300.0,
    ) -> None:
        self.take = take
        self.backfill = backfill
        self.clock = clock
        self.every_s = every_s
        self.retry_s = retry_s
        self.taken = 0

    async def _until_done(self, what: str, step: Callable[[], Awaitable[int]]) -> int:
        while True:
            try:
                return await step()
            except StorageError as exc:
                log.warning("compliance %s not written (%s); retrying in %.0f s", what, exc,
                            self.retry_s)  # fmt: skip
                await trio.sleep(self.retry_s)

    async def _snapshot(self) -> None:
        day = self.clock().astimezone(dt.UTC).date()
        # Each attempt judges the hosts as of its own instant (a retry sees fresher data).
        rows = await self._until_done("snapshot", lambda: self.take(day, self.clock()))
        self.taken += 1
        log.info("compliance snapshot of %s written (%d rows)", day, rows)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Runs until cancelled; ready at once (the first snapshot is written in the
        background)."""
        task_status.started()
        days = await self._until_done("backfill", lambda: self.backfill(self.clock()))
        if days:
            log.info("compliance snapshots backfilled for %d day(s) from patch history", days)
        deadline = trio.current_time()
        await self._snapshot()
        while True:
            deadline += self.every_s
            await trio.sleep_until(deadline)
            await self._snapshot()
