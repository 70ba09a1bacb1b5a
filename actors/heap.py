"""Handing freed heap memory back to the system after an ingest burst (glibc only).

Parsing a host's answer (about 1,200 packages with the realistic profile) allocates and frees
megabytes; glibc keeps the freed pages in the process unless asked. ``malloc_trim(0)`` walks the
whole heap holding the allocator's lock: it runs in a worker thread (ctypes releases the GIL),
but the event loop's own allocations wait for it (112-537 ms measured on a fragmented 400 MB
heap). So it runs rarely: only after a burst of patch ingests (``ingested()``, called by the
host actors for every package list parsed) has ended -- at least ``after_ingests`` since the
last trim and none for ``quiet_s`` -- and at most once every ``min_gap_s``. Health polls do not
count (at 10,000 hosts they alone would trigger it every check). Each trim's duration is kept
(``last_duration_s``) and logged at debug. On other C libraries it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import time
from collections.abc import Callable

import trio

log = logging.getLogger(__name__)

TRIM_CHECK_S = 5.0  # seconds between two checks
TRIM_AFTER_INGESTS = 200  # package lists parsed since the last trim that make one worth it
TRIM_QUIET_S = 10.0  # the burst has ended: no ingest for this long
TRIM_MIN_GAP_S = 600.0  # never two trims closer than this


def malloc_trim() -> Callable[[], bool] | None:
    """``malloc_trim(0)`` of glibc as a callable returning whether memory was released, or
    None when this process does not run on glibc."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        function = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return lambda: bool(function(0))


class HeapTrimmer:
    """Trims the heap once an ingest burst ended (see the module); checks every ``every_s``."""

    def __init__(
        self,
        *,
        every_s: float = TRIM_CHECK_S,
        after_ingests: int = TRIM_AFTER_INGESTS,
        quiet_s: float = TRIM_QUIET_S,
        min_gap_s: float = TRIM_MIN_GAP_S,
        trim: Callable[[], bool] | None = None,
    ) -> None:
        self.every_s = every_s
        self.after_ingests = after_ingests
        self.quiet_s = quiet_s
        self.min_gap_s = min_gap_s
        self.trim = trim if trim is not None else malloc_trim()
        self.trims = 0
        self.ingests = 0  # package lists parsed (patch polls that succeeded), ever
        self.last_duration_s: float | None = None  # how long the last trim took (real time)
        self._at = 0  # ``ingests`` at the last trim
        self._last_ingest = float("-inf")
        self._last_trim = float("-inf")

    def ingested(self) -> None:
        """A host parsed a package list (called by the host actors; never blocks)."""
        self.ingests += 1
        self._last_ingest = trio.current_time()

    def due(self) -> bool:
        now = trio.current_time()
        return (
            self.trim is not None
            and self.ingests - self._at >= self.after_ingests
            and now - self._last_ingest >= self.quiet_s
            and now - self._last_trim >= self.min_gap_s
        )

    async def check(self) -> bool:
        """Trim now if an ingest burst has ended (see the module); returns whether it did."""
        if not self.due() or self.trim is None:
            return False
        self._at = self.ingests
        self._last_trim = trio.current_time()
        started = time.perf_counter()
        released = await trio.to_thread.run_sync(self.trim)
        self.last_duration_s = time.perf_counter() - started
        self.trims += 1
        log.debug("heap trimmed in %.0f ms after %d ingests (memory released: %s)",
                  self.last_duration_s * 1000, self.after_ingests, released)  # fmt: skip
        return True

    async def run(self) -> None:
        if self.trim is None:
            return
        while True:
            await trio.sleep(self.every_s)
            try:
                await self.check()
            except Exception:  # never end the scheduler over a trim
                log.exception("heap trim failed")
