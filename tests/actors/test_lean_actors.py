"""Lean host actors: an actor keeps a digest of its patch data, never the maps; a poll with the
same data writes nothing, a changed one is diffed against the database by the sink."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from simulator import Fleet

from .conftest import Manager, register

pytestmark = pytest.mark.timeout(120)


def all_idle_after(manager: Manager, polls: dict[int, int], more: int) -> Any:
    def done(snaps: list[Any]) -> bool:
        return all(
            r.actor is not None and r.actor.polls >= polls.get(h, 0) + more
            for h, r in manager.scheduler.hosts.items()
        ) and all(s.phase.value == "idle" and s.last_success is not None for s in snaps)

    return done


def poll_counts(manager: Manager) -> dict[int, int]:
    return {h: r.actor.polls for h, r in manager.scheduler.hosts.items() if r.actor}


async def test_an_unchanged_patch_poll_writes_nothing_and_a_changed_one_writes_only_the_change(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(3, time_scale=0.01)
    ids = await register(manager, fleet)
    with trio.fail_after(60):
        await manager.fleet.wait_until(all_idle_after(manager, {}, 2))
    first_writes = manager.sink.stats.patch_writes
    first_rows = manager.sink.stats.patch_rows
    assert first_writes == 3  # each host's first poll stored its data
    assert first_rows >= sum(len(a.profile.installed) for a in fleet.agents)
    for record in manager.scheduler.hosts.values():  # no package or patch maps in the actor
        assert record.actor is not None
        assert not hasattr(record.actor, "_known_packages")
        assert not hasattr(record.actor, "_known_patches")

    # The same data again: no database work at all for the patch data.
    polls = poll_counts(manager)
    manager.handle.refresh()
    with trio.fail_after(60):
        await manager.fleet.wait_until(all_idle_after(manager, polls, 2))
    assert manager.sink.stats.patch_writes == first_writes
    assert manager.sink.stats.patch_rows == first_rows

    # One host gains a package: only that host's poll is diffed and exactly one row written.
    changed = fleet.agents[0]
    changed.profile.installed["zz-lean-test"] = "1.0-1"
    polls = poll_counts(manager)
    manager.handle.refresh()
    with trio.fail_after(60):
        await manager.fleet.wait_until(all_idle_after(manager, polls, 2))
    assert manager.sink.stats.patch_writes == first_writes + 1
    assert manager.sink.stats.patch_rows == first_rows + 1
    stored = await manager.db.run(
        lambda conn: conn.execute(
            "SELECT version FROM host_packages WHERE host_id = %s AND name = 'zz-lean-test'",
            (ids[changed.address],),
        ).fetchone()
    )
    assert stored == ("1.0-1",)


async def test_the_digest_loaded_at_start_equals_the_digest_of_the_same_data_polled(
    manager: Manager, start_fleet: Any
) -> None:
    """The digest read from the database at start equals the digest of the same data polled
    (same normalisation on both sides): the first poll after a restart writes nothing."""
    fleet: Fleet = await start_fleet(2, time_scale=0.01)
    ids = await register(manager, fleet)
    with trio.fail_after(60):
        await manager.fleet.wait_until(all_idle_after(manager, {}, 2))
    stored = await manager.sink.load(ids[fleet.agents[0].address])
    assert stored.patches == {} and stored.packages == {}  # the sink hands out the digest only
    actor = manager.scheduler.hosts[ids[fleet.agents[0].address]].actor
    assert actor is not None
    assert stored.digest == actor._data_digest
