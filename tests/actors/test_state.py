"""The snapshot broadcaster: publishers never block, lagging subscribers are dropped."""

from __future__ import annotations

import dataclasses

import trio

from actors.health import HealthState
from actors.state import FleetState, HostSnapshot, Phase


async def test_slow_subscriber_is_dropped_and_counted_without_blocking() -> None:
    fleet = FleetState()
    with fleet.subscribe(buffer=2) as slow, fleet.subscribe(buffer=100) as fast:
        for i in range(5):  # never awaits: publish is synchronous and non-blocking
            fleet.publish(HostSnapshot(1, "h", phase=Phase.IDLE, backoff_attempt=i))
        received_fast = []
        while True:
            try:
                received_fast.append(fast.receive_nowait())
            except trio.WouldBlock:
                break
        received_slow = [await slow.receive(), await slow.receive()]
        try:
            await slow.receive()
            raise AssertionError("the slow subscription should have ended")
        except trio.EndOfChannel:
            pass
    assert len(received_fast) == 5
    assert [c.snapshot.backoff_attempt for c in received_slow] == [0, 1]
    stats = fleet.statistics()
    assert (stats.subscribers, stats.published, stats.dropped_subscribers) == (0, 5, 1)


async def test_unchanged_snapshots_are_not_republished() -> None:
    fleet = FleetState()
    snapshot = HostSnapshot(7, "h", health=HealthState.HEALTHY)
    with fleet.subscribe() as changes:
        fleet.publish(snapshot)
        fleet.publish(dataclasses.replace(snapshot))
        fleet.remove(7)
        first = changes.receive_nowait()
        second = changes.receive_nowait()
    assert not first.removed and second.removed
    assert fleet.statistics().published == 2
