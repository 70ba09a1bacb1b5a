"""Risk waivers outlive their host like other history (review F13b #10): removing a host keeps
its waivers (the evidence pack lists them, with the host's name); retention removes them once
expired or revoked before the cutoff, and then the removed host's record."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

from storage import Database, HostScope, insert_host
from storage.hosts import delete_host
from storage.reports import create_waiver, list_waivers
from storage.retention import PRUNE_STEPS, prune_batch

NOW = dt.datetime.now(dt.UTC)
EVERYTHING = HostScope.everything()


async def test_a_removed_hosts_waivers_stay_listed_with_its_name_until_retention(
    db: Database,
) -> None:
    def setup(conn: psycopg.Connection[Any]) -> int:
        host = insert_host(conn, name="gone", address=None, groups=[]).id
        create_waiver(conn, EVERYTHING, host, "openssl", "", "ops", "vendor fix pending",
                      NOW + dt.timedelta(days=30), "user:admin")  # fmt: skip
        delete_host(conn, host)
        return host

    host = await db.run(setup)
    [waiver] = await db.run(list_waivers, EVERYTHING)
    assert (waiver.host_id, waiver.host) == (host, "gone")

    def prune_all(conn: psycopg.Connection[Any], cutoff: dt.datetime) -> dict[str, int]:
        return {step: prune_batch(conn, step, cutoff, NOW, 1000) for step in PRUNE_STEPS}

    # Not yet expired: kept, and so is the removed host's record.
    await db.run(prune_all, NOW + dt.timedelta(days=1))
    assert len(await db.run(list_waivers, EVERYTHING)) == 1
    # Expired before the cutoff: pruned, then the removed host's record goes too.
    deleted = await db.run(prune_all, NOW + dt.timedelta(days=31))
    assert deleted["risk_waivers"] == 1 and deleted["removed_hosts"] == 1
    assert await db.run(list_waivers, EVERYTHING) == []
