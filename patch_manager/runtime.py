"""Bringing up storage: the embedded cluster (or an external server), the pool, migrations."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ca import CertificateRecord, audit_key
from settings import Config, ConfigError, Problem
from storage import (
    AuditArg,
    Database,
    EmbeddedPostgres,
    migrate,
    record_certificate,
    redact,
    run_audited,
)

log = logging.getLogger(__name__)

# Test runs make the embedded cluster cheaper; never set in production.
_FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


@dataclass
class Storage:
    db: Database  # the actors' pool (and everything that is not the web's)
    cluster: EmbeddedPostgres | None  # None: external server or a cluster supervised elsewhere
    description: str
    # The web's own pool and thread limiter (``database.web_pool_size``), so that a page never
    # waits behind the actors' ingest writes; None: the web shares ``db`` (CLI, benchmarks).
    web_db: Database | None = None

    @property
    def web(self) -> Database:
        """The pool the web service layer uses."""
        return self.web_db if self.web_db is not None else self.db

    def pools(self) -> list[Database]:
        return [self.db] if self.web_db is None else [self.db, self.web_db]


def database_url(config: Config) -> str:
    """The configured external URL, '' for the embedded cluster. Raises ConfigError."""
    db = config.database
    if db.url_env:
        value = os.environ.get(db.url_env, "")
        if not value:
            raise ConfigError(
                [Problem(str(config.files[0]), "database.url_env",
                         f"environment variable {db.url_env} is not set")]
            )  # fmt: skip
        return value
    return db.url


def embedded_cluster(config: Config, data_dir: Path) -> EmbeddedPostgres:
    bin_dir = Path(config.database.system_bin_dir) if config.database.binaries == "system" else None
    fast = os.environ.get("PATCH_MANAGER_PG_FAST") == "1"
    return EmbeddedPostgres(data_dir / "postgres", bin_dir=bin_dir,
                            settings=_FAST_SETTINGS if fast else None)  # fmt: skip


async def _refresh_after_restarts(cluster: EmbeddedPostgres, pools: Sequence[Database]) -> None:
    while True:
        await cluster.wait_restarted()
        for db in pools:
            await db.refresh()
        log.info("database connections renewed after the PostgreSQL restart")


@asynccontextmanager
async def open_storage(
    nursery: trio.Nursery,
    config: Config,
    data_dir: Path,
    *,
    apply_migrations: bool = True,
    web_pool: bool = False,
) -> AsyncIterator[Storage]:
    """Start (or attach to) the database, open the pool, apply migrations.

    With ``web_pool`` (``serve``), also a second pool of ``database.web_pool_size`` connections
    for the web. The embedded cluster's supervisor runs in ``nursery``; the pools are closed on
    exit.
    """
    url = database_url(config)
    cluster: EmbeddedPostgres | None = None
    if url:
        conninfo, description = url, f"PostgreSQL at {redact(url)}"
    else:
        candidate = embedded_cluster(config, data_dir)
        if await trio.to_thread.run_sync(candidate.supervised_elsewhere):
            conninfo = candidate.conninfo
            description = f"embedded PostgreSQL in {candidate.root} (run by the server)"
        else:
            cluster = candidate
            conninfo = await nursery.start(cluster.run)
            description = f"embedded PostgreSQL 18 in {cluster.root} (unix socket only)"
    key = await trio.to_thread.run_sync(audit_key, data_dir)
    db = Database(conninfo, size=config.database.pool_size,
                  statement_timeout_s=config.database.statement_timeout_s,
                  audit_key=key)  # fmt: skip
    web_db = None
    if web_pool:
        web_db = Database(conninfo, size=config.database.web_pool_size,
                          statement_timeout_s=config.database.statement_timeout_s,
                          application_name="patch-manager-web", audit_key=key)  # fmt: skip
    storage = Storage(db, cluster, description, web_db)
    opened: list[Database] = []
    try:
        for pool in storage.pools():
            await pool.open()
            opened.append(pool)
        if apply_migrations:
            applied = await db.run(migrate)
            if applied:
                log.info("database schema migrated to version %d", applied[-1])
        async with trio.open_nursery() as watchers:
            if cluster is not None:
                watchers.start_soon(_refresh_after_restarts, cluster, storage.pools())
            try:
                yield storage
            finally:
                watchers.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            for pool in reversed(opened):
                await pool.close()


async def record_certificates(
    db: Database, records: Sequence[CertificateRecord], audit: AuditArg = None
) -> None:
    """Store what the CA issued (the CA package itself never touches the database), with
    ``audit``'s entry in the same transaction."""

    def write(conn: Any) -> None:
        with conn.transaction():
            for r in records:
                record_certificate(
                    conn, serial=r.serial, kind=r.kind.value, subject=r.subject, sans=r.sans,
                    not_before=r.not_before, not_after=r.not_after, cert_pem=r.cert_pem,
                )  # fmt: skip

    if records:
        await run_audited(db, audit, write)
