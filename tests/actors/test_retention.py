"""The retention task's timing under a virtual clock (trio's autojump clock; the database side
is a recording double here, tested for real in tests/storage/test_retention.py): a run at
start when the last one is a day old or more, else when it becomes a day old; then daily,
drift-free; a database outage waited out and retried."""

from __future__ import annotations

import datetime as dt

import trio
import trio.testing

from actors.retention import DAY_S, Cutoffs, RetentionSummary, RetentionTask
from storage import DatabaseUnavailable

START = dt.datetime(2026, 6, 10, 3, 0, tzinfo=dt.UTC)


class Runs:
    """Records each run's virtual time and cutoffs; ``fail`` outages come first."""

    def __init__(self, last: dt.datetime | None, fail: int = 0) -> None:
        self.last = last
        self.fail = fail
        self.at: list[float] = []
        self.cutoffs: list[Cutoffs] = []
        self.t0 = trio.current_time()

    def clock(self) -> dt.datetime:
        return START + dt.timedelta(seconds=trio.current_time() - self.t0)

    async def last_run(self) -> dt.datetime | None:
        return self.last

    async def execute(self, cutoffs: Cutoffs) -> RetentionSummary:
        if self.fail:
            self.fail -= 1
            raise DatabaseUnavailable("database error: connection refused")
        self.at.append(trio.current_time() - self.t0)
        self.cutoffs.append(cutoffs)
        self.last = cutoffs.now
        return RetentionSummary(cutoffs, {"host_patches": 3, "jobs": 1}, 2, 0.0)


def task(runs: Runs) -> RetentionTask:
    return RetentionTask(runs.last_run, runs.execute, runs.clock, lambda: 30, lambda: 180)


async def test_first_run_is_at_start_when_none_ran_before_then_daily_without_drift(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs = Runs(last=None)
    t = task(runs)
    async with trio.open_nursery() as nursery:
        await nursery.start(t.run)
        await trio.sleep(3 * DAY_S + 1)
        nursery.cancel_scope.cancel()
    assert runs.at == [0.0, DAY_S, 2 * DAY_S, 3 * DAY_S]
    assert runs.cutoffs[0] == Cutoffs(
        START, START - dt.timedelta(days=30), START - dt.timedelta(days=180)
    )
    stats = t.statistics()
    assert stats.runs == 4 and stats.deleted_total == {"host_patches": 12, "jobs": 4}
    assert stats.last_run_at == START + dt.timedelta(days=3)


async def test_a_run_remembered_as_more_than_a_day_old_runs_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs = Runs(last=START - dt.timedelta(days=3))
    async with trio.open_nursery() as nursery:
        await nursery.start(task(runs).run)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert runs.at == [0.0]


async def test_a_recent_run_makes_the_first_wait_until_it_is_a_day_old(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs = Runs(last=START - dt.timedelta(hours=20))
    t = task(runs)
    async with trio.open_nursery() as nursery:
        await nursery.start(t.run)
        await trio.sleep(4 * 3600 - 1)
        assert runs.at == [] and t.statistics().last_run_at == runs.last
        await trio.sleep(DAY_S + 2)
        nursery.cancel_scope.cancel()
    assert runs.at == [4 * 3600.0, 4 * 3600.0 + DAY_S]


async def test_an_outage_is_retried_every_retry_s_and_the_daily_rhythm_kept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs = Runs(last=None, fail=2)
    t = task(runs)
    async with trio.open_nursery() as nursery:
        await nursery.start(t.run)
        await trio.sleep(DAY_S + 1)
        nursery.cancel_scope.cancel()
    assert runs.at == [2 * t.retry_s, DAY_S]
    assert t.statistics().failures == 2
