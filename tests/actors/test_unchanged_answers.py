"""A patch poll whose answers are byte for byte those of the data already stored (the
envelope's request id and time aside) does not decode the package list at all; any change
in them goes the whole way (decoded, diffed, stored)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from simulator import Fleet

from .conftest import Manager, register
from .test_lean_actors import all_idle_after, poll_counts

pytestmark = pytest.mark.timeout(120)


def unchanged(manager: Manager) -> dict[int, int]:
    return {h: r.actor.unchanged_answers for h, r in manager.scheduler.hosts.items() if r.actor}


async def test_a_repeated_answer_is_not_decoded_and_a_changed_one_is_stored(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(3, time_scale=0.01)
    ids = await register(manager, fleet)
    with trio.fail_after(60):
        await manager.fleet.wait_until(all_idle_after(manager, {}, 2))
    assert set(unchanged(manager).values()) == {0}  # the first poll: everything decoded
    writes, rows = manager.sink.stats.patch_writes, manager.sink.stats.patch_rows

    polls = poll_counts(manager)
    manager.handle.refresh()
    with trio.fail_after(60):
        await manager.fleet.wait_until(all_idle_after(manager, polls, 2))
    assert set(unchanged(manager).values()) == {1}
    assert (manager.sink.stats.patch_writes, manager.sink.stats.patch_rows) == (writes, rows)

    changed = fleet.agents[0]
    changed.profile.installed["zz-unchanged-test"] = "2.0-1"
    polls = poll_counts(manager)
    manager.handle.refresh()
    with trio.fail_after(60):
        await manager.fleet.wait_until(all_idle_after(manager, polls, 2))
    counts = unchanged(manager)
    assert counts.pop(ids[changed.address]) == 1  # decoded, diffed and stored
    assert set(counts.values()) == {2}
    assert manager.sink.stats.patch_writes == writes + 1
    assert manager.sink.stats.patch_rows == rows + 1
    stored = await manager.db.run(
        lambda conn: conn.execute(
            "SELECT version FROM host_packages WHERE host_id = %s AND name = 'zz-unchanged-test'",
            (ids[changed.address],),
        ).fetchone()
    )
    assert stored == ("2.0-1",)
