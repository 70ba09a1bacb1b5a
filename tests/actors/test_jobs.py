"""Deployments against simulated agents over real mTLS and a real PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from simulator import Fleet
from storage import JobSpec, get_job, job_rows

from .conftest import Manager, register

pytestmark = pytest.mark.timeout(120)
APPLY = "POST /api/v1/patches/apply"


async def healthy(manager: Manager, count: int) -> None:
    with trio.fail_after(60):
        await manager.fleet.wait_until(
            lambda s: (
                len(s) == count
                and all(x.health.value == "healthy" and x.phase.value == "idle" for x in s)
            )
        )


async def finished(manager: Manager, job_id: int, timeout: float = 60) -> Any:
    with trio.fail_after(timeout):
        while True:
            job = await manager.db.run(get_job, job_id)
            if job.status not in ("queued", "running"):
                return job
            assert manager.scheduler.jobs is not None
            await manager.scheduler.jobs.wait_pass()


async def test_apply_now_to_many_hosts_removes_their_patches(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(100, time_scale=0.002)
    ids = await register(manager, fleet)
    await healthy(manager, 100)
    job_id = await manager.handle.create_job(
        JobSpec(kind="patch", schedule="now"), sorted(ids.values())
    )
    job = await finished(manager, job_id)
    assert job.status == "succeeded"
    rows = await manager.db.run(job_rows, job_id)
    assert {r.state for r in rows} == {"succeeded"}
    assert all(r.attempts == 1 and r.agent_job_id for r in rows)
    assert all(a.profile.upgradable == {} for a in fleet.agents)  # the agents really patched
    # Versions before and after are recorded for rollback.
    changed = [r for r in rows if r.packages_before != r.packages_after]
    assert changed and all(r.packages_before and r.packages_after for r in rows)
    # The hosts' pending lists follow (each actor re-polls after its job).
    with trio.fail_after(30):
        await manager.fleet.wait_until(lambda s: all(x.pending_patches == 0 for x in s))


async def test_failures_end_in_the_right_states_with_agent_details(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(4, time_scale=0.002)
    ids = await register(manager, fleet)
    await healthy(manager, 4)
    not_found, gpg, ok, timeout = fleet.agents
    not_found.set_faults({"fail_all_jobs": "PKG_NOT_FOUND"})
    gpg.set_faults({"fail_all_jobs": "GPG_ERROR"})
    timeout.set_faults({"job_failures": ["TIMEOUT"]})  # fails once; the automatic retry passes
    job_id = await manager.handle.create_job(
        JobSpec(kind="patch", schedule="now"), sorted(ids.values())
    )
    job = await finished(manager, job_id)
    assert job.status == "partially_failed"
    rows = {r.host_id: r for r in await manager.db.run(job_rows, job_id)}
    failed = rows[ids[not_found.address]]
    assert (failed.state, failed.error_code, failed.attempts) == ("failed", "PKG_NOT_FOUND", 2)
    assert "Unable to locate package" in failed.error_stderr
    assert rows[ids[gpg.address]].error_code == "GPG_ERROR"
    assert rows[ids[ok.address]].state == "succeeded"
    retried = rows[ids[timeout.address]]
    assert (retried.state, retried.attempts, retried.error_code) == ("succeeded", 2, "")


async def test_queue_full_and_lost_events_still_complete(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(2, time_scale=0.002)
    ids = await register(manager, fleet)
    await healthy(manager, 2)
    busy, lossy = fleet.agents
    # Every admission refused with 429 QUEUE_FULL (Retry-After 1 s here, 60 s by default)...
    busy.set_faults({"queue_depth": 0, "admission_retry_after_s": 1})
    lossy.set_faults({"lose_events": 1.0})  # ...and every WebSocket event lost here
    job_id = await manager.handle.create_job(
        JobSpec(kind="patch", schedule="now"), sorted(ids.values())
    )
    # Once the lossy agent has its job its WebSockets are dropped too (no close frame):
    # only reconciliation with GET /jobs/{id} can tell the manager how the job ended.
    with trio.fail_after(30):
        await fleet.wait_until(lambda _: any("patches/apply" in m for m in lossy.mutations))
    lossy.drop_websockets()
    with trio.fail_after(30):
        await fleet.wait_until(lambda _: busy.mutations.count(APPLY) >= 2)  # refused twice
    rows = {r.host_id: r for r in await manager.db.run(job_rows, job_id)}
    # The refused host waits out Retry-After: not failed, the request not counted as sent.
    assert rows[ids[busy.address]].state in ("claimed", "request_sent")
    assert rows[ids[busy.address]].attempts == 1
    busy.set_faults({"queue_depth": 100})  # the queue frees up
    job = await finished(manager, job_id)
    assert job.status == "succeeded"
    rows = {r.host_id: r for r in await manager.db.run(job_rows, job_id)}
    assert rows[ids[lossy.address]].state == "succeeded"
    refused = rows[ids[busy.address]]
    assert (refused.state, refused.attempts) == ("succeeded", 1)
    assert refused.agent_job_id in busy.jobs  # the one job the agent accepted
    assert len([j for j in busy.jobs.values() if not j.internal]) == 1


async def test_reboot_job_waits_through_the_downtime(manager: Manager, start_fleet: Any) -> None:
    fleet: Fleet = await start_fleet(1, time_scale=0.01)
    ids = await register(manager, fleet)
    await healthy(manager, 1)
    agent = fleet.agents[0]
    uptime_before = agent.uptime_seconds
    job_id = await manager.handle.create_job(
        JobSpec(kind="reboot", schedule="now"), list(ids.values())
    )
    job = await finished(manager, job_id)
    assert job.status == "succeeded"
    assert agent.uptime_seconds < uptime_before


async def test_reboot_is_refused_while_the_package_database_is_unclean(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1, time_scale=0.01)
    ids = await register(manager, fleet)
    await healthy(manager, 1)
    agent = fleet.agents[0]
    agent.set_faults({"package_db_clean": False})
    job_id = await manager.handle.create_job(
        JobSpec(kind="reboot", schedule="now"), list(ids.values())
    )
    job = await finished(manager, job_id)
    assert job.status == "failed"
    [row] = await manager.db.run(job_rows, job_id)
    assert row.error_code == "PACKAGE_DB_NOT_CLEAN"
    assert not any("reboot" in m for m in agent.mutations)  # nothing was sent


async def test_rollback_restores_previous_versions(manager: Manager, start_fleet: Any) -> None:
    fleet: Fleet = await start_fleet(2, time_scale=0.002)
    for agent in fleet.agents:
        agent.set_faults({"downgrades": "allow"})  # see the note in agent-api: apt refuses
    ids = await register(manager, fleet)
    await healthy(manager, 2)
    before = {a.address: dict(a.profile.installed) for a in fleet.agents}
    job_id = await manager.handle.create_job(
        JobSpec(kind="patch", schedule="now"), sorted(ids.values())
    )
    assert (await finished(manager, job_id)).status == "succeeded"
    assert any(before[a.address] != a.profile.installed for a in fleet.agents)
    rollback_id = await manager.handle.rollback(job_id, created_by="alice")
    rollback = await finished(manager, rollback_id)
    assert rollback.status == "succeeded" and rollback.rollback_of == job_id
    assert rollback.created_by == "alice"
    for agent in fleet.agents:
        installed = agent.profile.installed
        # Every package is back at its version; what the patch installed beside the old (an
        # apt kernel metapackage's new versioned image) stays, as it does on a real system.
        assert {n: installed.get(n) for n in before[agent.address]} == before[agent.address]
        added = set(installed) - set(before[agent.address])
        distro = agent.profile.distro
        assert distro is not None and added <= set(distro.kernels[1].packages)
