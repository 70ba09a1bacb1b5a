"""Discovery limits: the address policy, concurrent scans, finished scans read back from the
database, and a storage failure at the end of a scan (real PostgreSQL, simulated agents)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio

from actors import AddressRefused, DiscoveryBusy, DiscoveryError
from simulator import Fleet

from ..conftest import fleet_addresses
from .conftest import FAST_POLICY, MakeManager, Manager

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def silent_agent(nursery: trio.Nursery) -> AsyncIterator[tuple[str, int]]:
    """An address:port that accepts TCP and then never says a word: a probe of it (and so its
    scan) stays in its TLS handshake until cancelled."""
    address = fleet_addresses(1)
    listeners = await trio.open_tcp_listeners(0, host=address)
    held: list[trio.SocketStream] = []

    async def hold(stream: trio.SocketStream) -> None:
        held.append(stream)
        await trio.sleep_forever()

    nursery.start_soon(trio.serve_listeners, hold, listeners)
    yield address, listeners[0].socket.getsockname()[1]


def slow_conf(port: int, scans: int = 2) -> str:
    return f"""
[agents]
port = {port}
allow_addresses = ["127.0.0.0/8"]
[discovery]
max_concurrent_scans = {scans}
connect_timeout_s = 30
"""


async def wait_done(manager: Manager, scan_id: int) -> None:
    with trio.fail_after(30):
        while (progress := await manager.handle.wait_discovery_change(scan_id)) is not None:
            if progress.done:
                return


async def test_a_range_of_refused_addresses_is_refused_before_any_probe(
    make_manager: MakeManager,
) -> None:
    manager = await make_manager("")
    with pytest.raises(
        DiscoveryError, match=r"every address of 127\.0\.0\.0/24 is refused.*loopback"
    ):
        await manager.handle.start_discovery("127.0.0.0/24")
    with pytest.raises(DiscoveryError, match="link-local"):
        await manager.handle.start_discovery("169.254.169.254/32")
    with pytest.raises(DiscoveryError, match="multicast"):
        await manager.handle.start_discovery("224.0.0.0/24")
    assert manager.scheduler.scans == {}


async def test_a_range_larger_than_discovery_min_prefix_len_is_refused(
    make_manager: MakeManager,
) -> None:
    manager = await make_manager(FAST_POLICY)
    with pytest.raises(DiscoveryError, match="the limit is /22"):
        await manager.handle.start_discovery("127.0.0.0/21")


async def test_refused_addresses_inside_a_scanned_range_are_skipped(
    make_manager: MakeManager, start_fleet: Callable[..., Awaitable[Fleet]]
) -> None:
    fleet = await start_fleet(5)
    first = fleet.agents[0].address  # x.y.z.1
    prefix = first.rsplit(".", 1)[0]
    # Only x.y.z.0/30 is permitted: of the agents .1 to .5, the scan may reach .1 to .3.
    manager = await make_manager(
        f'[agents]\nallow_addresses = ["{prefix}.0/30"]\n[discovery]\nconnect_timeout_s = 2\n'
    )
    scan = await manager.handle.start_discovery(f"{prefix}.0/29")
    assert scan.progress.total == 3
    await wait_done(manager, scan.scan_id)
    report = await manager.handle.discovery(scan.scan_id)
    assert report is not None
    assert [f.address for f in report.found] == [f"{prefix}.{n}" for n in (1, 2, 3)]
    assert report.progress.probed == 3


async def test_a_third_concurrent_scan_is_busy_until_one_ends(
    make_manager: MakeManager, silent_agent: tuple[str, int]
) -> None:
    address, port = silent_agent
    manager = await make_manager(slow_conf(port))
    first = await manager.handle.start_discovery(f"{address}/32")
    second = await manager.handle.start_discovery(f"{address}/32")
    with pytest.raises(DiscoveryBusy, match=r"2 scan\(s\) are running"):
        await manager.handle.start_discovery(f"{address}/32")
    assert manager.handle.cancel_discovery(first.scan_id)
    await wait_done(manager, first.scan_id)
    third = await manager.handle.start_discovery(f"{address}/32")
    assert set(manager.scheduler.scans) == {second.scan_id, third.scan_id}
    for scan in (second, third):
        manager.handle.cancel_discovery(scan.scan_id)
        await wait_done(manager, scan.scan_id)


async def test_a_finished_scan_leaves_memory_and_is_read_back_from_the_database(
    make_manager: MakeManager, start_fleet: Callable[..., Awaitable[Fleet]]
) -> None:
    fleet = await start_fleet(2)
    prefix = fleet.agents[0].address.rsplit(".", 1)[0]
    manager = await make_manager(FAST_POLICY)
    scan = await manager.handle.start_discovery(f"{prefix}.0/29")
    running = await manager.handle.discovery(scan.scan_id)
    assert running is not None and not running.progress.done
    await wait_done(manager, scan.scan_id)
    assert manager.scheduler.scans == {}
    report = await manager.handle.discovery(scan.scan_id)
    assert report is not None
    assert report.progress.done and not report.progress.failed
    assert report.progress.cidr == f"{prefix}.0/29"
    assert (report.progress.total, report.progress.probed, report.progress.found) == (6, 6, 2)
    assert {(f.address, f.hostname) for f in report.found} == {
        (a.address, a.profile.hostname) for a in fleet.agents
    }
    assert await manager.handle.discovery(scan.scan_id + 1000) is None
    for impossible in (0, -1, 2**63, 10**30):  # never a database error
        assert await manager.handle.discovery(impossible) is None
        assert await manager.handle.wait_discovery_change(impossible) is None
    assert await manager.handle.wait_discovery_change(scan.scan_id) == report.progress
    # What was found can still be registered, with its hostname.
    rows = await manager.handle.register_found(scan.scan_id, [fleet.agents[1].address])
    assert rows[0].display_name == fleet.agents[1].profile.hostname


async def test_a_scan_interrupted_by_a_restart_reads_back_as_failed(
    make_manager: MakeManager,
) -> None:
    manager = await make_manager(FAST_POLICY)
    scan_id = await manager.db.run(
        lambda conn: conn.execute(
            "INSERT INTO discovery_scans (cidr, total) VALUES ('10.0.0.0/24', 254) RETURNING id"
        ).fetchone()[0]
    )
    report = await manager.handle.discovery(scan_id)
    assert report is not None
    assert report.progress.done and report.progress.failed
    assert report.progress.error == "interrupted before it finished"


async def test_a_storage_error_at_the_end_of_a_scan_fails_the_scan_not_the_process(
    make_manager: MakeManager,
    start_fleet: Callable[..., Awaitable[Fleet]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fleet = await start_fleet(2)
    prefix = fleet.agents[0].address.rsplit(".", 1)[0]
    manager = await make_manager(FAST_POLICY)
    # A real storage failure: the results table is gone when the scan saves what it found.
    await manager.db.run(lambda conn: conn.execute("DROP TABLE discovery_results"))
    with caplog.at_level(logging.ERROR, logger="actors.scheduler"):
        scan = await manager.handle.start_discovery(f"{prefix}.0/29")
        await wait_done(manager, scan.scan_id)
    assert scan.progress.failed and "could not be stored" in scan.progress.error
    assert any("could not be stored" in r.getMessage() for r in caplog.records)
    status, error = await manager.db.run(
        lambda conn: conn.execute(
            "SELECT status, error FROM discovery_scans WHERE id = %s", (scan.scan_id,)
        ).fetchone()
    )
    assert status == "failed" and "discovery_results" in error
    # The scheduler runs on: it still reconciles and still starts scans.
    assert manager.scheduler.running
    await manager.scheduler.reconcile_now()
    again = await manager.handle.start_discovery(f"{prefix}.0/30")
    await wait_done(manager, again.scan_id)
    assert again.progress.done


async def test_register_found_applies_the_address_policy(
    make_manager: MakeManager, start_fleet: Callable[..., Awaitable[Fleet]]
) -> None:
    fleet = await start_fleet(1)
    prefix = fleet.agents[0].address.rsplit(".", 1)[0]
    manager = await make_manager(FAST_POLICY)
    scan = await manager.handle.start_discovery(f"{prefix}.0/30")
    await wait_done(manager, scan.scan_id)
    with pytest.raises(AddressRefused, match="link-local"):
        await manager.handle.register_found(scan.scan_id, ["169.254.169.254"])
