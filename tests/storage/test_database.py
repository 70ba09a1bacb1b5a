from __future__ import annotations

import select
from typing import Any

import psycopg
import pytest
import trio

from storage import Database, DatabaseUnavailable, redact


async def test_run_executes_in_a_worker_thread(db: Database) -> None:
    row = await db.run(lambda conn: conn.execute("SELECT 41 + 1").fetchone())
    assert row == (42,)


async def test_statement_timeout_is_set_on_the_server(db: Database) -> None:
    row = await db.run(lambda conn: conn.execute("SHOW statement_timeout").fetchone())
    assert row == ("10s",)


async def test_cancelled_query_returns_promptly_and_pool_stays_usable(db: Database) -> None:
    start = trio.current_time()
    with trio.move_on_after(0.2):
        await db.run(lambda conn: conn.execute("SELECT pg_sleep(30)"))
    assert trio.current_time() - start < 2.0
    # The server-side cancel frees the connection: every pooled connection still works.
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(db.size * 2):
                nursery.start_soon(db.ping)
    assert await db.ping()


async def test_unreachable_server_is_a_clear_error(tmp_dir) -> None:  # type: ignore[no-untyped-def]
    db = Database(f"host={tmp_dir} user=postgres dbname=none connect_timeout=1", size=1)
    with pytest.raises(DatabaseUnavailable, match="cannot connect to PostgreSQL"):
        await db.open(timeout=1.0)


def test_redact_hides_passwords() -> None:
    assert "s3cret" not in redact("postgresql://u:s3cret@db.example/pm")
    assert "***" in redact("host=db user=u password=s3cret")


async def test_handing_out_a_pooled_connection_sends_nothing_to_the_server(
    db_conninfo: str,
) -> None:
    # Issue 17: the pool's check sent an empty query before every call (7.7 % of the manager's
    # samples at 10,000 hosts). The last statement the server saw on the connection is the
    # previous call's, not a check's.
    db = Database(db_conninfo, size=1, statement_timeout_s=10)
    await db.open()
    try:
        pid = await db.run(lambda conn: conn.execute("SELECT pg_backend_pid()").fetchone()[0])

        def last_statement_seen(conn: Any) -> str:
            with psycopg.connect(db_conninfo, autocommit=True) as other:
                row = other.execute(
                    "SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,)
                ).fetchone()
            assert conn.info.backend_pid == pid  # the same (only) pooled connection
            return str(row[0]) if row else ""

        assert await db.run(last_statement_seen) == "SELECT pg_backend_pid()"
    finally:
        await db.close()


async def test_a_connection_the_server_terminated_is_replaced_when_handed_out(
    db_conninfo: str,
) -> None:
    db = Database(db_conninfo, size=1, statement_timeout_s=10, acquire_timeout=10.0)
    await db.open()
    try:
        pid = await db.run(lambda conn: conn.execute("SELECT pg_backend_pid()").fetchone()[0])
        with psycopg.connect(db_conninfo, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        # No failed call: the idle connection's farewell is noticed before it is used.
        with trio.fail_after(15):
            new_pid = await db.run(
                lambda conn: conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            )
        assert new_pid != pid
        assert await db.ping()
    finally:
        await db.close()


async def test_a_connection_with_a_pending_notification_is_kept_when_handed_out(
    db_conninfo: str,
) -> None:
    # Readable is not always goodbye: a notification (or a notice) waiting on an idle
    # connection costs one round trip to check, not the connection.
    db = Database(db_conninfo, size=1, statement_timeout_s=10)
    await db.open()
    try:

        def listen(conn: Any) -> tuple[int, psycopg.Connection[Any]]:
            conn.execute("LISTEN pm_pool_test")
            return conn.info.backend_pid, conn

        pid, pooled = await db.run(listen)
        with psycopg.connect(db_conninfo, autocommit=True) as other:
            other.execute("NOTIFY pm_pool_test")
        # Until the notification has reached the idle connection's socket.
        readable = await trio.to_thread.run_sync(
            lambda: select.select([pooled.fileno()], [], [], 10)[0]
        )
        assert readable
        with trio.fail_after(15):
            again = await db.run(lambda conn: conn.info.backend_pid)
        assert again == pid
    finally:
        await db.close()


async def test_pooled_connections_use_tcp_keepalives(db_conninfo: str) -> None:
    db = Database(db_conninfo, size=1, statement_timeout_s=10)
    await db.open()
    try:
        params = await db.run(lambda conn: conn.info.get_parameters())
        assert params["keepalives"] == "1"
        assert params["keepalives_idle"] == "30"
        assert params["keepalives_interval"] == "10"
        assert params["keepalives_count"] == "3"
    finally:
        await db.close()
