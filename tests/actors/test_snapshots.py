"""The daily snapshot task under a virtual clock: backfill first, today's snapshot at once,
then one per day at the configured UTC time; a database outage is waited out."""

from __future__ import annotations

import datetime as dt

import trio
import trio.testing

from actors.snapshots import SnapshotTask, next_run
from storage import DatabaseUnavailable

START = dt.datetime(2026, 6, 1, 10, 0, tzinfo=dt.UTC)


def wall_clock() -> dt.datetime:
    """Wall time that follows trio's (virtual) clock from START."""
    return START + dt.timedelta(seconds=trio.current_time())


class Recorder:
    def __init__(self, failures: int = 0) -> None:
        self.calls: list[tuple[dt.date, dt.datetime]] = []
        self.backfills: list[dt.datetime] = []
        self.failures = failures

    async def take(self, day: dt.date, now: dt.datetime) -> int:
        if self.failures:
            self.failures -= 1
            raise DatabaseUnavailable("database down")
        self.calls.append((day, now))
        return 1

    async def backfill(self, now: dt.datetime) -> int:
        self.backfills.append(now)
        return 0


def test_next_run_is_strictly_after_now() -> None:
    at = dt.time(23, 50)
    assert next_run(START, at) == dt.datetime(2026, 6, 1, 23, 50, tzinfo=dt.UTC)
    exactly = dt.datetime(2026, 6, 1, 23, 50, tzinfo=dt.UTC)
    assert next_run(exactly, at) == dt.datetime(2026, 6, 2, 23, 50, tzinfo=dt.UTC)


async def test_backfill_then_a_snapshot_at_start_and_one_per_day_at_the_set_time(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    autojump_clock.jump(0)
    rec = Recorder()
    task = SnapshotTask(rec.take, rec.backfill, wall_clock, at=dt.time(23, 50))
    await nursery.start(task.run)
    await trio.sleep(3 * 86_400)
    assert rec.backfills == [START]
    assert [(d.isoformat(), t.strftime("%m-%d %H:%M")) for d, t in rec.calls] == [
        ("2026-06-01", "06-01 10:00"),
        ("2026-06-01", "06-01 23:50"),
        ("2026-06-02", "06-02 23:50"),
        ("2026-06-03", "06-03 23:50"),
    ]


async def test_database_outage_is_retried_after_retry_s_not_skipped(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    rec = Recorder(failures=2)
    task = SnapshotTask(rec.take, rec.backfill, wall_clock, retry_s=300)
    await nursery.start(task.run)
    await trio.sleep(3600)
    assert [t.strftime("%H:%M") for _, t in rec.calls] == ["10:10"]  # two waits of 300 s
    assert task.taken == 1
