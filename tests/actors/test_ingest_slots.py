"""Fleet-wide ingest slots: a host fetches, parses and stores its patch data only in a free slot
(at most ``Scheduler.ingest`` hosts hold a parsed package list at once)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from simulator import Fleet

from .conftest import Manager, register

pytestmark = pytest.mark.timeout(120)


async def test_patch_data_is_fetched_and_stored_only_while_an_ingest_slot_is_free(
    manager: Manager, start_fleet: Any
) -> None:
    limiter = manager.scheduler.ingest
    holder = object()
    limiter.total_tokens = 1
    await limiter.acquire_on_behalf_of(holder)  # every slot taken
    fleet: Fleet = await start_fleet(3, time_scale=0.01)
    await register(manager, fleet)
    with trio.fail_after(60):  # the first health polls need no slot
        await manager.fleet.wait_until(
            lambda snaps: len(snaps) == 3 and all(s.last_success is not None for s in snaps)
        )
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
    assert limiter.statistics().tasks_waiting == 3  # every poller waits for the slot
    assert manager.sink.stats.patch_writes == 0
    assert all(s.patches_as_of is None for s in manager.fleet.snapshots())
    most = 0

    def one_at_a_time(snaps: list[Any]) -> bool:
        nonlocal most
        most = max(most, limiter.borrowed_tokens)
        return all(s.patches_as_of is not None for s in snaps)

    limiter.release_on_behalf_of(holder)
    with trio.fail_after(60):
        await manager.fleet.wait_until(one_at_a_time)
    assert manager.sink.stats.patch_writes == 3
    assert most == 1
