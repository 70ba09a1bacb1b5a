"""Issue 17 (deploy to 2,500 hosts): one hung host delays no other host's rows, the package list
is read as a name → version map without records, the versions before go with the request."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
import trio

from actors.agent_client import AgentClient, _fast_versions
from actors.agent_errors import AgentTimeout
from simulator import Fleet
from storage import JobSpec, job_rows

from .conftest import Manager, register
from .test_job_execution import client
from .test_jobs import finished, healthy

pytestmark = pytest.mark.timeout(120)


def envelope(body: bytes) -> httpx2.Response:
    return httpx2.Response(200, headers={"content-type": "application/json"}, content=body)


async def test_a_hanging_host_does_not_delay_a_healthy_hosts_two_jobs_beyond_ten_seconds(
    manager: Manager, start_fleet: Any
) -> None:
    """A host that reads requests and never answers (5 s read timeouts, a 1 + 1 + 1 s ladder
    here: about 30 s on its way to an agent) holds up neither the following of another host's
    row nor the claim of that host's next row (review D2.1/D2.2)."""
    fleet: Fleet = await start_fleet(2, time_scale=0.002)
    ids = await register(manager, fleet)
    await healthy(manager, 2)
    hung, ok = fleet.agents
    hung.set_faults({"hang": True})
    await manager.handle.create_job(JobSpec(kind="patch", schedule="now"), [ids[hung.address]])
    with trio.fail_after(5):  # the hung host's row is claimed: on its way to the agent
        await manager.fleet.wait_until(
            lambda s: any(x.host_id == ids[hung.address] and x.job_state for x in s)
        )
    with trio.fail_after(10):
        for _ in range(2):
            job_id = await manager.handle.create_job(
                JobSpec(kind="patch", schedule="now"), [ids[ok.address]]
            )
            job = await finished(manager, job_id)
            assert job.status == "succeeded"


def test_fast_versions_map_a_success_envelope_and_leave_anything_unusual_to_the_full_checks() -> (
    None
):
    ok = b'{"success": true, "data": {"packages": [{"name": "a", "version": "1", "x": 2},'
    ok += b' {"name": "b", "version": null}], "total": 2}}'
    assert _fast_versions(envelope(ok)) == {"a": "1", "b": ""}
    unusual = [
        b'{"success": true, "data": {"packages": [{"name": "a", "version": 7}]}}',
        b'{"success": true, "data": {"packages": [{"name": "a\\u0000", "version": "1"}]}}',
        b'{"success": false, "error": {"code": "X"}}',
        b'{"success": true, "data": null}',
        b"not json",
    ]
    assert [_fast_versions(envelope(b)) for b in unusual] == [None] * len(unusual)
    assert (
        _fast_versions(httpx2.Response(500, headers={"content-type": "json"}, content=ok)) is None
    )


async def test_installed_versions_equal_the_package_records_as_name_to_version(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1, time_scale=0.002, profile="realistic")
    ids = await register(manager, fleet)
    await healthy(manager, 1)
    agent = client(manager, ids[fleet.agents[0].address], fleet.agents[0])
    assert isinstance(agent, AgentClient)
    try:
        versions = await agent.installed_versions()
        assert versions == {p.name: p.version for p in await agent.packages()}
        assert versions == dict(fleet.agents[0].profile.installed)
    finally:
        await agent.aclose()


async def test_a_failed_agent_job_keeps_the_versions_before_written_with_its_request(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1, time_scale=0.002)
    ids = await register(manager, fleet)
    await healthy(manager, 1)
    agent = fleet.agents[0]
    before = dict(agent.profile.installed)
    agent.set_faults({"fail_all_jobs": "GPG_ERROR"})
    job_id = await manager.handle.create_job(
        JobSpec(kind="patch", schedule="now"), sorted(ids.values())
    )
    await finished(manager, job_id)
    (row,) = await manager.db.run(job_rows, job_id)
    assert (row.state, row.error_code) == ("failed", "GPG_ERROR")
    assert row.packages_before == before and row.packages_after is None


async def test_a_hanging_hosts_ladder_try_costs_one_read_timeout_not_a_health_probe_too(
    manager: Manager, start_fleet: Any
) -> None:
    """The package list read before a request times out: that error goes to the ladder at once
    (one 5 s request timeout here), no health probe timing out after it (review D2.3)."""
    fleet: Fleet = await start_fleet(1, time_scale=0.002)
    ids = await register(manager, fleet)
    await healthy(manager, 1)
    sim = fleet.agents[0]
    host_id = ids[sim.address]
    agent = client(manager, host_id, sim)
    timeout = manager.scheduler.hosts[host_id].policy.request_timeout_s
    actor = manager.scheduler.hosts[host_id].actor
    assert actor is not None and actor.jobs is not None
    sim.set_faults({"hang": True})
    try:
        started = trio.current_time()
        with pytest.raises(AgentTimeout):
            await actor.jobs.executor._packages_or_health(agent)
        assert timeout <= trio.current_time() - started < 1.5 * timeout
    finally:
        await agent.aclose()
