"""Handing freed heap memory back to the system after big ingest work (glibc only).

Parsing a host's answer (about 1,200 packages with the realistic profile) allocates and frees
megabytes; glibc keeps the freed pages in the process unless asked. ``HeapTrimmer`` calls
``malloc_trim(0)`` in a worker thread (ctypes releases the GIL) once enough polls finished since
the last trim, at most every ``every_s`` seconds. On other C libraries it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import platform
from collections.abc import Callable

import trio

log = logging.getLogger(__name__)

TRIM_EVERY_S = 30.0  # seconds between two checks
TRIM_AFTER_POLLS = 50  # polls finished since the last trim that make the next one worth it


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
    """Trims the heap when ``polls()`` (a running count of finished polls) grew by at least
    ``after_polls`` since the last trim; checks every ``every_s`` seconds."""

    def __init__(
        self,
        polls: Callable[[], int],
        *,
        every_s: float = TRIM_EVERY_S,
        after_polls: int = TRIM_AFTER_POLLS,
        trim: Callable[[], bool] | None = None,
    ) -> None:
        self.polls = polls
        self.every_s = every_s
        self.after_polls = after_polls
        self.trim = trim if trim is not None else malloc_trim()
        self.trims = 0
        self._at = polls()

    async def check(self) -> bool:
        """Trim now if enough polls finished since the last trim; returns whether it did."""
        done = self.polls()
        if self.trim is None or done - self._at < self.after_polls:
            return False
        self._at = done
        await trio.to_thread.run_sync(self.trim)
        self.trims += 1
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
