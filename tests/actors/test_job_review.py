"""Defects found by the independent review of issue 10, each pinned by a test against simulated
agents (real mTLS, real PostgreSQL) or the pure policy."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.persist import DatabaseJobStore
from simulator import Fleet
from simulator.model import Op
from storage import JobSpec, create_job, recorded_agent_jobs

from .conftest import FAST_POLICY, MakeManager, Manager, register
from .test_job_execution import rows_of
from .test_jobs import finished, healthy

pytestmark = pytest.mark.timeout(120)
APPLY = "POST /api/v1/patches/apply"


@pytest.mark.parametrize("status", [429, 403, 405])
async def test_a_followed_row_ends_by_polling_when_the_websocket_upgrade_is_refused(
    manager: Manager, start_fleet: Any, status: int
) -> None:
    fleet: Fleet = await start_fleet(1, time_scale=0.002)
    ids = await register(manager, fleet)
    await healthy(manager, 1)
    [agent] = fleet.agents
    agent.ws_refusal = status
    job_id = await manager.handle.create_job(
        JobSpec(kind="patch", schedule="now"), list(ids.values())
    )
    job = await finished(manager, job_id, timeout=25)  # polled every 5 s, not after 3 h
    assert job.status == "succeeded"
    [row] = (await rows_of(manager, job_id)).values()
    assert (row.state, row.attempts) == ("succeeded", 1)
    assert agent.mutations.count(APPLY) == 1


async def test_an_invalid_job_id_in_the_agents_answer_is_reconciled_never_crashing_the_actor(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1, time_scale=0.002)
    ids = await register(manager, fleet)
    await healthy(manager, 1)
    [agent] = fleet.agents
    agent.bad_job_ids = 1  # the job is created; the answer names "../../system/reboot"
    job_id = await manager.handle.create_job(
        JobSpec(kind="patch", schedule="now"), list(ids.values())
    )
    job = await finished(manager, job_id, timeout=40)
    assert job.status == "succeeded"
    [row] = (await rows_of(manager, job_id)).values()
    assert row.agent_job_id == next(iter(agent.jobs))  # adopted from the agent's job list
    assert agent.mutations.count(APPLY) == 1  # never sent twice
    assert all(s.crashes == 0 for s in manager.fleet.snapshots())


async def test_an_unexpected_exception_ends_the_row_internal_error_not_the_actor(
    manager: Manager, start_fleet: Any
) -> None:
    """A row whose stored agent job id cannot be put into a URL (a corrupt row): the client
    raises ValueError while following; the row ends failed INTERNAL_ERROR, the actor lives."""
    fleet: Fleet = await start_fleet(1, time_scale=0.002)
    ids = await register(manager, fleet)
    await healthy(manager, 1)
    [agent] = fleet.agents
    host_id = ids[agent.address]

    def corrupt_row(conn: Any) -> int:
        job_id = create_job(
            conn, JobSpec(kind="update", schedule="now", packages=("curl",)), [(host_id, 0)]
        )
        conn.execute(
            "UPDATE job_hosts SET state = 'following', attempts = 1, agent_job_id = 'x/y',"
            " owner = 'crashed-node', lease_expires_at = now() - interval '1 s'"
            " WHERE job_id = %s",
            (job_id,),
        )
        return int(job_id)

    job_id = await manager.db.run(corrupt_row)
    actor = manager.scheduler.hosts[host_id].actor
    assert actor is not None
    actor.wake_jobs()
    job = await finished(manager, job_id, timeout=30)
    [row] = (await rows_of(manager, job_id)).values()
    assert (job.status, row.state, row.error_code) == ("failed", "failed", "INTERNAL_ERROR")
    assert "invalid job id" in row.error_message
    assert all(s.crashes == 0 and s.phase.value != "failed" for s in manager.fleet.snapshots())


async def test_older_agent_patch_with_reboot_waits_for_the_uptime_reset_when_the_reboot_job_is_late(
    manager: Manager, start_fleet: Any
) -> None:
    """2.5.5: the patch job completes, the separate reboot job appears only later; the row must
    not succeed before the host really rebooted (the uptime reset is the evidence)."""
    fleet: Fleet = await start_fleet(1, time_scale=0.01)
    ids = await register(manager, fleet)
    await healthy(manager, 1)
    [agent] = fleet.agents
    agent.set_faults({"reboot_sequence": "2.5.5"})
    agent.reboot_job_late_s = 3.0
    agent.pending_reboot = True
    booted_before = agent.booted_at
    job_id = await manager.handle.create_job(
        JobSpec(kind="patch", schedule="now", allow_reboot=True), list(ids.values())
    )
    assert (await finished(manager, job_id, timeout=90)).status == "succeeded"
    [row] = (await rows_of(manager, job_id)).values()
    assert agent.booted_at > booted_before
    assert row.finished_at is not None and row.finished_at >= agent.booted_at
    # The separate reboot job is accounted for: no later reboot row can adopt it as its own.
    reboots = [j for j in agent.jobs.values() if j.op is Op.REBOOT]
    assert reboots
    known = await manager.db.run(recorded_agent_jobs, ids[agent.address])
    assert {j.job_id for j in reboots} <= known


async def test_a_tls_handshake_rejection_is_a_definite_refusal_walking_the_ladder(
    manager: Manager, start_fleet: Any
) -> None:
    """The agent refuses our client certificate: nothing was processed, so the row follows the
    unreachable ladder and fails HOST_UNREACHABLE instead of reconciling until the deadline."""
    fleet: Fleet = await start_fleet(1, time_scale=0.002)
    ids = await register(manager, fleet)
    await healthy(manager, 1)
    [agent] = fleet.agents
    agent.set_faults({"down": True})  # drop the manager's pooled connections...
    agent.set_faults({"down": False, "tls_reject": True})  # ...and refuse every new handshake
    await agent.wait_listening()
    job_id = await manager.handle.create_job(
        JobSpec(kind="patch", schedule="now"), list(ids.values())
    )
    job = await finished(manager, job_id, timeout=40)  # the ladder here is 1 + 1 + 1 s
    [row] = (await rows_of(manager, job_id)).values()
    assert (job.status, row.state, row.error_code) == ("failed", "failed", "HOST_UNREACHABLE")
    assert not [j for j in agent.jobs.values() if not j.internal]


async def test_a_request_that_timed_out_is_not_resent_while_the_slow_agent_may_still_create_it(
    manager: Manager, start_fleet: Any
) -> None:
    """The agent takes 12 s to create the job; the client gives up after 5 s. The job list is
    read for a while before concluding that nothing was created: the late job is adopted."""
    fleet: Fleet = await start_fleet(1, time_scale=0.002)
    ids = await register(manager, fleet)
    await healthy(manager, 1)
    [agent] = fleet.agents
    agent.slow_mutation_s = 12.0
    job_id = await manager.handle.create_job(
        JobSpec(kind="patch", schedule="now"), list(ids.values())
    )
    job = await finished(manager, job_id, timeout=90)
    assert job.status == "succeeded"
    assert agent.mutations.count(APPLY) == 1  # never sent twice
    [row] = (await rows_of(manager, job_id)).values()
    assert row.agent_job_id == next(j.job_id for j in agent.jobs.values() if not j.internal)


def test_every_process_start_is_its_own_row_owner_and_knows_its_predecessor(
    tmp_path: Path,
) -> None:
    db: Any = None  # the owner is decided before any database access
    first = DatabaseJobStore(db, owner_file=tmp_path / "job-owner")
    sibling = DatabaseJobStore(db)
    assert first.owner != sibling.owner
    assert first.owner.split(":")[0] == sibling.owner.split(":")[0] == socket.gethostname()
    assert first.previous == ()
    restarted = DatabaseJobStore(db, owner_file=tmp_path / "job-owner")
    assert restarted.previous == (first.owner,) and restarted.owner != first.owner


async def test_nul_characters_in_agent_text_are_stripped_not_crashing_the_host_actor(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1, time_scale=0.002)
    [agent] = fleet.agents
    agent.nul_text = True
    pending = len(agent.profile.upgradable)
    assert pending
    await register(manager, fleet)
    await healthy(manager, 1)
    with trio.fail_after(30):
        await manager.fleet.wait_until(lambda s: s[0].pending_patches == pending)
    [snapshot] = manager.fleet.snapshots()
    assert snapshot.crashes == 0 and snapshot.phase.value != "failed"


async def test_a_claimed_row_whose_wait_ends_during_shutdown_is_not_sent(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1, time_scale=0.002)
    ids = await register(manager, fleet)
    await healthy(manager, 1)
    [agent] = fleet.agents
    agent.set_faults({"queue_depth": 0, "admission_retry_after_s": 2})
    job_id = await manager.handle.create_job(
        JobSpec(kind="patch", schedule="now"), list(ids.values())
    )
    with trio.fail_after(30):
        await fleet.wait_until(lambda _: agent.mutations.count(APPLY) >= 1)  # refused: waits 2 s
    manager.scheduler.stop_admitting()  # shutdown begins during the wait
    agent.set_faults({"queue_depth": 100})
    with trio.move_on_after(8):  # the wait ends twice over meanwhile: nothing may be sent
        await fleet.wait_until(lambda _: agent.mutations.count(APPLY) >= 2)
    assert agent.mutations.count(APPLY) == 1
    [row] = (await rows_of(manager, job_id)).values()
    assert row.state == "claimed"  # left for the next start


async def test_the_unreachable_ladder_before_sending_ends_at_the_window_close(
    make_manager: MakeManager, start_fleet: Any
) -> None:
    """A long ladder (600 s steps) to a host that is down: the reboot row ends WINDOW_CLOSED
    when its one-minute window closes, not after the ladder."""
    manager = await make_manager(FAST_POLICY.replace("backoff_s = [1, 1, 1]", "backoff_s = [600]"))
    fleet: Fleet = await start_fleet(1, time_scale=0.002)
    ids = await register(manager, fleet)
    await healthy(manager, 1)
    [agent] = fleet.agents
    host_id = ids[agent.address]
    agent.set_faults({"down": True})

    def window_and_job(conn: Any) -> int:
        conn.execute(
            "INSERT INTO maintenance_windows (host_id, recurrence, start_date, start_time,"
            " duration_minutes, timezone) SELECT %s, 'once', (t AT TIME ZONE 'UTC')::date,"
            " date_trunc('minute', t AT TIME ZONE 'UTC')::time, 1, 'UTC'"
            " FROM (SELECT CASE WHEN extract(second FROM now()) < 45 THEN now()"
            "  ELSE now() + interval '20 s' END AS t) s",
            (host_id,),
        )
        # A reboot job reads the agent before sending (system info, uptime): the ladder of the
        # row's start, not of the send.
        return int(create_job(conn, JobSpec(kind="reboot", schedule="window"), [(host_id, 0)]))

    job_id = await manager.db.run(window_and_job)
    manager.handle.poke_jobs()
    job = await finished(manager, job_id, timeout=100)
    [row] = (await rows_of(manager, job_id)).values()
    assert (job.status, row.state, row.error_code) == ("failed", "skipped", "WINDOW_CLOSED")
    assert "connect" in row.error_message or "refused" in row.error_message
