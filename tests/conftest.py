"""Shared fixtures: one real PostgreSQL for the whole run (started through the product's own
embedded-cluster code), a migrated template database, and a fresh copy for every test.
"""

from __future__ import annotations

import itertools
import os
import shutil
import ssl
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from ca import CertificateAuthority, agent_client_context
from simulator import Fleet, FleetSpec
from storage import Database, EmbeddedPostgres, migrate

# Under pytest-xdist each worker takes its own address blocks (browser and fleet addresses are
# derived from PM_TEST_BLOCK_BASE at import time, so this runs before any test module loads).
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _WORKER.startswith("gw"):
    os.environ["PM_TEST_BLOCK_BASE"] = str(
        int(os.environ.get("PM_TEST_BLOCK_BASE", "1")) + 1000 * int(_WORKER[2:])
    )

TEMPLATE = "pm_template"
# The audit chain's key in tests (the db fixture's Database carries it; storage.audit).
AUDIT_TEST_KEY = bytes(range(32))
FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def make_tmp_dir(prefix: str) -> Path:
    """A temporary directory other users may traverse (the cluster user runs PostgreSQL when
    the suite runs as root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


class ClusterThread:
    """Runs the embedded cluster's trio supervisor in a thread for the whole test session."""

    def __init__(self, root: Path) -> None:
        self.cluster = EmbeddedPostgres(root, settings=FAST)
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="pg-cluster", daemon=True)

    def _main(self) -> None:
        async def run() -> None:
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            async with trio.open_nursery() as nursery:
                await nursery.start(self.cluster.run)
                self.ready.set()
                await self._stop.wait()
                nursery.cancel_scope.cancel()

        try:
            trio.run(run)
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    def start(self) -> None:
        self._thread.start()
        self.ready.wait(120)
        if self.error is not None:
            raise RuntimeError("the test PostgreSQL cluster did not start") from self.error

    def stop(self) -> None:
        if self._token is not None and self._stop is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(30)


class StoppableCluster:
    """An embedded PostgreSQL of this test's own, stoppable and restartable."""

    def __init__(self, nursery: trio.Nursery, prefix: str = "pm-outage-") -> None:
        self.nursery = nursery
        self.cluster = EmbeddedPostgres(make_tmp_dir(prefix) / "pg", settings=FAST)
        self.scope = trio.CancelScope()
        self.stopped = trio.Event()

    async def start(self) -> str:
        self.scope, self.stopped = trio.CancelScope(), trio.Event()

        async def run(*, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with self.scope:
                    await self.cluster.run(task_status=task_status)
            finally:
                self.stopped.set()

        conninfo: str = await self.nursery.start(run)
        return conninfo

    async def stop(self) -> None:
        self.scope.cancel()
        await self.stopped.wait()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[EmbeddedPostgres]:
    """The session's PostgreSQL. A cluster that cannot start fails the run (never a skip)."""
    root = make_tmp_dir("pm-test-pg-")
    thread = ClusterThread(root / "pg")
    thread.start()
    try:
        with psycopg.connect(thread.cluster.admin_conninfo, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
            conn.execute(f"CREATE DATABASE {TEMPLATE}")
        template = thread.cluster.admin_conninfo.replace("dbname=postgres", f"dbname={TEMPLATE}")
        with psycopg.connect(template, autocommit=True) as conn:
            migrate(conn)
        yield thread.cluster
    finally:
        thread.stop()
        shutil.rmtree(root, ignore_errors=True)  # 70-230 MB per run: never left behind


@pytest.fixture
def db_conninfo(pg_cluster: EmbeddedPostgres) -> Iterator[str]:
    """A fresh, migrated database (a copy of the template) for one test."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_cluster.admin_conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    yield pg_cluster.admin_conninfo.replace("dbname=postgres", f"dbname={name}")
    with psycopg.connect(pg_cluster.admin_conninfo, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def db(db_conninfo: str) -> AsyncIterator[Database]:
    database = Database(db_conninfo, size=4, statement_timeout_s=10, audit_key=AUDIT_TEST_KEY)
    await database.open()
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def tmp_dir() -> Iterator[Path]:
    path = make_tmp_dir("pm-test-")
    yield path


# -- PKI and simulated agents ----------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: CertificateAuthority
    directory: Path
    state_dir: Path  # simulator certificate cache, shared by every test of the session

    def client_context(self) -> ssl.SSLContext:
        return agent_client_context(
            self.ca.root_cert_path, self.ca.client_cert_path, self.ca.client_key_path
        )


@pytest.fixture(scope="session")
def pki() -> Pki:
    root = make_tmp_dir("pm-test-pki-")
    ca, _ = CertificateAuthority.init(root / "ca")
    return Pki(ca, root / "ca", root / "sim")


# PM_TEST_BLOCK_BASE lets two suites run side by side on one machine without sharing addresses.
_next_block = itertools.count(int(os.environ.get("PM_TEST_BLOCK_BASE", "1")))


def fleet_addresses(count: int) -> str:
    """A fresh base address per fleet so that tests never share agent addresses."""
    block = next(_next_block)
    return f"127.{100 + block // 250}.{block % 250}.1"


@pytest.fixture
def start_fleet(nursery: trio.Nursery, pki: Pki) -> Callable[..., Awaitable[Fleet]]:
    async def start(count: int = 3, *, time_scale: float = 0.002, **spec: Any) -> Fleet:
        spec.setdefault("base_address", fleet_addresses(count))
        fleet = Fleet(
            pki.directory, pki.state_dir, FleetSpec(count=count, time_scale=time_scale, **spec)
        )
        await nursery.start(fleet.run)
        return fleet

    return start
