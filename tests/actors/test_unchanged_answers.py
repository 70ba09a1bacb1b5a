"""A patch poll whose answers are byte for byte those of the data already stored (the
envelope's request id and time aside) does not decode the package list at all; any change
in them goes the whole way (decoded, diffed, stored)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from patch_manager.runtime import Storage
from patch_manager.serve import build_actor_system
from settings import ConfigStore
from simulator import Fleet
from storage import Database, migrate

from ..conftest import Pki, StoppableCluster
from .conftest import FAST_POLICY, Manager, register
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


async def test_a_change_to_the_patches_answer_alone_is_decoded_and_stored(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1, time_scale=0.01)
    ids = await register(manager, fleet)
    [agent] = fleet.agents
    host_id = ids[agent.address]
    name = sorted(agent.profile.upgradable)[0]
    with trio.fail_after(60):
        await manager.fleet.wait_until(all_idle_after(manager, {}, 2))
    writes = manager.sink.stats.patch_writes

    agent.send_cve_ids = True  # only the patches answer carries CVE ids: packages are the same
    agent.profile.cve_ids[name] = ["CVE-2099-12345"]
    polls = poll_counts(manager)
    manager.handle.refresh()
    with trio.fail_after(60):
        await manager.fleet.wait_until(all_idle_after(manager, polls, 2))
    assert unchanged(manager) == {host_id: 0}
    assert manager.sink.stats.patch_writes == writes + 1
    stored = await manager.db.run(
        lambda conn: conn.execute(
            "SELECT cve_ids FROM host_patches WHERE host_id = %s AND name = %s"
            " AND resolved_at IS NULL",
            (host_id, name),
        ).fetchone()
    )
    assert stored is not None and "CVE-2099-12345" in stored[0]


async def test_after_a_failed_write_the_previously_stored_answers_are_decoded_not_skipped(
    nursery: trio.Nursery, pki: Pki, start_fleet: Any, tmp_path: Path
) -> None:
    """Stored data D0 (key K0); the database goes down; the agent changes to D1 (decoded, its
    write fails); the agent goes back to D0: that poll must not count as unchanged (D1 is
    pending, K0 must not have survived), and what ends up stored is D0, not D1."""
    cluster = StoppableCluster(nursery, "pm-unchanged-")
    db = Database(await cluster.start(), size=4, statement_timeout_s=10, acquire_timeout=2.0)
    await db.open()
    await db.run(migrate)
    (tmp_path / "patch-manager.toml").write_text(FAST_POLICY)
    system = build_actor_system(ConfigStore(tmp_path), Storage(db, None, "test"), pki.ca)
    await nursery.start(system.sink.run)
    await nursery.start(system.scheduler.run)
    manager = Manager(system.scheduler, system.fleet, system.sink, system.handle, db)
    fleet: Fleet = await start_fleet(1, time_scale=0.01)
    ids = await register(manager, fleet)
    [agent] = fleet.agents
    host_id = ids[agent.address]
    with trio.fail_after(60):
        await manager.fleet.wait_until(all_idle_after(manager, {}, 2))
    writes = manager.sink.stats.patch_writes

    async def poll_once() -> None:
        polls = poll_counts(manager)
        manager.handle.refresh()
        with trio.fail_after(60):
            await manager.fleet.wait_until(
                lambda s: all(r.actor is not None and r.actor.polls >= polls[h] + 2
                              for h, r in manager.scheduler.hosts.items())
                and s[0].phase.value == "idle"
            )  # fmt: skip

    await cluster.stop()
    agent.profile.installed["zz-outage-only"] = "1.0-1"  # D1
    await poll_once()
    assert unchanged(manager) == {host_id: 0}
    del agent.profile.installed["zz-outage-only"]  # back to D0
    await poll_once()
    assert unchanged(manager) == {host_id: 0}  # D1 pending: decoded, not skipped
    assert manager.sink.stats.patch_writes == writes

    await cluster.start()
    with trio.fail_after(60):
        while True:  # the pool reconnects; the next poll is D0 again: skipped now
            await poll_once()
            if unchanged(manager) == {host_id: 1}:
                break
    stored = await db.run(
        lambda conn: conn.execute(
            "SELECT count(*) FILTER (WHERE name = 'zz-outage-only'), count(*)"
            " FROM host_packages WHERE host_id = %s",
            (host_id,),
        ).fetchone()
    )
    assert stored == (0, len(agent.profile.installed))
    await db.close()
