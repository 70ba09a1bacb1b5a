"""HostScope turned into SQL: the one filter every scoped query uses."""

from __future__ import annotations

from typing import Any

import psycopg

from storage import Database, HostScope, scope_condition


def _visible(conn: psycopg.Connection[Any], scope: HostScope) -> list[str]:
    query = psycopg.sql.SQL("SELECT h.name FROM hosts h WHERE {} ORDER BY h.name").format(
        scope_condition(scope)
    )
    return [row[0] for row in conn.execute(query).fetchall()]


async def test_scope_admits_group_members_ungrouped_hosts_or_everything(db: Database) -> None:
    def seed(conn: psycopg.Connection[Any]) -> tuple[int, int]:
        web, dbs = (
            conn.execute("INSERT INTO groups (name) VALUES (%s) RETURNING id", (n,)).fetchone()[0]  # type: ignore[index]
            for n in ("web", "db")
        )
        ids = {}
        for name in ("a-web", "b-db", "c-none"):
            ids[name] = conn.execute(
                "INSERT INTO hosts (name) VALUES (%s) RETURNING id", (name,)
            ).fetchone()[0]  # type: ignore[index]
        conn.execute("INSERT INTO host_groups VALUES (%s, %s)", (ids["a-web"], web))
        conn.execute("INSERT INTO host_groups VALUES (%s, %s)", (ids["b-db"], dbs))
        return web, dbs

    web, dbs = await db.run(seed)

    def check(conn: psycopg.Connection[Any]) -> None:
        assert _visible(conn, HostScope.everything()) == ["a-web", "b-db", "c-none"]
        assert _visible(conn, HostScope(group_ids=frozenset({web}))) == ["a-web"]
        assert _visible(conn, HostScope(group_ids=frozenset({web}), ungrouped=True)) == [
            "a-web",
            "c-none",
        ]
        assert _visible(conn, HostScope(group_ids=frozenset({web, dbs}))) == ["a-web", "b-db"]
        assert _visible(conn, HostScope()) == []

    await db.run(check)
