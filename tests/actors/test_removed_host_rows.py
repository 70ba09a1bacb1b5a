"""The rows of a host that has no actor (review rvC finding 4): a removed host's rows end
skipped ("the host was removed") so that its job ends; a host added since the last reconcile
is not taken for a removed one."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import trio
import trio.testing

from actors.jobs import WindowSet
from actors.scheduler import Scheduler
from actors.state import FleetState
from settings import ConfigStore
from storage import JobSpec

from ..fakes import FakeFleetAgents, MemoryDirectory, MemorySink, fake_wall
from .test_coordinator import MemoryJobs


def scheduler(tmp_path: Path, jobs: MemoryJobs | None = None) -> Scheduler:
    (tmp_path / "patch-manager.toml").write_text("")
    (tmp_path / "hosts.toml").write_text("")
    return Scheduler(
        config=ConfigStore(tmp_path),
        directory=MemoryDirectory([]),
        agent_factory=FakeFleetAgents(),
        sink=MemorySink(),
        fleet=FleetState(),
        rng=random.Random(3),
        wall=fake_wall,
        job_store=jobs,
    )


async def test_a_retriable_failed_row_of_a_removed_host_ends_skipped_and_its_job_ends(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, tmp_path: Path
) -> None:
    jobs = MemoryJobs(WindowSet(), lambda host_id, attempt: "succeeded")
    job_id = await jobs.create_job(JobSpec(kind="patch", schedule="now"), [99])
    jobs.jobs[job_id] = dataclasses.replace(jobs.jobs[job_id], status="running")
    (row_id,) = jobs.rows
    jobs._set(row_id, state="failed", attempts=1, error_code="AGENT_ERROR")  # retriable
    sched = scheduler(tmp_path, jobs)
    await nursery.start(sched.run)
    await trio.sleep(10)
    assert jobs.rows[row_id].state == "skipped"
    assert jobs.rows[row_id].error_message == "the host was removed"
    assert jobs.jobs[job_id].status not in ("queued", "running")


async def test_a_host_unknown_only_until_the_next_reconcile_is_not_taken_for_removed(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, tmp_path: Path
) -> None:
    sched = scheduler(tmp_path)
    await nursery.start(sched.run)
    assert sched._host_blocked(5) == ""  # maybe added since the last reconcile: not yet
    await sched.reconcile_now()
    assert sched._host_blocked(5) == "the host was removed"
