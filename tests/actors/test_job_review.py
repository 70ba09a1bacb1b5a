"""Defects found by the independent review of issue 10, each pinned by a test against simulated
agents (real mTLS, real PostgreSQL) or the pure policy."""

from __future__ import annotations

from typing import Any

import pytest

from simulator import Fleet
from storage import JobSpec

from .conftest import Manager, register
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
