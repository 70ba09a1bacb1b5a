"""Kill the manager with SIGKILL in the middle of a 200-host deployment and start it again:
every host row ends in the right state, no agent gets the same request twice, no host is
forgotten."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from simulator import Fleet, FleetSpec
from storage import JobSpec, create_job, insert_host

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


async def test_sigkill_mid_job_then_restart(
    start_server: Any, nursery: trio.Nursery, tmp_dir: Path
) -> None:
    with trio.fail_after(220):
        server = await start_server(CONF)
        await server.wait_ready()
        fleet = Fleet(
            server.data_dir / "ca",
            tmp_dir / "sim",
            FleetSpec(count=200, base_address="127.216.0.1", time_scale=0.02),
        )
        await nursery.start(fleet.run)
        patched_hosts = [a for a in fleet.agents if a.profile.upgradable]

        def setup() -> int:
            with psycopg.connect(conninfo(server.data_dir), autocommit=True) as conn:
                ids = [
                    insert_host(conn, name=a.address, address=a.address).id for a in fleet.agents
                ]
                return create_job(
                    conn, JobSpec(kind="patch", schedule="now"), [(host_id, 0) for host_id in ids]
                )

        job_id = await trio.to_thread.run_sync(setup)

        # Let about half of the agents receive their request, then kill the manager hard.
        await fleet.wait_until(lambda agents: sum(APPLY in a.mutations for a in agents) >= 100)
        server.process.send_signal(signal.SIGKILL)
        await server.process.wait()
        sent_before = sum(APPLY in a.mutations for a in fleet.agents)
        assert 100 <= sent_before < 200

        again = await start_server(CONF)
        await again.wait_ready()
        await again.wait_log(f"job {job_id} is succeeded")

        def rows() -> list[tuple[str, int, str | None]]:
            with psycopg.connect(conninfo(server.data_dir)) as conn:
                return conn.execute(
                    "SELECT state, attempts, agent_job_id FROM job_hosts WHERE job_id = %s",
                    (job_id,),
                ).fetchall()

        final = await trio.to_thread.run_sync(rows)
        assert len(final) == 200
        assert Counter(state for state, _, _ in final) == {"succeeded": 200}
        assert all(agent_job for _, _, agent_job in final)
        # No agent got the same request twice; every agent got it once.
        assert Counter(a.mutations.count(APPLY) for a in fleet.agents) == {1: 200}
        assert all(not a.profile.upgradable for a in patched_hosts)
        again.process.send_signal(signal.SIGTERM)
        assert await again.process.wait() == 0
