"""The §3.10 apt parsing cross-check: pure cases, and what a host actor stores."""

from __future__ import annotations

from typing import Any

import trio

from actors.agent_records import Package, PackageStatus, Patch, PatchList
from actors.apt_check import cross_check
from simulator import Fleet
from storage import load_patch_data

from .conftest import Manager, register


def patch(name: str, current: str, available: str) -> Patch:
    return Patch(name, current, available, "critical", (), False, "")


def installed(name: str, version: str) -> Package:
    return Package(name, version, PackageStatus.INSTALLED, True, None, "")


def test_an_architecture_in_available_version_is_corrected_from_the_installed_packages() -> None:
    bad = PatchList((patch("openssl", "3.0.13-0ubuntu3.4", "amd64"),), 1, False)
    fixed = cross_check(bad, [installed("openssl", "3.0.13-0ubuntu3.1")])
    assert fixed.patches[0].current_version == "3.0.13-0ubuntu3.1"
    assert fixed.patches[0].available_version == "3.0.13-0ubuntu3.4"
    unknown = cross_check(bad, [])
    assert (unknown.patches[0].current_version, unknown.patches[0].available_version) == (
        "",
        "3.0.13-0ubuntu3.4",
    )


def test_correct_patches_are_left_alone() -> None:
    good = PatchList((patch("curl", "8.5.0-2ubuntu10.1", "8.5.0-2ubuntu10.6"),), 0, False)
    assert cross_check(good, [installed("curl", "something else")]) is good


async def test_host_actor_stores_real_versions_from_an_agent_with_the_apt_bug(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(4)
    agent = next(a for a in fleet.agents if a.profile.upgradable)
    agent.set_faults({"apt_parse_bug": True})
    ids = await register(manager, fleet)
    host_id = ids[agent.address]
    with trio.fail_after(30):
        await manager.fleet.wait_until(
            lambda s: any(x.host_id == host_id and x.pending_patches > 0 for x in s)
        )
    patches, _ = await manager.db.run(load_patch_data, host_id)
    assert patches
    for name, row in patches.items():
        assert row.available_version == agent.profile.upgradable[name] != "amd64"
        assert row.current_version == agent.profile.installed.get(name, "")
