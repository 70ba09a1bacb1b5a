"""Host actors against simulated agents over real mTLS, storing into a real PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors import HealthState
from simulator import Fleet
from storage import JobSpec

from .conftest import Manager, register

pytestmark = pytest.mark.timeout(120)


def states(manager: Manager) -> dict[int, HealthState]:
    return {s.host_id: s.health for s in manager.fleet.snapshots()}


async def test_two_hundred_agents_polled_stored_and_unreachable_ones_detected(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(200, time_scale=0.01)
    degraded = fleet.agents[-1]
    degraded.set_faults({"degraded": "crl_expired"})
    ids = await register(manager, fleet)
    expected_patches = {ids[a.address]: len(a.profile.upgradable) for a in fleet.agents}

    def all_polled(snaps: list[Any]) -> bool:
        return len(snaps) == 200 and all(
            s.health is not HealthState.PENDING
            and s.last_success is not None
            and expected_patches[s.host_id] == s.pending_patches
            and s.phase.value == "idle"
            for s in snaps
        )

    with trio.fail_after(60):
        await manager.fleet.wait_until(all_polled)
    snapshot = manager.fleet.get(ids[degraded.address])
    assert snapshot is not None
    assert snapshot.health is HealthState.DEGRADED
    assert snapshot.health_reason == "CRL expired"
    assert {h for i, h in states(manager).items() if i != ids[degraded.address]} == {
        HealthState.HEALTHY
    }

    await manager.sink.flush()
    counts = await manager.db.run(
        lambda conn: conn.execute(
            "SELECT (SELECT count(*) FROM hosts WHERE health = 'healthy'),"
            " (SELECT count(*) FROM host_patches WHERE resolved_at IS NULL),"
            " (SELECT count(*) FROM host_packages),"
            " (SELECT count(*) FROM host_health_history)"
        ).fetchone()
    )
    assert counts == (
        199,
        sum(len(a.profile.upgradable) for a in fleet.agents),
        sum(len(a.profile.installed) for a in fleet.agents),
        200,  # one transition per host (pending -> healthy/degraded), not one per poll
    )

    # Take 20 agents down: exactly those become unreachable, after three failures.
    victims = {ids[a.address] for a in fleet.agents[:20]}
    fleet.apply_faults([a.address for a in fleet.agents[:20]], {"down": True})
    manager.handle.refresh()
    with trio.fail_after(30):
        await manager.fleet.wait_until(
            lambda snaps: (
                {s.host_id for s in snaps if s.health is HealthState.UNREACHABLE} == victims
                and all(s.phase.value == "idle" for s in snaps)
            )
        )
    for host_id in victims:
        actor = manager.scheduler.hosts[host_id].actor
        assert actor is not None and actor.tracker.transport_failures >= 3
    assert [
        s.host_id
        for s in manager.fleet.snapshots()
        if s.health is HealthState.UNREACHABLE and s.host_id not in victims
    ] == []

    # Bring them back.
    fleet.apply_faults([a.address for a in fleet.agents[:20]], {"down": False})
    manager.handle.refresh(sorted(victims))
    with trio.fail_after(30):
        await manager.fleet.wait_until(
            lambda snaps: all(
                s.health is HealthState.HEALTHY for s in snaps if s.host_id in victims
            )
        )
    await manager.sink.flush()
    history = await manager.db.run(
        lambda conn: conn.execute(
            "SELECT from_state, to_state, count(*) FROM host_health_history"
            " WHERE host_id = ANY(%s) GROUP BY 1, 2 ORDER BY 1, 2",
            (sorted(victims),),
        ).fetchall()
    )
    assert history == [
        ("healthy", "unreachable", 20),
        ("pending", "healthy", 20),
        ("unreachable", "healthy", 20),
    ]


async def test_patch_data_history_tracks_first_seen_and_resolution(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1, time_scale=0.001)
    agent = fleet.agents[0]
    agent.profile.upgradable["openssl"] = "3.0.99-1"
    agent.profile.installed.setdefault("openssl", "3.0.1-1")
    ids = await register(manager, fleet)
    host_id = ids[agent.address]
    with trio.fail_after(30):
        await manager.fleet.wait_until(lambda s: s and s[0].pending_patches > 0)
    # Apply it on the agent, then poll again: the patch is resolved, not deleted.
    agent.profile.installed["openssl"] = agent.profile.upgradable.pop("openssl")
    expected = len(agent.profile.upgradable)
    manager.handle.refresh([host_id])
    with trio.fail_after(30):
        await manager.fleet.wait_until(lambda s: s[0].pending_patches == expected)
    rows = await manager.db.run(
        lambda conn: conn.execute(
            "SELECT name, resolved_at IS NOT NULL, first_seen_at <= coalesce(resolved_at, now())"
            " FROM host_patches WHERE host_id = %s AND name = 'openssl'",
            (host_id,),
        ).fetchall()
    )
    assert rows == [("openssl", True, True)]
    written_before = manager.sink.stats.patch_rows
    manager.handle.refresh([host_id])  # same data again: no patch rows written
    with trio.fail_after(30):
        actor = manager.scheduler.hosts[host_id].actor
        assert actor is not None
        polls = actor.polls
        while actor.polls < polls + 2:
            await manager.fleet.wait_until(lambda s, p=actor.polls: actor.polls > p)
    assert manager.sink.stats.patch_rows == written_before


async def test_discovery_finds_exactly_the_agents_of_a_slash_24(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(50, base_address="127.213.7.1")
    # A few more agents outside the range must not be found.
    await start_fleet(3, base_address="127.213.8.1")
    scan = await manager.handle.start_discovery("127.213.7.0/24")
    seen = []
    with trio.fail_after(60):
        while not scan.progress.done:
            progress = await manager.handle.wait_discovery_change(scan.scan_id)
            assert progress is not None
            seen.append(progress)
    assert scan.progress.total == 254
    assert scan.progress.probed == 254
    assert {f.address for f in scan.found} == {a.address for a in fleet.agents}
    assert {f.hostname for f in scan.found} == {a.profile.hostname for a in fleet.agents}
    assert any(0 < p.probed < 254 for p in seen)  # progress was reported along the way
    results = await manager.db.run(
        lambda conn: conn.execute(
            "SELECT count(*), (SELECT status FROM discovery_scans WHERE id = %s)"
            " FROM discovery_results WHERE scan_id = %s",
            (scan.scan_id, scan.scan_id),
        ).fetchone()
    )
    assert results == (50, "finished")
    registered = await manager.handle.register_found(scan.scan_id, [fleet.agents[0].address])
    assert registered[0].display_name == fleet.agents[0].profile.hostname


async def test_discovery_validation_and_cancel(manager: Manager, start_fleet: Any) -> None:
    from actors import DiscoveryError

    with pytest.raises(DiscoveryError, match="IPv4"):
        await manager.handle.start_discovery("::1/128")
    with pytest.raises(DiscoveryError, match="limit is /22"):
        await manager.handle.start_discovery("127.0.0.0/16")
    with pytest.raises(DiscoveryError, match="not a CIDR"):
        await manager.handle.start_discovery("127.0.0.300/24")
    await start_fleet(5, base_address="127.214.0.1")
    scan = await manager.handle.start_discovery("127.214.0.0/22")
    await manager.handle.wait_discovery_change(scan.scan_id)
    assert manager.handle.cancel_discovery(scan.scan_id)
    with trio.fail_after(10):
        while not scan.progress.done:
            await manager.handle.wait_discovery_change(scan.scan_id)
    assert scan.progress.cancelled
    assert scan.progress.probed < scan.progress.total


async def test_registration_validates_resolves_and_refuses_duplicates(
    manager: Manager, start_fleet: Any
) -> None:
    from actors import RegistrationError

    fleet: Fleet = await start_fleet(1)
    agent = fleet.agents[0]
    row = await manager.handle.register_host(agent.address, port=agent.port, groups=["web"])
    assert row.groups == ("web",)
    assert manager.scheduler.hosts[row.id]  # its actor runs
    with pytest.raises(RegistrationError, match="already registered"):
        await manager.handle.register_host(agent.address, port=agent.port)
    with pytest.raises(RegistrationError, match="neither an IP address nor a valid FQDN"):
        await manager.handle.register_host("bad_name!")
    with pytest.raises(RegistrationError, match="does not resolve"):
        await manager.handle.register_host("no-such-host.invalid")
    local = await manager.handle.register_host("localhost")  # 127.0.0.0/8 is allowed here
    assert local.address == "127.0.0.1"
    removed = await manager.handle.remove_host(row.id)
    assert removed.id == row.id and row.id not in manager.scheduler.hosts


async def test_a_refresh_polls_at_once_while_the_host_runs_a_job(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1, time_scale=0.2)  # an apply takes 6-60 s
    ids = await register(manager, fleet)
    host_id = ids[fleet.agents[0].address]
    with trio.fail_after(30):
        await manager.fleet.wait_until(
            lambda s: s and s[0].health is HealthState.HEALTHY and s[0].phase.value == "idle"
        )
    job_id = await manager.handle.create_job(JobSpec(kind="patch", schedule="now"), [host_id])
    with trio.fail_after(30):
        await manager.fleet.wait_until(lambda s: s[0].job == f"job {job_id}")
    actor = manager.scheduler.hosts[host_id].actor
    assert actor is not None
    polls = actor.polls
    manager.handle.refresh([host_id])
    with trio.fail_after(5):  # not after the job: the poller does not wait for it
        await manager.fleet.wait_until(lambda s: actor.polls > polls)
    snapshot = manager.fleet.get(host_id)
    assert snapshot is not None and snapshot.job == f"job {job_id}"  # still running
    assert snapshot.summary.startswith(f"polling: healthy · job {job_id} ")
