"""Supervision of one actor: restart on crash with backoff, give up after too many crashes.

Cancellation is never a crash. A crash is logged with its traceback; the give-up is logged
once. After a healthy period (``window_s`` without a crash) the backoff starts over.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from settings import SupervisionSettings

log = logging.getLogger(__name__)


@dataclass
class SupervisionState:
    crashes: int = 0
    failed: bool = False
    last_error: str = ""


def _is_cancellation(exc: BaseException) -> bool:
    if isinstance(exc, trio.Cancelled | KeyboardInterrupt | SystemExit):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_is_cancellation(e) for e in exc.exceptions)
    return False


async def supervise(
    name: str,
    start: Callable[[], Awaitable[None]],
    settings: SupervisionSettings,
    *,
    rng: random.Random,
    state: SupervisionState,
    on_crash: Callable[[SupervisionState, float], None] = lambda s, d: None,
    on_failed: Callable[[SupervisionState], None] = lambda s: None,
) -> None:
    """Run ``start()`` until it returns (done) or the caller cancels; restart it on crashes.

    Returns when the actor returned normally or when supervision gave up (``state.failed``).
    """
    crash_times: list[float] = []
    delay = settings.restart_min_s
    while True:
        started = trio.current_time()
        try:
            await start()
            return
        except BaseException as exc:
            if _is_cancellation(exc):
                raise
            now = trio.current_time()
            if now - started >= settings.window_s:
                delay = settings.restart_min_s  # it had been healthy for a while
            crash_times = [t for t in crash_times if now - t < settings.window_s] + [now]
            state.crashes += 1
            state.last_error = f"{type(exc).__name__}: {exc}"
            if len(crash_times) > settings.max_crashes:
                state.failed = True
                log.error("%s crashed %d times within %ds; giving up", name, len(crash_times),
                          settings.window_s, exc_info=exc, extra={"host": name})  # fmt: skip
                on_failed(state)
                return
            wait = min(delay, settings.restart_max_s) * rng.uniform(0.8, 1.2)
            log.error("%s crashed; restarting in %.1fs", name, wait, exc_info=exc,
                      extra={"host": name})  # fmt: skip
            on_crash(state, wait)
            await trio.sleep(wait)
            delay = min(delay * 2, settings.restart_max_s)
