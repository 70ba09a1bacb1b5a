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


def test_the_summary_shows_the_poller_and_the_job_half() -> None:
    import datetime as dt

    snapshot = HostSnapshot(7, "h", phase=Phase.IDLE, health=HealthState.HEALTHY)
    assert snapshot.summary == "polling: healthy"
    running = dataclasses.replace(snapshot, job="job 12", job_state="following")
    assert running.summary == "polling: healthy · job 12 following"
    waiting = dataclasses.replace(
        running,
        health=HealthState.UNREACHABLE,
        backoff_until=dt.datetime(2026, 1, 1, 12, 30, tzinfo=dt.UTC),
    )
    assert waiting.summary == "polling: unreachable, backing off until 12:30:00 · job 12 following"
    assert dataclasses.replace(snapshot, phase=Phase.WAITING_FOR_DATABASE).summary == (
        "waiting for the database"
    )
    assert dataclasses.replace(snapshot, phase=Phase.FAILED).summary == (
        "failed (crashed too often)"
    )
