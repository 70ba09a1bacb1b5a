"""Shared fixtures for actor tests against simulated agents and a real database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from actors import FleetHandle, FleetState, Scheduler
from actors.persist import DatabaseSink
from patch_manager.runtime import Storage
from patch_manager.serve import build_actor_system
from settings import ConfigStore
from simulator import Fleet
from storage import Database, insert_host

from ..conftest import Pki

FAST_POLICY = """
[agents]
allow_addresses = ["127.0.0.0/8"]  # the simulated agents live on loopback
[polling]
health_interval_s = 3600
patch_interval_s = 7200
backoff_s = [1, 1, 1]
jitter_ratio = 0.0
request_timeout_s = 5.0
connect_timeout_s = 2.0
[discovery]
min_prefix_len = 22
concurrency = 256
connect_timeout_s = 1.0
"""


@dataclass
class Manager:
    scheduler: Scheduler
    fleet: FleetState
    sink: DatabaseSink
    handle: FleetHandle
    db: Database


@pytest.fixture
async def manager(
    nursery: trio.Nursery, db: Database, pki: Pki, tmp_path: Path
) -> AsyncIterator[Manager]:
    (tmp_path / "patch-manager.toml").write_text(FAST_POLICY)
    store = ConfigStore(tmp_path)
    system = build_actor_system(store, Storage(db, None, "test database"), pki.ca)
    await nursery.start(system.sink.run)
    await nursery.start(system.scheduler.run)
    yield Manager(system.scheduler, system.fleet, system.sink, system.handle, db)


MakeManager = Callable[[str], Awaitable[Manager]]


@pytest.fixture
def make_manager(nursery: trio.Nursery, db: Database, pki: Pki, tmp_path: Path) -> MakeManager:
    """A running actor system whose patch-manager.toml is the given text (e.g. without the
    loopback allowance, to see the address policy at work)."""

    async def make(conf: str) -> Manager:
        (tmp_path / "patch-manager.toml").write_text(conf)
        system = build_actor_system(ConfigStore(tmp_path), Storage(db, None, "test"), pki.ca)
        await nursery.start(system.sink.run)
        await nursery.start(system.scheduler.run)
        return Manager(system.scheduler, system.fleet, system.sink, system.handle, db)

    return make


async def register(manager: Manager, fleet: Fleet) -> dict[str, int]:
    def insert_all(conn: Any) -> dict[str, int]:
        ids = {}
        with conn.transaction():
            for agent in fleet.agents:
                row = insert_host(
                    conn,
                    name=agent.address,
                    address=agent.address,
                    port=agent.port,
                    display_name=agent.profile.hostname,
                )
                ids[agent.address] = row.id
        return ids

    ids = await manager.db.run(insert_all)
    await manager.scheduler.reconcile_now()
    return ids
