from __future__ import annotations

import threading

import psycopg
import pytest

from storage import SchemaTooNew, code_version, current_version, migrate
from storage.migrations import available


def test_migrations_are_numbered_without_gaps() -> None:
    assert [m.version for m in available()] == list(range(1, code_version() + 1))


def test_fresh_copy_is_at_code_version_and_migrate_is_idempotent(db_conninfo: str) -> None:
    with psycopg.connect(db_conninfo, autocommit=True) as conn:
        assert current_version(conn) == code_version()
        assert migrate(conn) == []
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables").fetchall()}
    assert {"hosts", "groups", "host_groups", "settings", "certificates"} <= tables


def test_concurrent_migrations_apply_each_version_once(pg_cluster, db_conninfo: str) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(pg_cluster.admin_conninfo, autocommit=True) as admin:
        admin.execute("CREATE DATABASE fresh_concurrent")
    conninfo = db_conninfo.rsplit("dbname=", 1)[0] + "dbname=fresh_concurrent"
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                results.append(migrate(conn))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        applied = sorted(v for r in results for v in r)
        assert applied == list(range(1, code_version() + 1))
    finally:
        with psycopg.connect(pg_cluster.admin_conninfo, autocommit=True) as admin:
            admin.execute("DROP DATABASE fresh_concurrent WITH (FORCE)")


def test_newer_schema_is_refused_with_a_clear_message(db_conninfo: str) -> None:
    with psycopg.connect(db_conninfo, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (%s, 'from_the_future')",
            (code_version() + 1,),
        )
        with pytest.raises(SchemaTooNew) as info:
            migrate(conn)
    assert f"version {code_version() + 1}" in str(info.value)
    assert "upgrade patch-manager" in str(info.value)
