"""The scheduler actor: owns the host actors and coordinates fleet-wide work.

For now it keeps a heartbeat that the health endpoint reads; host actors, windows, job dispatch
and discovery hang off it.
"""

from __future__ import annotations

import logging

import trio

log = logging.getLogger(__name__)


class Scheduler:
    """Run with ``await nursery.start(scheduler.run)``; cancelled to stop.

    ``heartbeat`` is the ``trio.current_time()`` of the last loop turn; ``heartbeat_age()``
    tells how stale it is (a stalled event loop or a wedged scheduler shows here).
    """

    def __init__(self, *, tick: float = 1.0) -> None:
        self.tick = tick
        self.heartbeat: float | None = None
        self.running = False

    def heartbeat_age(self) -> float | None:
        if self.heartbeat is None or not self.running:
            return None
        return trio.current_time() - self.heartbeat

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.running = True
        self.heartbeat = trio.current_time()
        task_status.started()
        try:
            deadline = trio.current_time()
            while True:
                deadline += self.tick
                await trio.sleep_until(deadline)
                self.heartbeat = trio.current_time()
        finally:
            self.running = False
