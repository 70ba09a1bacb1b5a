"""The scheduler's heap trimmer: freed heap handed back after big ingest work (glibc)."""

from __future__ import annotations

import platform

import pytest

from actors.heap import HeapTrimmer, malloc_trim


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_the_heap_is_trimmed_once_enough_polls_finished_since_the_last_trim() -> None:
    polls = 0
    trims: list[int] = []

    def trim() -> bool:
        trims.append(polls)
        return True

    trimmer = HeapTrimmer(lambda: polls, after_polls=50, trim=trim)
    polls = 49
    assert not await trimmer.check()
    polls = 50
    assert await trimmer.check()
    polls = 99
    assert not await trimmer.check()  # 49 since the last trim
    polls = 100
    assert await trimmer.check()
    assert trims == [50, 100]
    assert trimmer.trims == 2


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
