"""The job coordinator under trio's virtual clock: windows, retries, batches, thresholds,
canaries. Host execution is simulated in memory (no real I/O under a fake clock)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

import pytest
import trio
import trio.testing

from actors.jobs import JobCoordinator, WindowSet, batches_for
from maintenance import Interval
from storage import Decisions, JobHostRow, JobRow, JobSpec, WindowRow

from ..fakes import EPOCH, fake_wall


def window(host_ids: list[int], start: dt.time, minutes: int) -> tuple[WindowRow, list[int]]:
    row = WindowRow(
        1,
        "w",
        None,
        1,
        "daily",
        EPOCH.date(),
        start,
        minutes,
        "UTC",
        (),
        1,
        "clamp",
        1,
        None,
        True,
        "none",
        False,
    )
    return row, host_ids


class MemoryJobs:
    """CoordinatorStore in memory; ``outcome(host_id, attempt)`` decides how a run ends."""

    def __init__(
        self, windows: WindowSet, outcome: Callable[[int, int], str], duration: float = 60.0
    ) -> None:
        self.window_set = windows
        self.outcome = outcome
        self.duration = duration
        self.jobs: dict[int, JobRow] = {}
        self.rows: dict[int, JobHostRow] = {}
        self.started_at: dict[int, list[float]] = {}
        self.nursery: trio.Nursery | None = None

    async def active(self) -> list[tuple[JobRow, list[JobHostRow]]]:
        return [
            (j, [r for r in self.rows.values() if r.job_id == j.id])
            for j in self.jobs.values()
            if j.status in ("queued", "running")
        ]

    async def apply(self, d: Decisions) -> None:
        for row_id in d.waiting:
            self._set(row_id, state="waiting_window")
        for row_id in d.skipped:
            self._set(row_id, state="skipped")
        for row_id in d.retry:
            self._set(row_id, state="queued")
        if d.status:
            self.jobs[d.job_id] = dataclasses.replace(self.jobs[d.job_id], status=d.status)

    async def windows(self) -> WindowSet:
        return self.window_set

    async def create_job(self, spec: JobSpec, host_ids: list[int]) -> int:
        job_id = len(self.jobs) + 1
        self.jobs[job_id] = JobRow(
            job_id,
            spec.kind,
            spec.selection,
            spec.packages,
            spec.schedule,
            spec.allow_reboot,
            spec.reboot_delay_s,
            spec.batch_size,
            spec.batch_percent,
            spec.failure_threshold,
            spec.canary,
            "queued",
            None,
            "",
            EPOCH,
            None,
            None,
        )
        for host_id, batch in batches_for(spec, host_ids):
            row_id = len(self.rows) + 1
            self.rows[row_id] = JobHostRow(
                row_id, job_id, host_id, batch, "queued", 0, None, None, None, None, 0, "", "", ""
            )
        return job_id

    async def claim_window_run(self, window_id: int, occurrence: dt.datetime) -> bool:
        return False

    async def attach_window_run(self, window_id: int, occurrence: dt.datetime, job_id: int) -> None:
        pass

    def _set(self, row_id: int, **values: object) -> None:
        self.rows[row_id] = dataclasses.replace(self.rows[row_id], **values)  # type: ignore[arg-type]

    def dispatch(self, job: JobRow, row: JobHostRow) -> bool:
        current = self.rows[row.id]
        if current.state not in ("queued", "waiting_window"):
            return True
        self._set(row.id, state="dispatched", attempts=current.attempts + 1)
        self.started_at.setdefault(row.host_id, []).append(trio.current_time())
        assert self.nursery is not None
        self.nursery.start_soon(self._execute, row.id)
        return True

    async def _execute(self, row_id: int) -> None:
        await trio.sleep(self.duration)
        row = self.rows[row_id]
        self._set(row_id, state=self.outcome(row.host_id, row.attempts))

    def states(self) -> dict[int, str]:
        return {r.host_id: r.state for r in self.rows.values()}


async def start(nursery: trio.Nursery, store: MemoryJobs) -> JobCoordinator:
    store.nursery = nursery
    coordinator = JobCoordinator(store, store.dispatch, wall=fake_wall, tick=1.0)
    await nursery.start(coordinator.run)
    return coordinator


def hours(h: float) -> float:
    return h * 3600


async def test_queued_job_starts_when_the_window_opens_not_before(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    # A daily window 02:00-03:00 UTC; the virtual clock starts at midnight.
    ws = WindowSet([window([1, 2], dt.time(2, 0), 60)[0]], hosts_of={1: [1, 2]})
    store = MemoryJobs(ws, lambda h, a: "succeeded")
    await store.create_job(JobSpec(kind="patch", schedule="window"), [1, 2])
    await start(nursery, store)
    await trio.sleep(hours(1))
    assert store.states() == {1: "waiting_window", 2: "waiting_window"}
    await trio.sleep(hours(1) + 2)
    assert all(t >= hours(2) and t <= hours(2) + 2 for ts in store.started_at.values() for t in ts)
    await trio.sleep(120)
    assert store.states() == {1: "succeeded", 2: "succeeded"}
    assert store.jobs[1].status == "succeeded"


async def test_window_closing_stops_new_starts(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    ws = WindowSet([window([], dt.time(2, 0), 30)[0]], hosts_of={1: [1, 2, 3]})
    store = MemoryJobs(ws, lambda h, a: "succeeded", duration=20 * 60)
    # One host at a time: the second batch starts at 02:20, the third would at 02:40.
    await store.create_job(JobSpec(kind="patch", schedule="window", batch_size=1), [1, 2, 3])
    await start(nursery, store)
    await trio.sleep(hours(3))
    assert store.states() == {1: "succeeded", 2: "succeeded", 3: "waiting_window"}
    assert store.jobs[1].status == "running"
    await trio.sleep(hours(24))  # next night's window
    assert store.states()[3] == "succeeded"


async def test_failed_host_is_retried_once_within_the_window(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    ws = WindowSet([window([], dt.time(0, 0), 60)[0]], hosts_of={1: [1, 2]})
    store = MemoryJobs(ws, lambda h, a: "failed" if h == 1 or a == 1 else "succeeded")
    await store.create_job(JobSpec(kind="patch", schedule="window"), [1, 2])
    await start(nursery, store)
    await trio.sleep(600)
    assert store.states() == {1: "failed", 2: "succeeded"}
    assert len(store.started_at[1]) == 2  # exactly one retry
    assert store.jobs[1].status == "partially_failed"


@pytest.mark.parametrize("threshold,expected_started", [(0, 1), (1, 2), (None, 4)])
async def test_failure_threshold_stops_starting_new_hosts(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    threshold: int | None,
    expected_started: int,
) -> None:
    store = MemoryJobs(WindowSet(), lambda h, a: "failed")
    await store.create_job(
        JobSpec(kind="patch", schedule="now", batch_size=1, failure_threshold=threshold),
        [1, 2, 3, 4],
    )
    await start(nursery, store)
    await trio.sleep(hours(2))
    assert len(store.started_at) == expected_started
    assert set(store.states().values()) <= {"failed", "skipped"}
    assert store.jobs[1].status == "failed"


async def test_canary_batch_must_fully_succeed(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    store = MemoryJobs(WindowSet(), lambda h, a: "failed" if h == 1 else "succeeded")
    await store.create_job(JobSpec(kind="patch", schedule="now", canary=True), list(range(1, 11)))
    await start(nursery, store)
    await trio.sleep(hours(1))
    assert store.states()[1] == "failed"  # the canary (first 10 %) failed twice
    assert {store.states()[h] for h in range(2, 11)} == {"skipped"}
    # And with a good canary, everyone goes, the canary strictly first.
    good = MemoryJobs(WindowSet(), lambda h, a: "succeeded")
    await good.create_job(JobSpec(kind="patch", schedule="now", canary=True), list(range(1, 11)))
    await start(nursery, good)
    await trio.sleep(hours(1))
    assert set(good.states().values()) == {"succeeded"}
    assert max(good.started_at[1]) + 60 <= min(good.started_at[h][0] for h in range(2, 11))


async def test_blackout_keeps_the_window_shut(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    freeze = Interval(EPOCH, EPOCH + dt.timedelta(days=1))
    ws = WindowSet([window([], dt.time(2, 0), 60)[0]], hosts_of={1: [1]}, blackouts=[freeze])
    store = MemoryJobs(ws, lambda h, a: "succeeded")
    await store.create_job(JobSpec(kind="patch", schedule="window"), [1])
    await start(nursery, store)
    await trio.sleep(hours(25))
    assert store.states() == {1: "waiting_window"}  # night one is frozen
    await trio.sleep(hours(24))
    assert store.states() == {1: "succeeded"}
