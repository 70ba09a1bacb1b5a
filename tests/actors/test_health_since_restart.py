"""After a restart of the manager, a host's "healthy since" is its stored last transition, not
the restart time nor empty (issue 16 point 1, review N5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from patch_manager.runtime import Storage
from patch_manager.serve import build_actor_system
from settings import ConfigStore
from storage import Database, health_history

from ..conftest import Pki
from .conftest import FAST_POLICY, Manager, register


async def start_system(nursery: trio.Nursery, db: Database, pki: Pki, conf: Path) -> Manager:
    system = build_actor_system(ConfigStore(conf), Storage(db, None, "test"), pki.ca)
    await nursery.start(system.sink.run)
    await nursery.start(system.scheduler.run)
    return Manager(system.scheduler, system.fleet, system.sink, system.handle, db)


async def test_health_since_after_a_restart_is_the_stored_last_transition(
    db: Database, pki: Pki, tmp_path: Path, start_fleet: Any
) -> None:
    (tmp_path / "patch-manager.toml").write_text(FAST_POLICY)
    fleet = await start_fleet(1)
    async with trio.open_nursery() as first:
        manager = await start_system(first, db, pki, tmp_path)
        host_id = (await register(manager, fleet))[fleet.agents[0].address]
        with trio.fail_after(30):
            await manager.fleet.wait_until(
                lambda snaps: any(s.host_id == host_id and s.condition == "healthy" for s in snaps)
            )
        await manager.sink.flush()
        first.cancel_scope.cancel()  # the manager stops
    transitions = await db.run(health_history, host_id)
    assert transitions and transitions[-1].to_state == "healthy"
    async with trio.open_nursery() as second:  # ... and starts again
        manager = await start_system(second, db, pki, tmp_path)
        with trio.fail_after(30):
            await manager.fleet.wait_until(
                lambda snaps: any(s.host_id == host_id and s.health_as_of for s in snaps)
            )
        snapshot = manager.fleet.get(host_id)
        assert snapshot is not None and snapshot.condition == "healthy"
        assert snapshot.health_since == transitions[-1].at
        second.cancel_scope.cancel()
