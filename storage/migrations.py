"""Versioned SQL migrations: ``storage/migrations/NNNN_name.sql``, applied in order.

Migrations run under a PostgreSQL advisory lock held on one connection, so two processes
starting at once apply each migration exactly once. Each file runs in its own transaction.
A database whose recorded version is newer than the newest file is refused (``SchemaTooNew``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

from .errors import MigrationError, SchemaTooNew

log = logging.getLogger(__name__)

# Arbitrary but fixed: "patchmgr" as an integer.
_LOCK_KEY = 0x7061746368_6D6772 & 0x7FFFFFFFFFFFFFFF
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """Every migration shipped with this code, in version order."""
    found: list[Migration] = []
    for entry in resources.files("storage").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration versions must be 1..N without gaps, found {versions}")
    return found


def code_version() -> int:
    return len(available())


def current_version(conn: psycopg.Connection[Any]) -> int:
    exists = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
    if not exists or exists[0] is None:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: psycopg.Connection[Any]) -> list[int]:
    """Apply the pending migrations on ``conn`` (autocommit); return the versions applied."""
    migrations = available()
    applied: list[int] = []
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        version = current_version(conn)
        if version > len(migrations):
            raise SchemaTooNew(version, len(migrations))
        for migration in migrations[version:]:
            try:
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
            except psycopg.Error as exc:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} failed: {exc}"
                ) from exc
            log.info("applied migration %04d_%s", migration.version, migration.name)
            applied.append(migration.version)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied
