"""Supervision of one actor: restart on crash with backoff, give up after too many crashes.

Cancellation is never a crash. Infrastructure trouble (the database is unavailable) is not a
crash either: the actor is restarted after a wait without counting it, so an outage never marks
hosts failed. A crash is logged with its traceback; the give-up is logged once. After a healthy
period (``window_s`` without a crash) the backoff starts over. A failed actor is tried again
after ``failed_retry_s`` (a slow schedule: a host is never given up for good).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from settings import SupervisionSettings
from storage import DatabaseUnavailable

log = logging.getLogger(__name__)

INFRASTRUCTURE_WAIT_S = (1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass
class SupervisionState:
    crashes: int = 0
    failed: bool = False
    last_error: str = ""
    infrastructure_waits: int = 0


def _is_cancellation(exc: BaseException) -> bool:
    if isinstance(exc, trio.Cancelled | KeyboardInterrupt | SystemExit):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_is_cancellation(e) for e in exc.exceptions)
    return False


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def is_infrastructure(exc: BaseException) -> bool:
    """Storage trouble, not a bug: every leaf of the (group of) errors is an outage."""
    return all(isinstance(leaf, DatabaseUnavailable) for leaf in _leaves(exc))


def describe(exc: BaseException) -> str:
    """``Type: message`` of each leaf (a nursery wraps a half's crash in a group)."""
    return "; ".join(f"{type(leaf).__name__}: {leaf}" for leaf in _leaves(exc))


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

    Returns only when the actor returned normally. After too many crashes ``state.failed`` is
    set, ``on_failed`` called, and the actor is started again ``failed_retry_s`` later.
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
            if is_infrastructure(exc):
                if trio.current_time() - started >= settings.window_s:
                    state.infrastructure_waits = 0  # a new outage: start with short waits
                wait = INFRASTRUCTURE_WAIT_S[
                    min(state.infrastructure_waits, len(INFRASTRUCTURE_WAIT_S) - 1)
                ]
                state.infrastructure_waits += 1
                log.warning("%s: database unavailable, restarting in %.0fs: %s", name, wait,
                            describe(exc), extra={"host": name})  # fmt: skip
                await trio.sleep(wait)
                continue
            state.infrastructure_waits = 0
            now = trio.current_time()
            if now - started >= settings.window_s:
                delay = settings.restart_min_s  # it had been healthy for a while
            crash_times = [t for t in crash_times if now - t < settings.window_s] + [now]
            state.crashes += 1
            state.last_error = describe(exc)
            if len(crash_times) > settings.max_crashes:
                state.failed = True
                log.error("%s crashed %d times within %ds; giving up for %ds", name,
                          len(crash_times), settings.window_s, settings.failed_retry_s,
                          exc_info=exc, extra={"host": name})  # fmt: skip
                on_failed(state)
                await trio.sleep(settings.failed_retry_s)
                log.info("%s: trying a failed actor again", name, extra={"host": name})
                state.failed = False
                crash_times = []
                delay = settings.restart_min_s
                continue
            wait = min(delay, settings.restart_max_s) * rng.uniform(0.8, 1.2)
            log.error("%s crashed; restarting in %.1fs", name, wait, exc_info=exc,
                      extra={"host": name})  # fmt: skip
            on_crash(state, wait)
            await trio.sleep(wait)
            delay = min(delay * 2, settings.restart_max_s)
