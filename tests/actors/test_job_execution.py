"""Job rows through their state machine against simulated agents (real mTLS, real PostgreSQL):
the failure paths of issue 10 — bad package names, answers lost after the agent accepted,
malformed events, unreachable and paused hosts, both reboot sequences, resumed rows that must
be reconciled or confirmed from evidence."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors.agent_client import PatchSelection
from actors.ports import HostTarget, JobAgentPort
from simulator import Fleet, SimAgent
from simulator.model import Op, SimJob, St, wall_now
from storage import JobHostRow, JobSpec, create_job, get_job, job_rows, row_attempts, set_paused

from .conftest import Manager, register
from .test_jobs import finished, healthy

pytestmark = pytest.mark.timeout(120)
APPLY = "POST /api/v1/patches/apply"


def client(manager: Manager, host_id: int, agent: SimAgent) -> JobAgentPort:
    """An agent client like the manager's own (tests talk to the agent directly)."""
    policy = manager.scheduler.hosts[host_id].policy
    target = HostTarget(host_id, agent.address, agent.address, agent.port)
    return manager.scheduler.agent_factory(target, policy)  # type: ignore[return-value]


async def rows_of(manager: Manager, job_id: int) -> dict[int, JobHostRow]:
    return {r.host_id: r for r in await manager.db.run(job_rows, job_id)}


async def test_a_bad_package_name_fails_its_rows_and_never_the_hosts(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(2, time_scale=0.002)
    ids = await register(manager, fleet)
    await healthy(manager, 2)
    job_id = await manager.handle.create_job(
        JobSpec(kind="patch", schedule="now", selection="list", packages=("openssl libssl3",)),
        sorted(ids.values()),
    )
    job = await finished(manager, job_id, timeout=30)
    assert job.status == "failed"
    for row in (await rows_of(manager, job_id)).values():
        assert (row.state, row.error_code, row.attempts) == ("failed", "BAD_PACKAGE_NAME", 1)
        assert "'openssl libssl3'" in row.error_message
    assert not any(a.mutations for a in fleet.agents)  # nothing was sent
    assert all(s.phase.value != "failed" and s.crashes == 0 for s in manager.fleet.snapshots())


async def test_an_answer_lost_after_the_agent_accepted_is_adopted_not_resent(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1, time_scale=0.002)
    ids = await register(manager, fleet)
    await healthy(manager, 1)
    [agent] = fleet.agents
    agent.set_faults({"drop_job_answers": 1})  # the job is created, the connection then closed
    job_id = await manager.handle.create_job(
        JobSpec(kind="patch", schedule="now"), list(ids.values())
    )
    job = await finished(manager, job_id, timeout=60)
    assert job.status == "succeeded"
    [row] = (await rows_of(manager, job_id)).values()
    assert agent.mutations.count(APPLY) == 1  # never sent twice
    assert (row.state, row.attempts, row.agent_job_id) == ("succeeded", 1, next(iter(agent.jobs)))


async def test_malformed_job_events_are_skipped_and_counted_never_failing_the_row(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1, time_scale=0.01)
    ids = await register(manager, fleet)
    await healthy(manager, 1)
    [agent] = fleet.agents
    agent.set_faults({"garbage_events": True})
    job_id = await manager.handle.create_job(
        JobSpec(kind="patch", schedule="now"), list(ids.values())
    )
    job = await finished(manager, job_id, timeout=60)
    assert job.status == "succeeded"
    assert agent.mutations.count(APPLY) == 1
    actor = manager.scheduler.hosts[ids[agent.address]].actor
    assert actor is not None and actor.jobs is not None
    assert actor.jobs.executor.malformed_events >= 1


async def test_apply_now_to_an_unreachable_host_fails_after_the_backoff_ladder(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(2, time_scale=0.002)
    ids = await register(manager, fleet)
    await healthy(manager, 2)
    down, up = fleet.agents
    down.set_faults({"down": True})
    job_id = await manager.handle.create_job(
        JobSpec(kind="patch", schedule="now"), sorted(ids.values())
    )
    job = await finished(manager, job_id, timeout=60)  # the ladder here is 1 + 1 + 1 s
    assert job.status == "partially_failed"
    rows = await rows_of(manager, job_id)
    failed = rows[ids[down.address]]
    assert (failed.state, failed.error_code, failed.attempts) == ("failed", "HOST_UNREACHABLE", 1)
    assert rows[ids[up.address]].state == "succeeded"


async def test_apply_now_to_a_paused_host_is_skipped_with_the_reason(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(2, time_scale=0.002)
    ids = await register(manager, fleet)
    await healthy(manager, 2)
    paused, running = fleet.agents
    await manager.db.run(set_paused, ids[paused.address], True)
    await manager.scheduler.reconcile_now()
    job_id = await manager.handle.create_job(
        JobSpec(kind="patch", schedule="now"), sorted(ids.values())
    )
    job = await finished(manager, job_id, timeout=30)
    assert job.status == "partially_failed"
    rows = await rows_of(manager, job_id)
    skipped = rows[ids[paused.address]]
    assert (skipped.state, skipped.error_code) == ("skipped", "SKIPPED")
    assert skipped.error_message == "the host is paused"  # shown on the job page
    assert not paused.mutations and rows[ids[running.address]].state == "succeeded"


async def test_a_retry_that_succeeds_clears_the_row_error_and_keeps_the_attempts(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1, time_scale=0.002)
    ids = await register(manager, fleet)
    await healthy(manager, 1)
    fleet.agents[0].set_faults({"job_failures": ["TIMEOUT"]})  # the first attempt fails
    job_id = await manager.handle.create_job(
        JobSpec(kind="patch", schedule="now"), list(ids.values())
    )
    assert (await finished(manager, job_id)).status == "succeeded"
    [row] = (await rows_of(manager, job_id)).values()
    assert (row.state, row.attempts, row.error_code, row.error_message) == ("succeeded", 2, "", "")
    attempts = await manager.db.run(row_attempts, row.id)
    assert [(a.outcome, a.error_code) for a in attempts] == [
        ("failed", "TIMEOUT"),
        ("succeeded", ""),
    ]
    assert attempts[0].agent_job_id != attempts[1].agent_job_id


@pytest.mark.parametrize("sequence", ["new", "2.5.5"])
async def test_patch_with_reboot_ends_only_after_the_host_came_back(
    manager: Manager, start_fleet: Any, sequence: str
) -> None:
    fleet: Fleet = await start_fleet(1, time_scale=0.01)
    ids = await register(manager, fleet)
    await healthy(manager, 1)
    [agent] = fleet.agents
    agent.set_faults({"reboot_sequence": sequence})
    agent.pending_reboot = True
    booted_before = agent.booted_at
    job_id = await manager.handle.create_job(
        JobSpec(kind="patch", schedule="now", allow_reboot=True), list(ids.values())
    )
    assert (await finished(manager, job_id, timeout=90)).status == "succeeded"
    [row] = (await rows_of(manager, job_id)).values()
    assert agent.booted_at > booted_before  # it really rebooted...
    assert row.finished_at is not None and row.finished_at >= agent.booted_at  # ...before the end
    assert agent.mutations.count(APPLY) == 1


async def test_request_sent_row_adopts_the_newest_job_no_row_accounts_for(
    manager: Manager, start_fleet: Any
) -> None:
    """After a crash between writing the request and recording the answer, the agent has the
    previous attempt's job and the real one: the real one is adopted, nothing is resent."""
    fleet: Fleet = await start_fleet(1, time_scale=0.002)
    ids = await register(manager, fleet)
    await healthy(manager, 1)
    [agent] = fleet.agents
    host_id = ids[agent.address]
    direct = client(manager, host_id, agent)
    try:
        previous = (await direct.apply_patches(PatchSelection.all(), allow_reboot=False)).job_id
        real = (await direct.apply_patches(PatchSelection.all(), allow_reboot=False)).job_id
    finally:
        await direct.aclose()

    def crashed_row(conn: Any) -> int:
        with conn.transaction():
            job_id = create_job(conn, JobSpec(kind="patch", schedule="now"), [(host_id, 0)])
            row_id = conn.execute(
                "SELECT id FROM job_hosts WHERE job_id = %s", (job_id,)
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO job_host_attempts (row_id, host_id, attempt, agent_job_id, outcome,"
                " error_code) VALUES (%s, %s, 1, %s, 'failed', 'TIMEOUT')",
                (row_id, host_id, previous),
            )
            conn.execute(
                "UPDATE job_hosts SET state = 'request_sent', attempts = 2, sent_at = now(),"
                " owner = 'crashed-node', lease_expires_at = now() - interval '1 s'"
                " WHERE id = %s",
                (row_id,),
            )
        return int(job_id)

    mutations = len(agent.mutations)
    job_id = await manager.db.run(crashed_row)
    actor = manager.scheduler.hosts[host_id].actor
    assert actor is not None
    actor.wake_jobs()
    assert (await finished(manager, job_id)).status == "succeeded"
    [row] = (await rows_of(manager, job_id)).values()
    assert row.agent_job_id == real
    assert len(agent.mutations) == mutations  # nothing sent again


@pytest.mark.parametrize("reset", [True, False])
async def test_resumed_reboot_row_is_confirmed_by_the_uptime_not_assumed(
    manager: Manager, start_fleet: Any, reset: bool
) -> None:
    fleet: Fleet = await start_fleet(1, time_scale=0.002)
    ids = await register(manager, fleet)
    await healthy(manager, 1)
    [agent] = fleet.agents
    host_id = ids[agent.address]
    # The agent's record of a reboot job that completed (as after a crash of the manager).
    record = SimJob(Op.REBOOT, [], status=St.COMPLETED, completed_at=wall_now())
    agent.jobs[record.job_id] = record
    reboot = record.job_id
    # Recorded before the crash: the uptime when the reboot was asked for. If the host's uptime
    # now is below it, the reboot happened; if not, "completed" alone is no evidence.
    before = agent.uptime_seconds + 1000 if reset else max(agent.uptime_seconds - 1, 0)

    def crashed_row(conn: Any) -> int:
        job_id = create_job(conn, JobSpec(kind="reboot", schedule="now"), [(host_id, 0)])
        conn.execute(
            "UPDATE job_hosts SET state = 'following', attempts = 1, agent_job_id = %s,"
            " uptime_before = %s, owner = 'crashed-node', lease_expires_at = now() - interval '1 s'"
            " WHERE job_id = %s",
            (reboot, before, job_id),
        )
        return int(job_id)

    job_id = await manager.db.run(crashed_row)
    actor = manager.scheduler.hosts[host_id].actor
    assert actor is not None
    actor.wake_jobs()
    job = await finished(manager, job_id)
    [row] = (await rows_of(manager, job_id)).values()
    if reset:
        assert (job.status, row.state) == ("succeeded", "succeeded")
    else:
        assert (row.state, row.error_code) == ("failed", "REBOOT_NOT_DETECTED")
    assert (await manager.db.run(get_job, job_id)).status in ("succeeded", "failed")


async def test_a_row_whose_runner_waits_out_refusals_does_not_run_after_its_window_closed(
    manager: Manager, start_fleet: Any
) -> None:
    """The agent refuses admission (QUEUE_FULL, Retry-After 2 s) all through the window; the
    queue frees up only after the window closed: the request never goes out again."""
    fleet: Fleet = await start_fleet(1, time_scale=0.002)
    ids = await register(manager, fleet)
    await healthy(manager, 1)
    [agent] = fleet.agents
    host_id = ids[agent.address]
    agent.set_faults({"queue_depth": 0, "admission_retry_after_s": 2})

    def window_and_job(conn: Any) -> int:
        # A one-minute window (UTC) holding the current moment, or the next minute's when
        # this one is nearly over (so that the row is surely tried inside it).
        conn.execute(
            "INSERT INTO maintenance_windows (host_id, recurrence, start_date, start_time,"
            " duration_minutes, timezone) SELECT %s, 'once', (t AT TIME ZONE 'UTC')::date,"
            " date_trunc('minute', t AT TIME ZONE 'UTC')::time, 1, 'UTC'"
            " FROM (SELECT CASE WHEN extract(second FROM now()) < 45 THEN now()"
            "  ELSE now() + interval '20 s' END AS t) s",
            (host_id,),
        )
        return create_job(conn, JobSpec(kind="patch", schedule="window"), [(host_id, 0)])

    job_id = await manager.db.run(window_and_job)
    manager.handle.poke_jobs()
    with trio.fail_after(40):
        await fleet.wait_until(lambda _: agent.mutations.count(APPLY) >= 1)  # tried, refused
    job = await finished(manager, job_id, timeout=90)
    agent.set_faults({"queue_depth": 100})
    assert job.status == "failed"  # nothing ran; the only row was skipped (nobody cancelled)
    [row] = (await rows_of(manager, job_id)).values()
    assert row.state == "skipped" and "window" in row.error_message
    assert not [j for j in agent.jobs.values() if not j.internal]  # never accepted
    refused = agent.mutations.count(APPLY)
    assert manager.scheduler.jobs is not None
    for _ in range(3):
        await manager.scheduler.jobs.wait_pass()
    assert agent.mutations.count(APPLY) == refused  # and never sent after the window


async def test_manual_retry_of_a_window_row_waits_for_the_next_window_and_keeps_history(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1)
    ids = await register(manager, fleet)
    host_id = ids[fleet.agents[0].address]

    def failed_in_last_window(conn: Any) -> int:
        # The host's daily one-hour window opens again in about 12 hours.
        conn.execute(
            "INSERT INTO maintenance_windows (host_id, recurrence, start_date, start_time,"
            " duration_minutes, timezone) SELECT %s, 'daily', (t AT TIME ZONE 'UTC')::date,"
            " date_trunc('minute', t AT TIME ZONE 'UTC')::time, 60, 'UTC'"
            " FROM (SELECT now() + interval '12 hours' AS t) s",
            (host_id,),
        )
        job_id = create_job(conn, JobSpec(kind="patch", schedule="window"), [(host_id, 0)])
        conn.execute(
            "UPDATE job_hosts SET state = 'failed', attempts = 2, error_code = 'TIMEOUT',"
            " run_until = now() - interval '1 hour' WHERE job_id = %s",
            (job_id,),
        )
        conn.execute(
            "INSERT INTO job_host_attempts (row_id, host_id, attempt, outcome, error_code)"
            " SELECT id, host_id, 1, 'failed', 'TIMEOUT' FROM job_hosts WHERE job_id = %s",
            (job_id,),
        )
        return job_id

    job_id = await manager.db.run(failed_in_last_window)
    assert await manager.handle.retry_failed(job_id) == 1
    assert manager.scheduler.jobs is not None
    for _ in range(2):
        await manager.scheduler.jobs.wait_pass()
    [row] = (await rows_of(manager, job_id)).values()
    assert (row.state, row.run_until, row.error_code) == ("waiting_window", None, "")
    assert [a.attempt for a in await manager.db.run(row_attempts, row.id)] == [1]


async def test_an_unreachable_apply_now_row_says_its_last_error_and_next_try_while_it_waits(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1, time_scale=0.002)
    ids = await register(manager, fleet)
    await healthy(manager, 1)
    [agent] = fleet.agents
    agent.set_faults({"down": True})
    job_id = await manager.handle.create_job(
        JobSpec(kind="patch", schedule="now"), list(ids.values())
    )
    assert manager.scheduler.jobs is not None
    with trio.fail_after(30):
        while True:
            [row] = (await rows_of(manager, job_id)).values()
            if row.error_message:
                break
            await manager.scheduler.jobs.wait_pass()
    assert row.state == "claimed" and row.started_at is None, row
    assert row.error_message.startswith("agent unreachable (")
    assert "next try " in row.error_message and "gives up ~" in row.error_message
    assert "nothing sent yet" in row.error_message
    job = await finished(manager, job_id, timeout=60)
    [row] = (await rows_of(manager, job_id)).values()
    assert (job.status, row.error_code) == ("failed", "HOST_UNREACHABLE")
