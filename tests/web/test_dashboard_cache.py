"""The dashboard's compliance figures are computed by one request at a time (issue 17): at
10,000 hosts a computation takes about half a second, and five browsers loading the dashboard
when the figures expire must neither compute them five times nor all wait for the one that
does while there are figures to show (the page states their "as of" time)."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import trio
import trio.testing

from patch_manager.adapter import SystemAdapter
from patch_manager.runtime import Storage
from reports import ComplianceRules
from storage import Database, DatabaseUnavailable
from web import authz
from web.authz import Principal, Role
from web.services.base import System
from web.services.reports import DashboardCache, DashboardCompliance

from ..conftest import Pki
from .conftest import WebRig

ADMIN = Principal("admin", 1, Role.ADMIN)


def system(rig: WebRig, pki: Pki) -> System:
    return System(SystemAdapter(Storage(rig.db, None, "test"), rig.system, pki.ca), rig.db)


async def test_concurrent_first_dashboard_loads_share_one_computation_of_the_figures(
    web_rig: WebRig, pki: Pki
) -> None:
    cache = DashboardCache()
    sys = system(web_rig, pki)
    results: list[DashboardCompliance] = []

    async def load() -> None:
        results.append(await cache.get(sys, ADMIN, ComplianceRules()))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(load)
    assert len(results) == 5
    assert all(r is results[0] for r in results)


async def test_expired_figures_are_shown_while_one_load_computes_new_ones(
    web_rig: WebRig, db: Database, pki: Pki
) -> None:
    clock = [0.0]
    cache = DashboardCache(ttl_s=30.0, now=lambda: clock[0])
    sys = system(web_rig, pki)
    with trio.fail_after(30):
        first = await cache.get(sys, ADMIN, ComplianceRules())
        clock[0] = 31.0  # expired, not yet 2 x ttl old
        locked, release = threading.Event(), threading.Event()

        def hold_trend_table(conn: Any) -> None:
            # The recomputation reads the daily snapshots: it waits while they are locked.
            with conn.transaction():
                conn.execute("LOCK TABLE compliance_snapshots IN ACCESS EXCLUSIVE MODE")
                locked.set()
                release.wait(20)

        recomputed: list[DashboardCompliance] = []

        async def recompute() -> None:
            recomputed.append(await cache.get(sys, ADMIN, ComplianceRules()))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(db.run, hold_trend_table)
            await trio.to_thread.run_sync(locked.wait)
            nursery.start_soon(recompute)
            while not cache.computing():  # until that load has started computing
                await trio.testing.wait_all_tasks_blocked()
            # That load is computing (it will wait for the lock): this one gets the previous
            # figures at once.
            meanwhile = await cache.get(sys, ADMIN, ComplianceRules())
            assert meanwhile is first
            assert not recomputed
            release.set()
    assert len(recomputed) == 1 and recomputed[0] is not first


def cancel_statements_waiting_on_the_trend_table(conninfo: str) -> int:
    """Cancel the statements waiting for the lock on the daily snapshots (once one waits)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while True:  # the computation's statement reaches the lock within a few round trips
            rows = conn.execute(
                "SELECT pg_cancel_backend(pid) FROM pg_locks"
                " WHERE relation = 'compliance_snapshots'::regclass AND NOT granted"
            ).fetchall()
            if rows:
                return len(rows)


async def test_loads_waiting_for_a_failed_computation_get_its_error_at_once_without_computing(
    web_rig: WebRig, db: Database, db_conninfo: str, pki: Pki
) -> None:
    cache = DashboardCache()
    sys = system(web_rig, pki)
    locked, release = threading.Event(), threading.Event()

    def hold_trend_table(conn: Any) -> None:
        with conn.transaction():
            conn.execute("LOCK TABLE compliance_snapshots IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(20)

    failures: list[BaseException] = []

    async def load() -> None:
        try:
            await cache.get(sys, ADMIN, ComplianceRules())
        except DatabaseUnavailable as exc:
            failures.append(exc)

    try:
        with trio.fail_after(15):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(db.run, hold_trend_table)
                await trio.to_thread.run_sync(locked.wait)
                async with trio.open_nursery() as loads:
                    for _ in range(4):
                        loads.start_soon(load)
                    cancelled = await trio.to_thread.run_sync(
                        cancel_statements_waiting_on_the_trend_table, db_conninfo
                    )
                # The snapshots are still locked: a waiter that computed again would still
                # be waiting. All four got the one computation's failure.
                assert cancelled == 1
                assert len(failures) == 4
                assert cache.computing() == 0
                release.set()
    finally:
        release.set()


async def test_a_scope_change_recomputes_the_figures(web_rig: WebRig, pki: Pki) -> None:
    cache = DashboardCache()
    sys = system(web_rig, pki)
    with trio.fail_after(30):
        first = await cache.get(sys, ADMIN, ComplianceRules())
        assert await cache.get(sys, ADMIN, ComplianceRules()) is first
        authz.scope_changed(sys.db)  # e.g. a host moved between groups
        assert await cache.get(sys, ADMIN, ComplianceRules()) is not first


async def test_figures_older_than_twice_the_ttl_are_never_shown_the_load_waits_for_new_ones(
    web_rig: WebRig, db: Database, pki: Pki
) -> None:
    clock = [0.0]
    cache = DashboardCache(ttl_s=30.0, now=lambda: clock[0])
    sys = system(web_rig, pki)
    with trio.fail_after(30):
        first = await cache.get(sys, ADMIN, ComplianceRules())
        clock[0] = 61.0  # more than 2 x ttl old
        locked, release = threading.Event(), threading.Event()

        def hold_trend_table(conn: Any) -> None:
            with conn.transaction():
                conn.execute("LOCK TABLE compliance_snapshots IN ACCESS EXCLUSIVE MODE")
                locked.set()
                release.wait(20)

        loaded: list[DashboardCompliance] = []

        async def load() -> None:
            loaded.append(await cache.get(sys, ADMIN, ComplianceRules()))

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(db.run, hold_trend_table)
                await trio.to_thread.run_sync(locked.wait)
                nursery.start_soon(load)  # computes (waits for the lock)
                while not cache.computing():
                    await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(load)  # must not get the too-old figures
                await trio.testing.wait_all_tasks_blocked()
                assert loaded == []
                release.set()
        finally:
            release.set()
    assert len(loaded) == 2 and loaded[0] is loaded[1] and loaded[0] is not first
