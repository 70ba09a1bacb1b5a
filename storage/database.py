"""The connection pool, used from trio through worker threads.

psycopg's async API is asyncio-only, so every database call runs a plain function
``fn(conn, *args)`` in a worker thread with a pooled sync connection. Threads are bounded by a
``CapacityLimiter`` the size of the pool. A cancelled call returns at once: the statement is
cancelled on the server from a helper thread and the connection returns to the pool when the
worker finishes.
"""

from __future__ import annotations

import logging
import select
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
import trio
from psycopg_pool import ConnectionPool, PoolTimeout

from .errors import DatabaseUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


def redact(conninfo: str) -> str:
    """A connection string safe to log: the password (if any) replaced by ``***``."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "<unparseable connection string>"
    if "password" in params:
        params["password"] = "***"
    return psycopg.conninfo.make_conninfo("", **params)


def idle_connection_usable(conn: psycopg.Connection[Any]) -> None:
    """The pool's check when it hands out a connection, usually without a round trip.

    An idle autocommit connection is normally sent nothing by the server, so its socket is
    polled: not readable (the usual case) hands it out at once. Readable means the server spoke:
    it is going away (``FATAL: terminating connection``, or the end of the stream when its
    process died), or it sent a notification or a notice. Then one ``check_connection`` round
    trip decides: the connection is kept if it answers, else it is closed and the pool hands out
    another. (``ConnectionPool.check_connection`` on every checkout cost one extra round trip
    each time.) Do not ``LISTEN`` on pooled connections: a pending notification costs that
    round trip and is not delivered to anyone (LISTEN uses connections of its own). A server
    that vanished without a word (a cut network) is not seen here; on TCP the keepalives (see
    ``Database``) make the kernel notice a dead peer within about a minute and fail the
    socket, and the statement that uses such a connection raises ``DatabaseUnavailable``, the
    pool discarding the connection when it is returned.
    """
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the connection is closed")
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    if not poller.poll(0):
        return
    try:
        ConnectionPool.check_connection(conn)
    except psycopg.Error:
        # Closed here, so the pool cannot take it back as healthy and hand it out again.
        conn.close()
        raise


# TCP keepalives for every pooled connection, so that a cut network is noticed (libpq ignores
# them on a unix socket): probes after 30 s idle, every 10 s, the peer dead after 3 missed.
KEEPALIVES: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
if psycopg.pq.version() >= 120000:  # libpq 12+: also bound unacknowledged writes (ms)
    KEEPALIVES["tcp_user_timeout"] = 60_000


def _cancel_quietly(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.cancel_safe(timeout=5)
    except psycopg.Error as exc:  # the server is gone: nothing left to cancel
        log.debug("statement cancel not delivered: %s", exc)


class Database:
    """A psycopg connection pool reachable from trio.

    ``run(fn, *args)`` waits for a free connection (at most ``acquire_timeout`` seconds, then
    raises ``DatabaseUnavailable``), runs ``fn(conn, *args)`` in a worker thread and returns its
    result. Connections are in autocommit mode: use ``with conn.transaction():`` for more than one
    statement. Every connection carries a server-side ``statement_timeout`` and, on TCP, the
    ``KEEPALIVES``. Never ``LISTEN`` on a pooled connection (see ``idle_connection_usable``).
    ``audit_key`` is the audit chain's key, used by ``storage.audit`` (never stored in the
    database).
    """

    def __init__(
        self,
        conninfo: str,
        *,
        size: int = 8,
        statement_timeout_s: int = 30,
        acquire_timeout: float = 10.0,
        application_name: str = "patch-manager",
        audit_key: bytes | None = None,
    ) -> None:
        self.conninfo = conninfo
        # The audit chain's HMAC key (``ca.audit_key``): ``storage.audit.run_audited`` and
        # ``record`` refuse to write without it.
        self.audit_key = audit_key
        self.size = size
        self.acquire_timeout = acquire_timeout
        self.limiter = trio.CapacityLimiter(size)
        self.pool = ConnectionPool(
            conninfo,
            min_size=size,
            max_size=size,
            open=False,
            check=idle_connection_usable,
            reconnect_timeout=86_400,  # keep reconnecting in the background during an outage
            kwargs={
                "autocommit": True,
                "application_name": application_name,
                "options": f"-c statement_timeout={statement_timeout_s * 1000}",
                **KEEPALIVES,
            },
            name=application_name,
        )

    async def open(self, timeout: float = 30.0) -> None:
        """Open the pool and wait until ``size`` connections exist (raises DatabaseUnavailable)."""

        def _open() -> None:
            try:
                self.pool.open(wait=True, timeout=timeout)
            except PoolTimeout as exc:
                self.pool.close()
                raise DatabaseUnavailable(
                    f"cannot connect to PostgreSQL at {redact(self.conninfo)}: {exc}"
                ) from None

        await trio.to_thread.run_sync(_open)

    async def close(self) -> None:
        """Close every connection; waits for calls still in flight (at most 5 s)."""
        await trio.to_thread.run_sync(lambda: self.pool.close(timeout=5))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in a worker thread with a pooled connection."""
        holder: dict[str, psycopg.Connection[Any]] = {}

        def job() -> T:
            try:
                with self.pool.connection(timeout=self.acquire_timeout) as conn:
                    holder["conn"] = conn
                    return fn(conn, *args)
            except PoolTimeout as exc:
                raise DatabaseUnavailable(f"no database connection available: {exc}") from None
            except psycopg.OperationalError as exc:
                raise DatabaseUnavailable(f"database error: {exc}") from exc

        try:
            return await trio.to_thread.run_sync(job, abandon_on_cancel=True, limiter=self.limiter)
        except trio.Cancelled:
            conn = holder.get("conn")
            if conn is not None:
                # Abort the statement on the server without blocking the event loop.
                threading.Thread(target=_cancel_quietly, args=(conn,), daemon=True).start()
            raise

    async def refresh(self) -> None:
        """Replace every broken idle connection now (after the server restarted)."""
        await trio.to_thread.run_sync(self.pool.check, limiter=self.limiter)

    async def probe(self, timeout: float = 2.0, busy_after: float = 0.5) -> str:
        """``"ok"`` when ``SELECT 1`` answers within ``timeout`` seconds; ``"busy"`` when every
        connection is taken by running calls (all ``size`` worker threads busy: decided without
        waiting, or when that is so after ``busy_after`` seconds without a free connection);
        ``"down"`` on a connection or statement error, a closed pool, or no answer within
        ``timeout`` otherwise (e.g. connections still being re-established)."""
        if self.pool.closed:
            return "down"
        if self._all_in_use():
            return "busy"  # do not wait for one
        checked_out = threading.Event()
        result = "down"

        def select_one(conn: psycopg.Connection[Any]) -> None:
            checked_out.set()
            conn.execute("SELECT 1").fetchone()

        async def ping(cancel_scope: trio.CancelScope) -> None:
            nonlocal result
            try:
                await self.run(select_one)
                result = "ok"
            except DatabaseUnavailable:
                result = "down"
            cancel_scope.cancel()

        async def busy(cancel_scope: trio.CancelScope) -> None:
            nonlocal result
            await trio.sleep(busy_after)
            if not checked_out.is_set() and self._all_in_use():
                result = "busy"  # every connection was taken meanwhile
                cancel_scope.cancel()

        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ping, nursery.cancel_scope)
                nursery.start_soon(busy, nursery.cancel_scope)
        return result

    def _all_in_use(self) -> bool:
        # Every worker thread runs a call, each holding (or waiting for) a connection. (The
        # pool's own counts cannot tell "in use" from "being re-established after a restart".)
        return self.limiter.available_tokens == 0

    async def ping(self, timeout: float = 2.0) -> bool:
        """True if ``SELECT 1`` answers within ``timeout`` seconds."""
        with trio.move_on_after(timeout):
            try:
                await self.run(lambda conn: conn.execute("SELECT 1").fetchone())
            except DatabaseUnavailable:
                return False
            return True
        return False
