"""Fleet-wide ingest slots: a host fetches, parses and stores its patch data only in a free slot
(at most ``Scheduler.ingest`` hosts hold a parsed package list at once)."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
import trio
import trio.testing

from actors.host import HostActor
from actors.ports import HostTarget
from actors.state import FleetState
from settings import PollingPolicy
from simulator import Fleet

from ..fakes import FakeFleetAgents, MemorySink, fake_wall
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


# -- under the virtual clock, with in-memory ports ----------------------------------------------

FAST = PollingPolicy(
    health_interval_s=10,
    patch_interval_s=30,
    request_timeout_s=30.0,
    connect_timeout_s=10.0,
    backoff_s=(60, 300),
    jitter_ratio=0.0,
    max_connections=2,
    paused=False,
)


def actor_with_slots(ingest: trio.CapacityLimiter) -> tuple[HostActor, FakeFleetAgents, MemorySink]:
    agents, sink = FakeFleetAgents(), MemorySink()
    target = HostTarget(9, "slots.example.com", "192.0.2.9", 12443)
    actor = HostActor(target, FAST, agent_factory=agents, sink=sink, fleet=FleetState(),
                      rng=random.Random(1), wall=fake_wall, ingest=ingest)  # fmt: skip
    return actor, agents, sink


async def test_health_polls_keep_their_interval_while_every_ingest_slot_is_taken(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    ingest = trio.CapacityLimiter(1)
    holder = object()
    await ingest.acquire_on_behalf_of(holder)  # every slot taken, for 100 s
    actor, agents, sink = actor_with_slots(ingest)
    await nursery.start(actor.run)
    await trio.sleep(100)
    times = agents.agents["slots.example.com"].times("health")
    assert len(times) >= 10
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) == pytest.approx(10, abs=0.01)  # not one health poll late
    assert agents.agents["slots.example.com"].times("patches") == []  # no slot: no fetch
    assert actor.ingest_waits >= 9
    ingest.release_on_behalf_of(holder)
    await trio.sleep(10)
    assert len(agents.agents["slots.example.com"].times("patches")) == 1
    assert sink.stored[9].patches  # stored once a slot was free
    assert ingest.borrowed_tokens == 0  # and the slot given back


async def test_a_host_waiting_for_a_slot_polls_health_then_waits_again(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    ingest = trio.CapacityLimiter(1)
    holder = object()
    await ingest.acquire_on_behalf_of(holder)
    actor, agents, _ = actor_with_slots(ingest)
    await nursery.start(actor.run)
    await trio.sleep(25)
    assert len(agents.agents["slots.example.com"].times("health")) >= 3
    assert ingest.statistics().tasks_waiting == 1  # back in the queue after its health polls
    nursery.cancel_scope.cancel()
