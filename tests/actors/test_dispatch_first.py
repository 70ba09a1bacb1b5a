"""Issue 17 (deploy to 2,500 hosts): rows on their way to an agent go first, the package list
is read as a name → version map without records, the versions before go with the request."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
import trio

from actors.agent_client import AgentClient, _fast_versions
from actors.execution import DispatchFirst
from simulator import Fleet
from storage import JobSpec, job_rows

from .conftest import Manager, register
from .test_job_execution import client
from .test_jobs import finished, healthy

pytestmark = pytest.mark.timeout(120)


def envelope(body: bytes) -> httpx2.Response:
    return httpx2.Response(200, headers={"content-type": "application/json"}, content=body)


async def test_after_dispatch_returns_at_once_when_no_row_is_being_dispatched(
    autojump_clock: Any,
) -> None:
    gate = DispatchFirst(max_wait=60)
    start = trio.current_time()
    await gate.after_dispatch()
    assert trio.current_time() == start


async def test_after_dispatch_waits_until_the_last_dispatching_row_left(
    autojump_clock: Any,
) -> None:
    gate = DispatchFirst(max_wait=60)
    done: list[float] = []

    async def follower() -> None:
        await gate.after_dispatch()
        done.append(trio.current_time())

    start = trio.current_time()
    gate.enter()
    gate.enter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(follower)
        await trio.sleep(5)
        gate.leave()
        await trio.sleep(5)
        assert not done  # one row is still being dispatched
        gate.leave()
    assert done == [start + 10]


async def test_after_dispatch_gives_up_after_max_wait(autojump_clock: Any) -> None:
    gate = DispatchFirst(max_wait=30)
    start = trio.current_time()
    gate.enter()  # a row that never leaves (e.g. a request hanging until its timeout)
    await gate.after_dispatch()
    assert trio.current_time() == start + 30
    gate.leave()


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
