from __future__ import annotations

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
