"""The stored natural sort key of host names (issue 16, migration 0021): ``hosts.name_key``
follows the display name (or the name), and digit runs of any length sort as numbers."""

from __future__ import annotations

from typing import Any

import psycopg

from storage import Database, HostFilter, insert_host, search_hosts


def shown(rows: list[Any]) -> list[str]:
    return [h.display_name or h.name for h in rows]


async def test_digit_runs_longer_than_twenty_digits_still_sort_as_numbers(db: Database) -> None:
    # 25 ones > 21 nines > 2 as numbers (lpad(…, 20) cut both long runs to 20 digits before).
    long_small, longer = "h" + "9" * 21, "h" + "1" * 25
    for name in (longer, "h2", long_small, "h" + "1" * 25 + "0"):
        await db.run(lambda c, n=name: insert_host(c, name=n, address=None))
    rows, _ = await db.run(search_hosts, HostFilter(sort="name"))
    assert shown(rows) == ["h2", long_small, longer, "h" + "1" * 25 + "0"]


async def test_numbers_differing_only_after_the_twentieth_digit_sort_apart(db: Database) -> None:
    base = "7" * 22
    for name in (f"n{base}9", f"n{base}1", f"n{base}5"):
        await db.run(lambda c, n=name: insert_host(c, name=n, address=None))
    rows, _ = await db.run(search_hosts, HostFilter(sort="name"))
    assert shown(rows) == [f"n{base}1", f"n{base}5", f"n{base}9"]


async def test_the_stored_name_key_follows_the_display_name(db: Database) -> None:
    host = (await db.run(lambda c: insert_host(c, name="b.example", address=None))).id

    def key(conn: psycopg.Connection[Any]) -> str:
        row = conn.execute("SELECT name_key FROM hosts WHERE id = %s", (host,)).fetchone()
        assert row is not None
        return str(row[0])

    before = await db.run(key)
    await db.run(
        lambda c: c.execute("UPDATE hosts SET display_name = 'Web10' WHERE id = %s", (host,))
    )
    after = await db.run(key)
    assert before.startswith("b.example") and after.startswith("web") and after != before
