"""The daily snapshot task under a virtual clock: backfill first, today's snapshot at once,
then today's rewritten every hour (drift-free; the day's label follows the UTC date); a
database outage is waited out."""

from __future__ import annotations

import datetime as dt

import trio
import trio.testing

from actors.snapshots import SnapshotTask
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


async def test_backfill_then_a_snapshot_at_start_then_hourly_labelled_with_the_utc_day(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    rec = Recorder()
    task = SnapshotTask(rec.take, rec.backfill, wall_clock, every_s=3600)
    await nursery.start(task.run)
    await trio.sleep(15 * 3600 + 1)
    assert rec.backfills == [START]
    labelled = [(d.isoformat(), t.strftime("%m-%d %H:%M")) for d, t in rec.calls]
    assert labelled[:2] == [("2026-06-01", "06-01 10:00"), ("2026-06-01", "06-01 11:00")]
    assert labelled[-3:] == [
        ("2026-06-01", "06-01 23:00"),
        ("2026-06-02", "06-02 00:00"),  # the last write of 06-01 stands for that day
        ("2026-06-02", "06-02 01:00"),
    ]
    assert len(labelled) == 16


async def test_database_outage_is_retried_after_retry_s_not_skipped(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    rec = Recorder(failures=2)
    task = SnapshotTask(rec.take, rec.backfill, wall_clock, retry_s=300)
    await nursery.start(task.run)
    await trio.sleep(3600 + 1)
    # two waits of 300 s, then written; the hourly schedule keeps its own deadlines
    assert [t.strftime("%H:%M") for _, t in rec.calls] == ["10:10", "11:00"]
    assert task.taken == 2
