"""A restart of the manager does not stretch a host's polling cadence: the first poll after the
restart comes no later than one interval after the last poll before it (issue 17: in the
10,000-host run a third of the hosts went over interval + jitter across the restart, because
the first poll waited for the host's phase offset, up to a whole interval, after the start)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import psycopg
import trio

from storage import Database

from ..conftest import Pki
from .conftest import FAST_POLICY, register
from .test_health_since_restart import start_system

HEALTH_S, PATCH_S = 3600, 7200  # FAST_POLICY's intervals


async def restart_after_polls_made(
    db: Database, pki: Pki, tmp_path: Path, start_fleet: Any, ago_s: float
) -> tuple[dt.datetime, dt.datetime | None, dt.datetime | None]:
    """Register a host, let it poll, stop the manager, move its last polls ``ago_s`` into the
    past, start again: (restart time, next health poll, next patch poll) the actor plans."""
    (tmp_path / "patch-manager.toml").write_text(FAST_POLICY)
    fleet = await start_fleet(1)
    async with trio.open_nursery() as first:
        manager = await start_system(first, db, pki, tmp_path)
        host_id = (await register(manager, fleet))[fleet.agents[0].address]
        with trio.fail_after(30):
            await manager.fleet.wait_until(
                lambda snaps: any(s.host_id == host_id and s.patches_as_of for s in snaps)
            )
        await manager.sink.flush()
        first.cancel_scope.cancel()

    def age(conn: psycopg.Connection[Any]) -> None:
        conn.execute(
            "UPDATE hosts SET last_health_poll_at = now() - make_interval(secs => %s),"
            " last_patch_poll_at = now() - make_interval(secs => %s) WHERE id = %s",
            (ago_s, ago_s, host_id),
        )

    await db.run(age)
    restarted = dt.datetime.now(dt.UTC)
    async with trio.open_nursery() as second:
        manager = await start_system(second, db, pki, tmp_path)
        with trio.fail_after(30):
            await manager.fleet.wait_until(
                lambda snaps: any(s.host_id == host_id and s.next_health_poll for s in snaps)
            )
        snapshot = manager.fleet.get(host_id)
        assert snapshot is not None
        second.cancel_scope.cancel()
    return restarted, snapshot.next_health_poll, snapshot.next_patch_poll


async def test_after_a_restart_the_first_polls_come_when_the_last_ones_are_one_interval_old(
    db: Database, pki: Pki, tmp_path: Path, start_fleet: Any
) -> None:
    ago = HEALTH_S - 20  # health due in 20 s; patches in PATCH_S - ago
    restarted, health, patches = await restart_after_polls_made(db, pki, tmp_path, start_fleet, ago)
    assert health is not None and patches is not None
    assert health <= restarted + dt.timedelta(seconds=21), health - restarted
    assert patches <= restarted + dt.timedelta(seconds=PATCH_S - ago + 1), patches - restarted


async def test_after_a_restart_hosts_already_overdue_poll_within_the_first_minute(
    db: Database, pki: Pki, tmp_path: Path, start_fleet: Any
) -> None:
    restarted, health, patches = await restart_after_polls_made(
        db, pki, tmp_path, start_fleet, 3 * PATCH_S
    )
    assert health is not None and patches is not None
    assert health <= restarted + dt.timedelta(seconds=61), health - restarted
    assert patches <= restarted + dt.timedelta(seconds=61), patches - restarted
