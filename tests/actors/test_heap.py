"""The scheduler's heap trimmer: freed heap handed back after big ingest work (glibc)."""

from __future__ import annotations

import platform
import random

import pytest
import trio
import trio.testing

from actors.heap import HeapTrimmer, malloc_trim
from actors.host import HostActor
from actors.ports import HostTarget
from actors.state import FleetState
from settings import PollingPolicy

from ..fakes import FakeFleetAgents, MemorySink, fake_wall


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_the_heap_is_trimmed_only_after_an_ingest_burst_ended_and_at_most_every_10_min(
    autojump_clock: trio.testing.MockClock,
) -> None:
    trimmer = HeapTrimmer(trim=lambda: True)
    for _ in range(199):
        trimmer.ingested()
    await trio.sleep(30)
    assert not await trimmer.check()  # 199 ingests: not worth it
    trimmer.ingested()
    assert not await trimmer.check()  # 200, but the burst goes on (an ingest just now)
    await trio.sleep(9.9)
    assert not await trimmer.check()
    await trio.sleep(0.1)
    assert await trimmer.check()  # 10 s without an ingest after 200
    assert trimmer.last_duration_s is not None
    for _ in range(500):  # another burst at once: too soon after the last trim
        trimmer.ingested()
    await trio.sleep(60)
    assert not await trimmer.check()
    await trio.sleep(600 - 60 - 0.5)
    assert not await trimmer.check()
    await trio.sleep(0.5)
    assert await trimmer.check()
    assert trimmer.trims == 2


async def test_health_polls_alone_never_count_towards_a_trim(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    trimmer = HeapTrimmer(trim=lambda: True)
    policy = PollingPolicy(health_interval_s=10, patch_interval_s=300, request_timeout_s=30.0,
                           connect_timeout_s=10.0, backoff_s=(60,), jitter_ratio=0.0,
                           max_connections=2, paused=False)  # fmt: skip
    actor = HostActor(HostTarget(3, "h3", "192.0.2.3", 12443), policy,
                      agent_factory=FakeFleetAgents(), sink=MemorySink(), fleet=FleetState(),
                      rng=random.Random(1), wall=fake_wall,
                      on_ingest=trimmer.ingested)  # fmt: skip
    await nursery.start(actor.run)
    await trio.sleep(120)
    assert actor.polls >= 12  # health polls
    assert trimmer.ingests <= 3  # the patch polls only
    nursery.cancel_scope.cancel()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_malloc_trim_gives_back_freed_heap_pinned_between_live_blocks() -> None:
    trim = malloc_trim()
    assert trim is not None
    trim()
    blocks = [bytes(2048) for _ in range(30_000)]  # ~60 MB of malloc'd (not pymalloc) blocks
    pinned = blocks[::64]  # a few stay alive: the pages between them are free, not at the top
    del blocks
    before = rss_kb()
    trim()
    after = rss_kb()
    assert before - after > 30_000  # more than 30 MB handed back
    assert len(pinned) == 469
