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
    """The pool's check when it hands out a connection, without a round trip to the server.

    An idle autocommit connection is never sent anything by the server unless the server is
    going away (``FATAL: terminating connection``, or the end of the stream when its process
    died): if its socket is readable, or libpq already knows it is broken, raise and the pool
    discards it and hands out another. (``ConnectionPool.check_connection`` sent an empty query
    instead: one extra round trip on every checkout.) A connection whose server vanished without
    a word (a cut network) is caught by the statement that uses it: the call raises
    ``DatabaseUnavailable`` and the pool discards the connection when it is returned.
    """
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the connection is closed")
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    if poller.poll(0):
        # libpq has not read the farewell yet, so the connection still looks good: close it,
        # or the pool would take it back as healthy and hand it out again.
        conn.close()
        raise psycopg.OperationalError("the server closed or spoke on an idle connection")


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
    statement. Every connection carries a server-side ``statement_timeout``. ``audit_key``
    is the audit chain's key, used by ``storage.audit`` (never stored in the database).
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

    async def probe(self, timeout: float = 2.0) -> str:
        """``"ok"`` when ``SELECT 1`` answers within ``timeout`` seconds; ``"busy"`` when every
        connection is checked out by running calls (decided from the pool's counts without
        waiting, or when none became free within ``timeout`` while all exist); ``"down"`` on a
        connection or statement error, or when connections are missing (being re-established)
        and none could be had, or a checked-out connection's ``SELECT 1`` did not answer."""
        if self.pool.closed:
            return "down"
        stats = self.pool.get_stats()
        all_exist = stats.get("pool_size", 0) >= self.size
        if all_exist and (self.limiter.available_tokens == 0 or stats.get("pool_available") == 0):
            return "busy"  # every connection exists and is in use: do not wait for one
        checked_out = threading.Event()

        def select_one(conn: psycopg.Connection[Any]) -> None:
            checked_out.set()
            conn.execute("SELECT 1").fetchone()

        with trio.move_on_after(timeout):
            try:
                await self.run(select_one)
            except DatabaseUnavailable:
                return "down"
            return "ok"
        if checked_out.is_set() or self.pool.get_stats().get("pool_size", 0) < self.size:
            return "down"
        return "busy"

    async def ping(self, timeout: float = 2.0) -> bool:
        """True if ``SELECT 1`` answers within ``timeout`` seconds."""
        with trio.move_on_after(timeout):
            try:
                await self.run(lambda conn: conn.execute("SELECT 1").fetchone())
            except DatabaseUnavailable:
                return False
            return True
        return False
