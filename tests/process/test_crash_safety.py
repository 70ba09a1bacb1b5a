"""Kill the manager with SIGKILL in the middle of deployments and start it again: every host row
ends in the right state, no agent gets the same request twice, no host is forgotten. Besides a
kill at a random point of a 200-host job, the manager is killed at each step of the row state
machine: request written but its answer not received, answer received but not recorded,
agent job being followed."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from simulator import Fleet, FleetSpec
from storage import JobSpec, create_job, insert_host

from ..conftest import fleet_addresses

pytestmark = pytest.mark.timeout(240)

CONF = """
[polling]
health_interval_s = 3600
patch_interval_s = 7200
backoff_s = [1, 1, 1]
connect_timeout_s = 5.0
request_timeout_s = 30.0
"""
APPLY = "POST /api/v1/patches/apply"


def conninfo(data_dir: Path) -> str:
    return f"host={data_dir}/postgres/run user=postgres dbname=patch_manager"


def setup_job(data_dir: Path, fleet: Fleet) -> int:
    with psycopg.connect(conninfo(data_dir), autocommit=True) as conn:
        ids = [insert_host(conn, name=a.address, address=a.address).id for a in fleet.agents]
        # Two batches of 100: the second starts only after the first has ended, so a kill while
        # the first is being sent always leaves rows that were never sent.
        return create_job(
            conn,
            JobSpec(kind="patch", schedule="now", batch_size=100),
            [(host_id, i // 100) for i, host_id in enumerate(ids)],
        )


def row_states(data_dir: Path, job_id: int) -> list[tuple[str, int, str | None]]:
    with psycopg.connect(conninfo(data_dir)) as conn:
        return conn.execute(
            "SELECT state, attempts, agent_job_id FROM job_hosts WHERE job_id = %s", (job_id,)
        ).fetchall()


def postgres_pids(postmaster: int) -> list[int]:
    """The postmaster and every backend it forked (all must stop to freeze the database)."""
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == postmaster:
                pids.append(int(entry.name))
    return pids


async def test_sigkill_mid_job_then_restart(
    start_server: Any, nursery: trio.Nursery, tmp_dir: Path
) -> None:
    with trio.fail_after(220):
        server = await start_server(CONF)
        await server.wait_ready()
        fleet = Fleet(
            server.data_dir / "ca",
            tmp_dir / "sim",
            FleetSpec(count=200, base_address=fleet_addresses(200), time_scale=0.02),
        )
        await nursery.start(fleet.run)
        patched_hosts = [a for a in fleet.agents if a.profile.upgradable]
        job_id = await trio.to_thread.run_sync(setup_job, server.data_dir, fleet)

        # Let half of the first batch receive its request, then kill the manager hard.
        await fleet.wait_until(lambda agents: sum(APPLY in a.mutations for a in agents) >= 50)
        server.process.send_signal(signal.SIGKILL)
        await server.process.wait()
        sent_before = sum(APPLY in a.mutations for a in fleet.agents)
        assert 50 <= sent_before <= 100

        again = await start_server(CONF)
        await again.wait_ready()
        await again.wait_log(f"job {job_id} is succeeded")

        final = await trio.to_thread.run_sync(row_states, server.data_dir, job_id)
        assert len(final) == 200
        assert Counter(state for state, _, _ in final) == {"succeeded": 200}
        assert all(agent_job for _, _, agent_job in final)
        # No agent got the same request twice; every agent got it once.
        assert Counter(a.mutations.count(APPLY) for a in fleet.agents) == {1: 200}
        assert all(not a.profile.upgradable for a in patched_hosts)
        again.process.send_signal(signal.SIGTERM)
        assert await again.process.wait() == 0


@pytest.mark.parametrize("step", ["request_written", "accepted_not_recorded", "following"])
async def test_sigkill_at_each_step_sends_exactly_one_request_per_row(
    start_server: Any, nursery: trio.Nursery, tmp_dir: Path, step: str
) -> None:
    count = 5
    with trio.fail_after(220):
        server = await start_server(CONF)
        await server.wait_ready()
        fleet = Fleet(
            server.data_dir / "ca",
            tmp_dir / "sim",
            FleetSpec(
                count=count,
                base_address=fleet_addresses(count),
                time_scale=0.1 if step == "following" else 0.02,
            ),
        )
        await nursery.start(fleet.run)
        faults: dict[str, dict[str, Any]] = {
            "request_written": {"hold_job_answers": True},  # created, never answered
            "accepted_not_recorded": {},  # answers wait at a gate (below)
            "following": {},
        }
        gate = trio.Event()
        for agent in fleet.agents:
            agent.set_faults(faults[step])
            if step == "accepted_not_recorded":
                agent.answer_gate = gate
        job_id = await trio.to_thread.run_sync(setup_job, server.data_dir, fleet)
        await fleet.wait_until(lambda agents: all(APPLY in a.mutations for a in agents))
        frozen: list[int] = []
        if step == "request_written":
            states = await trio.to_thread.run_sync(row_states, server.data_dir, job_id)
            assert {s for s, _, _ in states} == {"request_sent"}
        elif step == "accepted_not_recorded":
            # The agents have the jobs and hold their answers until the database is frozen, so
            # the manager gets every answer and can record none; it is killed while it waits.
            frozen = postgres_pids(server.postmaster_pid())
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            gate.set()
            await fleet.wait_until(lambda agents: all(a.delayed_answers for a in agents))
        else:
            seen = -1
            for _ in range(count):
                seen = await server.wait_log("following agent job", seen + 1)
        server.process.send_signal(signal.SIGKILL)
        await server.process.wait()
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        if step == "accepted_not_recorded":
            states = await trio.to_thread.run_sync(row_states, server.data_dir, job_id)
            assert {(s, j) for s, _, j in states} == {("request_sent", None)}
        for agent in fleet.agents:
            agent.set_faults({"hold_job_answers": False, "job_answer_delay_s": 0.0})

        again = await start_server(CONF)
        await again.wait_ready()
        await again.wait_log(f"job {job_id} is succeeded")
        final = await trio.to_thread.run_sync(row_states, server.data_dir, job_id)
        assert Counter(state for state, _, _ in final) == {"succeeded": count}
        assert Counter(a.mutations.count(APPLY) for a in fleet.agents) == {1: count}
        # Each row adopted the one job its agent has.
        adopted = {agent_job for _, _, agent_job in final}
        assert adopted == {j for a in fleet.agents for j in a.jobs if not a.jobs[j].internal}
        again.process.send_signal(signal.SIGTERM)
        assert await again.process.wait() == 0


async def test_auto_apply_across_a_crash_creates_exactly_one_deployment(
    start_server: Any, nursery: trio.Nursery, tmp_dir: Path
) -> None:
    """A window with auto-apply is open when the manager starts; it is killed right after it
    created the window's deployment and started again: still one job for the occurrence."""
    count = 3
    with trio.fail_after(200):
        server = await start_server(CONF)
        await server.wait_ready()
        fleet = Fleet(
            server.data_dir / "ca",
            tmp_dir / "sim",
            FleetSpec(count=count, base_address=fleet_addresses(count), time_scale=0.05),
        )
        await nursery.start(fleet.run)

        def setup() -> None:
            with psycopg.connect(conninfo(server.data_dir), autocommit=True) as conn:
                group = conn.execute(
                    "INSERT INTO groups (name) VALUES ('night') RETURNING id"
                ).fetchone()
                assert group is not None
                for agent in fleet.agents:
                    host = insert_host(conn, name=agent.address, address=agent.address).id
                    conn.execute(
                        "INSERT INTO host_groups (host_id, group_id) VALUES (%s, %s)",
                        (host, group[0]),
                    )
                # Open since a minute ago, for the next hour (UTC), auto-applying everything.
                conn.execute(
                    "INSERT INTO maintenance_windows (group_id, recurrence, start_date,"
                    " start_time, duration_minutes, timezone, auto_apply) SELECT %s, 'once',"
                    " (now() AT TIME ZONE 'UTC')::date,"
                    " date_trunc('minute', now() AT TIME ZONE 'UTC')::time - interval '1 min',"
                    " 60, 'UTC', 'all'",
                    (group[0],),
                )

        await trio.to_thread.run_sync(setup)
        await server.wait_log("auto-apply job")
        server.process.send_signal(signal.SIGKILL)
        await server.process.wait()

        again = await start_server(CONF)
        await again.wait_ready()
        await again.wait_log("is succeeded")

        def jobs() -> list[tuple[int, str, str]]:
            with psycopg.connect(conninfo(server.data_dir)) as conn:
                found: list[tuple[int, str, str]] = conn.execute(
                    "SELECT j.id, j.status, j.created_by FROM jobs j"
                    " JOIN window_runs w ON w.job_id = j.id"
                ).fetchall()
                assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (len(found),)
                return found

        [(_, status, creator)] = await trio.to_thread.run_sync(jobs)
        assert status == "succeeded" and creator.startswith("window ")
        assert Counter(a.mutations.count(APPLY) for a in fleet.agents) == {1: count}
        again.process.send_signal(signal.SIGTERM)
        assert await again.process.wait() == 0
