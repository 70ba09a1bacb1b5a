"""The incremental job coordinator on a real PostgreSQL (issue 17 point 3): it reads every
active job once, then only what the database's change notices (LISTEN/NOTIFY, migration 0022)
name. Its tick and resync are an hour here, so anything it does after its first pass was woken
by a notice: nothing pokes it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
import trio

from actors.jobs import JobCoordinator, WindowSet, batches_for, listen_for_changes
from actors.persist import DatabaseJobStore
from simulator import Fleet
from storage import (
    NO_DEADLINE,
    Database,
    DatabaseUnavailable,
    JobHostRow,
    JobRow,
    JobSpec,
    cancel_job,
    claim_next,
    create_job,
    finish_row,
    get_job,
    insert_host,
    job_rows,
    save_window,
)
from storage.coordinator import JobListener, JobNotices, coordinator_jobs

from ..fakes import fake_wall
from .conftest import Manager, register
from .test_coordinator import MemoryJobs
from .test_jobs import finished, healthy

pytestmark = pytest.mark.timeout(120)

HOUR = 3600.0
OWNER = "elsewhere"  # a job runner of another process


async def hosts(db: Database, count: int) -> list[int]:
    def insert(conn: Any) -> list[int]:
        with conn.transaction():
            return [
                insert_host(conn, name=f"c{i}", address=f"127.99.250.{i + 1}", port=1).id
                for i in range(count)
            ]

    return list(await db.run(insert))


async def start(nursery: trio.Nursery, db: Database) -> JobCoordinator:
    coordinator = JobCoordinator(
        DatabaseJobStore(db), wall=wall, tick=HOUR, resync=HOUR, min_gap=0.0
    )
    await nursery.start(coordinator.run)
    await full_reads(coordinator, 1)
    return coordinator


def wall() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def until(
    coordinator: JobCoordinator, check: Callable[[], Awaitable[bool]], timeout: float = 20
) -> None:
    """Wait for ``check()`` to hold after a pass (each pass here follows a notice)."""
    with trio.fail_after(timeout):
        while not await check():
            await coordinator.wait_pass()


async def full_reads(coordinator: JobCoordinator, count: int) -> None:
    async def done() -> bool:
        return coordinator.full_reads >= count

    await until(coordinator, done)


async def create(db: Database, host_ids: list[int], **spec: Any) -> int:
    spec.setdefault("schedule", "now")
    job = JobSpec(kind="patch", **spec)
    return int(await db.run(create_job, job, batches_for(job, host_ids)))


async def status(db: Database, job_id: int) -> str:
    return str((await db.run(get_job, job_id)).status)


async def test_a_job_created_in_the_database_is_started_on_its_notice_without_a_poke(
    nursery: trio.Nursery, db: Database
) -> None:
    ids = await hosts(db, 3)
    coordinator = await start(nursery, db)
    job_id = await create(db, ids)

    async def permitted() -> bool:
        rows = await db.run(job_rows, job_id)
        return all(r.state == "queued" and r.run_until is not None for r in rows)

    await until(coordinator, permitted)
    assert await status(db, job_id) == "running"
    assert coordinator.rows_held() == 3
    assert coordinator.full_reads == 1  # heard, not read again with everything else


async def test_rows_finished_by_another_process_roll_the_job_up_without_a_full_read(
    nursery: trio.Nursery, db: Database
) -> None:
    ids = await hosts(db, 3)
    coordinator = await start(nursery, db)
    job_id = await create(db, ids)

    async def running() -> bool:
        return await status(db, job_id) == "running"

    await until(coordinator, running)
    for host_id in ids:  # another process's runners claim and finish every row
        row = await db.run(claim_next, host_id, OWNER, 60.0)
        assert row is not None
        await db.run(lambda c, r=row.id: finish_row(c, r, OWNER, "succeeded"))

    async def succeeded() -> bool:
        return await status(db, job_id) == "succeeded"

    await until(coordinator, succeeded)
    assert coordinator.full_reads == 1
    assert coordinator.rows_held() == 0  # a finished job leaves the coordinator's memory


async def test_a_cancel_made_in_the_database_ends_the_job_on_its_notice(
    nursery: trio.Nursery, db: Database
) -> None:
    ids = await hosts(db, 4)
    coordinator = await start(nursery, db)
    job_id = await create(db, ids, batch_size=1)  # three rows wait for their batch

    async def running() -> bool:
        return await status(db, job_id) == "running"

    await until(coordinator, running)
    assert await db.run(cancel_job, job_id) == 4

    async def cancelled() -> bool:
        return await status(db, job_id) == "cancelled"

    await until(coordinator, cancelled)
    assert coordinator.full_reads == 1


async def test_after_losing_its_listening_connection_it_reads_everything_and_hears_again(
    nursery: trio.Nursery, db: Database
) -> None:
    ids = await hosts(db, 2)
    coordinator = await start(nursery, db)
    killed = await db.run(
        lambda c: c.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'patch-manager-jobs-listener'"
            " AND datname = current_database()"
        ).fetchone()[0]
    )
    assert killed == 1
    await full_reads(coordinator, 2)  # reconnected: it reads everything again
    job_id = await create(db, ids)

    async def running() -> bool:
        return await status(db, job_id) == "running"

    await until(coordinator, running)


async def test_the_coordinator_reads_rows_without_their_package_snapshots(db: Database) -> None:
    ids = await hosts(db, 1)
    job_id = await create(db, ids)
    big = {f"pkg{i}": f"1.{i}" for i in range(2000)}
    row = await db.run(claim_next, ids[0], OWNER, 60.0)
    assert row is None  # no permit yet: give it one, as the coordinator would
    await db.run(
        lambda c: c.execute(
            "UPDATE job_hosts SET run_until = %s WHERE job_id = %s", (NO_DEADLINE, job_id)
        )
    )
    row = await db.run(claim_next, ids[0], OWNER, 60.0)
    assert row is not None
    await db.run(
        lambda c: finish_row(
            c, row.id, OWNER, "succeeded", packages_before=big, packages_after={"pkg0": "2"}
        )
    )
    (page_row,) = await db.run(job_rows, job_id)  # the job page reads the side table
    assert page_row.packages_before == big and page_row.packages_after == {"pkg0": "2"}
    await db.run(lambda c: c.execute("UPDATE jobs SET status = 'running' WHERE id = %s", (job_id,)))
    ((_, (lean,)),) = await db.run(coordinator_jobs, [job_id])
    assert lean.state == "succeeded"
    assert lean.packages_before is None and lean.packages_after is None


async def test_rollback_rows_carry_only_their_own_hosts_versions(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(2, time_scale=0.002)
    for agent in fleet.agents:
        agent.set_faults({"downgrades": "allow"})
    ids = await register(manager, fleet)
    await healthy(manager, 2)
    job_id = await manager.handle.create_job(
        JobSpec(kind="patch", schedule="now"), sorted(ids.values())
    )
    assert (await finished(manager, job_id)).status == "succeeded"
    patched = {r.host_id: r for r in await manager.db.run(job_rows, job_id)}
    rollback_id = await manager.handle.rollback(job_id)
    rollback = await manager.db.run(get_job, rollback_id)
    assert all(isinstance(p, str) for p in rollback.packages)  # names; no per-host list
    for row in await manager.db.run(job_rows, rollback_id):
        before = patched[row.host_id].packages_before or {}
        after = patched[row.host_id].packages_after or {}
        assert row.planned == {n: v for n, v in before.items() if after.get(n) != v}
    assert (await finished(manager, rollback_id)).status == "succeeded"


# -- under a virtual clock, with the feed in memory ----------------------------------------------


class FeedJobs(MemoryJobs):
    """``MemoryJobs`` as a ``JobFeed``: counts what the coordinator reads; notices are sent by
    the test (``deliver``)."""

    def __init__(self, windows: WindowSet) -> None:
        super().__init__(windows, lambda host_id, attempt: "succeeded")
        self.full = 0
        self.rows_read = 0
        self.deliver: Callable[[JobNotices | None], None] | None = None

    async def active(self) -> list[tuple[JobRow, list[JobHostRow]]]:
        self.full += 1
        return await super().active()

    async def read_jobs(self, job_ids: Sequence[int]) -> list[tuple[JobRow, list[JobHostRow]]]:
        return [(j, rows) for j, rows in await super().active() if j.id in job_ids]

    async def read_rows(self, row_ids: Sequence[int]) -> list[JobHostRow]:
        self.rows_read += len(row_ids)
        return [self.rows[i] for i in row_ids]

    async def listen(
        self,
        deliver: Callable[[JobNotices | None], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.deliver = deliver
        task_status.started()
        deliver(None)
        await trio.sleep_forever()


async def test_passes_read_nothing_until_a_notice_names_a_row(autojump_clock: Any) -> None:
    store = FeedJobs(WindowSet())
    job_id = await store.create_job(JobSpec(kind="patch", schedule="now"), [1, 2])
    async with trio.open_nursery() as nursery:
        coordinator = JobCoordinator(store, wall=fake_wall, tick=1.0, resync=60.0)
        await nursery.start(coordinator.run)
        await trio.sleep(30)  # 30 ticks
        assert store.full == 1 and store.rows_read == 0
        assert store.jobs[job_id].status == "running"  # permits written on the first pass
        for row in store.rows.values():  # a runner elsewhere finishes both rows, unheard
            store._set(row.id, state="succeeded")
        await trio.sleep(10)
        assert store.jobs[job_id].status == "running"  # not heard: not seen
        assert store.deliver is not None
        store.deliver(JobNotices(rows={job_id: set(store.rows)}))
        await coordinator.wait_pass()
        assert store.jobs[job_id].status == "succeeded"
        assert store.full == 1 and store.rows_read == 2
        await trio.sleep(60)  # the safety net: everything is read again every ``resync``
        assert store.full == 2
        nursery.cancel_scope.cancel()


def test_notices_parse_jobs_rows_and_windows_and_ignore_foreign_payloads() -> None:
    notices = JobNotices()
    for payload in ("job:7", "row:7:70", "row:8:80", "row:8:81", "windows", "hello", "job:x"):
        notices.add(payload)
    assert notices.jobs == {7} and notices.rows == {7: {70}, 8: {80, 81}} and notices.windows
    assert not JobNotices()


async def test_a_window_opened_in_the_database_gives_permits_on_its_notice(
    nursery: trio.Nursery, db: Database
) -> None:
    (host_id,) = await hosts(db, 1)
    now = wall()

    def window(start: dt.datetime) -> dict[str, Any]:
        return {
            "name": "w", "host_id": host_id, "recurrence": "once", "start_date": start.date(),
            "start_time": start.time().replace(microsecond=0), "duration_minutes": 120,
            "timezone": "UTC",
        }  # fmt: skip

    later = await db.run(save_window, window(now + dt.timedelta(days=2)), None, "test")
    coordinator = await start(nursery, db)
    job_id = await create(db, [host_id], schedule="window")

    async def waiting() -> bool:
        (row,) = await db.run(job_rows, job_id)
        return row.state == "waiting_window"

    await until(coordinator, waiting)
    await db.run(save_window, window(now - dt.timedelta(minutes=5)), later, "test")  # open now

    async def permitted() -> bool:
        (row,) = await db.run(job_rows, job_id)
        return row.state == "queued" and row.run_until is not None

    await until(coordinator, permitted)
    assert coordinator.full_reads == 1


async def test_a_final_status_refused_by_the_database_is_not_published_and_the_job_is_read_again(
    db: Database,
) -> None:
    """A runner claims the row while the coordinator, on its copy, decides to skip it (the
    host was paused meanwhile) and to end the job: the store refuses the final status."""
    (host_id,) = await hosts(db, 1)
    blocked = {host_id: ""}
    changes: list[tuple[int, str]] = []
    coordinator = JobCoordinator(
        DatabaseJobStore(db), wall=wall, tick=HOUR, resync=HOUR, min_gap=0.0,
        host_blocked=lambda h: blocked.get(h, ""),
        on_change=lambda c: changes.append((c.job_id, c.status)),
    )  # fmt: skip
    job_id = await create(db, [host_id])
    await coordinator.run_once()  # full read: the row gets its permit, the job runs
    assert await status(db, job_id) == "running"
    assert await db.run(claim_next, host_id, OWNER, 60.0) is not None  # unheard here
    blocked[host_id] = "the host is paused"
    await coordinator.run_once()  # decides skip + a final status on its stale copy
    assert await status(db, job_id) == "running"
    assert [c for c in changes if c[1] not in ("queued", "running")] == []  # nothing published
    assert coordinator.rows_held() == 1  # the job is kept ...
    await coordinator.run_once()  # ... and read again: the row is claimed, the job runs on
    (row,) = await db.run(job_rows, job_id)
    assert row.state == "claimed"
    assert await status(db, job_id) == "running"
    assert [c for c in changes if c[1] not in ("queued", "running")] == []


class NoListening(JobListener):
    """The pool works but the listening connection cannot be opened."""

    def connect(self) -> None:
        raise DatabaseUnavailable("cannot listen for job changes: connection refused")


class DeafFeed(FeedJobs):
    async def listen(
        self,
        deliver: Callable[[JobNotices | None], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await listen_for_changes(NoListening(""), deliver, task_status=task_status)


async def test_while_it_cannot_listen_every_pass_reads_everything() -> None:
    """Real clock (the listener's attempts run in a worker thread): passes every 50 ms, the
    listener's retries 0.5, 1, 2, 4 ... s apart."""
    store = DeafFeed(WindowSet())
    job_id = await store.create_job(JobSpec(kind="patch", schedule="now"), [1, 2])
    async with trio.open_nursery() as nursery:
        coordinator = JobCoordinator(store, wall=fake_wall, tick=0.05, resync=HOUR)
        await nursery.start(coordinator.run)
        with trio.fail_after(30):
            while store.jobs[job_id].status != "running":
                await coordinator.wait_pass()
            for row in store.rows.values():  # a runner finishes both rows, unheard
                store._set(row.id, state="succeeded")
            full = store.full
            await coordinator.wait_pass()
            await coordinator.wait_pass()  # (the first may have been under way)
            assert store.jobs[job_id].status == "succeeded"
            assert store.full >= full + 1
            full, passes = store.full, coordinator.passes
            for _ in range(10):
                await coordinator.wait_pass()
            assert store.full - full >= coordinator.passes - passes - 1  # one per pass
        nursery.cancel_scope.cancel()
