"""The job half of a host actor: pulls its host's runnable rows from the database and drives
each through the row state machine (``execution.Executor``), one at a time.

There is no in-memory queue: the database is the one truth. On start and before every claim
the runner takes over its host's rows left in flight (by itself before a restart, or by an
owner whose lease ran out) and resumes them from their recorded state; then it claims the next
row whose permit (window or apply-now) is still valid, re-checked in the claim itself. While a
row runs its lease is renewed; a runner that loses its lease stops that row without writing.
The coordinator wakes the runner when it writes permits (and the runner looks at once when it
starts); otherwise it looks every ``poll_interval`` seconds, a safety net. A paused host
claims nothing new (rows in flight are finished). Once shutdown began (``admitting()`` false)
no request leaves: a row whose wait ends then stays ``claimed`` for the next start.
Database outages are waited out; only code bugs reach the supervisor.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import trio

from storage import DatabaseUnavailable, JobHostRow

from .execution import Executor
from .ports import JobAgentPort, JobStore

log = logging.getLogger(__name__)

T = TypeVar("T")


class JobRunner:
    """Run with ``await nursery.start(runner.run)``; returns only when cancelled.

    ``report(row_id, state, label)`` is called on every visible change of the row being run
    (``label`` is e.g. ``"job 12"``, empty once the row is final). ``agent()`` gives the client
    a row uses (asked once per row); ``after_row()`` is awaited when a row is done with it."""

    def __init__(
        self,
        host: str,
        host_id: int,
        agent: Callable[[], JobAgentPort],
        store: JobStore,
        *,
        report: Callable[[int, str, str], None],
        wall: Callable[[], dt.datetime],
        paused: Callable[[], bool] = lambda: False,
        admitting: Callable[[], bool] = lambda: True,
        after_row: Callable[[], Awaitable[None]] | None = None,
        poll_interval: float = 120.0,
        lease_s: float = 60.0,
        reconcile_interval: float = 5.0,
        unreachable_backoff: Sequence[float] = (60.0, 300.0, 1800.0),
    ) -> None:
        self.host = host
        self.host_id = host_id
        self.agent = agent
        self.store = store
        self.paused = paused
        self.admitting = admitting
        self.after_row = after_row
        self.poll_interval = poll_interval
        self.lease_s = lease_s
        self.executor = Executor(
            host,
            host_id,
            store,
            report=report,
            wall=wall,
            reconcile_interval=reconcile_interval,
            unreachable_backoff=unreachable_backoff,
            may_send=admitting,
        )
        self.rows_run = 0
        self.current: int | None = None
        self._wake = trio.Event()

    def wake(self) -> None:
        """Look for work now (new permits). Never blocks."""
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            row = await self._next_row()
            if row is not None:
                await self._run_row(row)
                continue
            with trio.move_on_after(self.poll_interval):
                await self._wake.wait()
            self._wake = trio.Event()

    async def _next_row(self) -> JobHostRow | None:
        if not self.admitting():
            return None  # shutting down: rows left claimed are resumed by the next start
        left = await self._db(lambda: self.store.take_over(self.host_id))
        if left:
            log.info("resuming row %d (%s)", left[0].id, left[0].state, extra={"host": self.host})
            return left[0]
        if self.paused():
            return None
        return await self._db(lambda: self.store.claim_next(self.host_id))

    async def _run_row(self, row: JobHostRow) -> None:
        self.current = row.id
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keep_lease, row.id, nursery.cancel_scope)
                await self.executor.execute(self.agent(), row)
                nursery.cancel_scope.cancel()
        finally:
            self.current = None
            self.rows_run += 1
            if self.after_row is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await self.after_row()

    async def _keep_lease(self, row_id: int, scope: trio.CancelScope) -> None:
        while True:
            await trio.sleep(self.lease_s / 3)
            try:
                ours = await self.store.renew(row_id)
            except DatabaseUnavailable as exc:
                log.warning("cannot renew the lease of row %d: %s", row_id, exc,
                            extra={"host": self.host})  # fmt: skip
                continue
            if not ours:
                log.warning("row %d is no longer ours; stopping it", row_id,
                            extra={"host": self.host})  # fmt: skip
                scope.cancel()
                return

    async def _db(self, call: Callable[[], Awaitable[T]]) -> T:
        delay = 0.5
        while True:
            try:
                return await call()
            except DatabaseUnavailable as exc:
                log.warning("database unavailable (%s); retrying in %.0fs", exc, delay,
                            extra={"host": self.host})  # fmt: skip
                await trio.sleep(delay)
                delay = min(delay * 2, 10.0)
