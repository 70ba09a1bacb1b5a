"""The dashboard's compliance figures are computed by one request at a time (issue 17): at
10,000 hosts a computation takes about half a second, and five browsers loading the dashboard
when the figures expire must neither compute them five times nor all wait for the one that
does while there are figures to show (the page states their "as of" time)."""

from __future__ import annotations

import threading
from typing import Any

import trio
import trio.testing

from patch_manager.adapter import SystemAdapter
from patch_manager.runtime import Storage
from reports import ComplianceRules
from storage import Database
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
    cache = DashboardCache(ttl_s=0.0)  # every load finds the figures expired
    sys = system(web_rig, pki)
    with trio.fail_after(30):
        first = await cache.get(sys, ADMIN, ComplianceRules())
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
