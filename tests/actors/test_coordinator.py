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
    """CoordinatorStore in memory plus one simulated job runner per host that pulls permitted
    rows the way ``storage.claim_next`` does (permit re-checked at the claim).
    ``outcome(host_id, attempt)`` decides how a run ends; ``busy_until`` delays a host's
    runner (e.g. backing off) until that virtual time."""

    def __init__(
        self, windows: WindowSet, outcome: Callable[[int, int], str], duration: float = 60.0
    ) -> None:
        self.window_set = windows
        self.outcome = outcome
        self.duration = duration
        self.jobs: dict[int, JobRow] = {}
        self.rows: dict[int, JobHostRow] = {}
        self.started_at: dict[int, list[float]] = {}
        self.busy_until: dict[int, float] = {}
        self.blocked: dict[int, str] = {}
        self.nursery: trio.Nursery | None = None

    async def active(self) -> list[tuple[JobRow, list[JobHostRow]]]:
        return [
            (j, [r for r in self.rows.values() if r.job_id == j.id])
            for j in self.jobs.values()
            if j.status in ("queued", "running")
        ]

    async def apply(self, d: Decisions) -> None:
        for row_id in d.waiting:
            self._set(row_id, state="waiting_window", run_until=None)
        for row_id in d.retry:
            self._set(row_id, state="queued")
        for row_id, until in d.permits:
            self._set(row_id, state="queued", run_until=until)
        for row_id, reason in d.skipped:
            self._set(row_id, state="skipped", error_message=reason)
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

    async def create_window_job(
        self, window_id: int, occurrence: dt.datetime, spec: JobSpec, host_ids: list[int]
    ) -> int | None:
        return None

    def _set(self, row_id: int, **values: object) -> None:
        self.rows[row_id] = dataclasses.replace(self.rows[row_id], **values)  # type: ignore[arg-type]

    def cancel(self, job_id: int) -> None:
        for r in self.rows.values():
            if r.job_id == job_id and r.state in ("queued", "waiting_window"):
                self._set(r.id, state="cancelled")

    def wake(self, host_ids: list[int]) -> None:
        """The coordinator wrote permits: each host's runner looks (when it is free)."""
        assert self.nursery is not None
        for host_id in set(host_ids):
            self.nursery.start_soon(self._runner, host_id)

    async def _runner(self, host_id: int) -> None:
        await trio.sleep_until(self.busy_until.get(host_id, 0.0))
        if self.blocked.get(host_id):
            return  # paused: claims nothing
        now = fake_wall()
        row = next(
            (
                r
                for r in sorted(self.rows.values(), key=lambda r: r.id)
                if r.host_id == host_id
                and r.state == "queued"
                and r.run_until is not None
                and r.run_until > now
            ),
            None,
        )
        if row is None:
            return
        self._set(row.id, state="claimed", attempts=row.attempts + 1)
        self.started_at.setdefault(host_id, []).append(trio.current_time())
        await trio.sleep(self.duration)
        current = self.rows[row.id]
        self._set(row.id, state=self.outcome(host_id, current.attempts))

    def states(self) -> dict[int, str]:
        return {r.host_id: r.state for r in self.rows.values()}


async def start(nursery: trio.Nursery, store: MemoryJobs) -> JobCoordinator:
    store.nursery = nursery
    coordinator = JobCoordinator(
        store,
        wall=fake_wall,
        tick=1.0,
        host_blocked=lambda host_id: store.blocked.get(host_id, ""),
        permits_granted=store.wake,
    )
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
    assert len(store.started_at[2]) == 2
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


async def test_apply_now_row_of_a_paused_host_is_skipped_with_the_reason(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    store = MemoryJobs(WindowSet(), lambda h, a: "succeeded")
    store.blocked[2] = "the host is paused"
    await store.create_job(JobSpec(kind="patch", schedule="now"), [1, 2])
    await start(nursery, store)
    await trio.sleep(600)
    assert store.states() == {1: "succeeded", 2: "skipped"}
    assert store.rows[2].error_message == "the host is paused"
    assert store.jobs[1].status == "partially_failed"  # ended; never "succeeded"


async def test_window_row_of_a_paused_host_is_skipped_when_the_window_closes(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    ws = WindowSet([window([], dt.time(2, 0), 60)[0]], hosts_of={1: [1, 2]})
    store = MemoryJobs(ws, lambda h, a: "succeeded")
    store.blocked[2] = "the host is paused"
    await store.create_job(JobSpec(kind="patch", schedule="window"), [1, 2])
    await start(nursery, store)
    await trio.sleep(hours(2) + 600)
    assert store.states() == {1: "succeeded", 2: "queued"}  # may still run while open
    await trio.sleep(hours(1))
    assert store.states() == {1: "succeeded", 2: "skipped"}
    assert store.rows[2].error_message == "the maintenance window closed: the host is paused"
    assert store.jobs[1].status == "partially_failed"


async def test_row_of_a_backing_off_runner_does_not_run_after_its_window_closed(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    ws = WindowSet([window([], dt.time(2, 0), 30)[0]], hosts_of={1: [1]})
    store = MemoryJobs(ws, lambda h, a: "succeeded")
    store.busy_until[1] = hours(2) + 40 * 60  # backing off until 02:40, window ends 02:30
    await store.create_job(JobSpec(kind="patch", schedule="window"), [1])
    await start(nursery, store)
    await trio.sleep(hours(4))
    assert 1 not in store.started_at  # never ran late
    assert store.states() == {1: "skipped"}
    assert store.rows[1].error_message.startswith("the maintenance window closed")


async def test_a_job_with_a_cancelled_host_is_never_succeeded(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    store = MemoryJobs(WindowSet(), lambda h, a: "succeeded")
    await store.create_job(JobSpec(kind="patch", schedule="now", batch_size=1), [1, 2])
    await start(nursery, store)
    await trio.sleep(30)  # host 1 is running, host 2 waits for the next batch
    store.cancel(1)
    await trio.sleep(600)
    assert store.states() == {1: "succeeded", 2: "cancelled"}
    assert store.jobs[1].status == "partially_failed"
    only_cancelled = MemoryJobs(WindowSet(), lambda h, a: "succeeded")
    await only_cancelled.create_job(JobSpec(kind="patch", schedule="window"), [1])
    only_cancelled.cancel(1)
    await start(nursery, only_cancelled)
    await trio.sleep(10)
    assert only_cancelled.jobs[1].status == "cancelled"
