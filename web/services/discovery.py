"""Discovery scans: start, read, cancel, register what was found."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from storage import HostRow
from storage.display import RegisteredAddress, ScanSummary, recent_scans, registered_addresses

from .. import audit
from ..authz import Action, require, scope_changed
from ..handle import InvalidInput, Missing
from .base import Principal, System


async def start(sys: System, who: Principal, cidr: str) -> Any:
    """Raises ``InvalidInput`` (field ``cidr``) or ``TooBusy``. Admins only: a scan probes
    networks and what it finds is not in anyone's groups yet."""
    require(who, Action.DISCOVER)
    return await sys.handle.start_discovery(
        cidr, audit=lambda scan_id: audit.entry(who, "discovery.scan", f"scan:{scan_id}",
                                                after={"cidr": cidr})
    )  # fmt: skip


async def get(sys: System, who: Principal, scan_id: int) -> Any:
    require(who, Action.DISCOVER)
    scan = await sys.handle.discovery(scan_id)
    if scan is None:
        raise Missing(f"no discovery scan {scan_id}")
    return scan


async def cancel(sys: System, who: Principal, scan_id: int) -> bool:
    scan = await get(sys, who, scan_id)
    if scan.progress.done:  # nothing to cancel, nothing to record
        return False
    # Recorded first: a cancel cannot be rolled back, so a failed write cancels nothing.
    await audit.record(sys, audit.entry(who, "discovery.cancel", f"scan:{scan_id}"))
    return sys.handle.cancel_discovery(scan_id)


async def register_found(
    sys: System, who: Principal, scan_id: int, addresses: Sequence[str]
) -> list[HostRow]:
    """Raises ``InvalidInput`` (field ``addresses``) naming every address the scan did not
    find: only found agents are registered this way (any other goes through POST /hosts)."""
    scan = await get(sys, who, scan_id)
    found = {f.address for f in scan.found}
    if strangers := [a for a in addresses if a not in found]:
        raise InvalidInput(
            "addresses", f"not found by discovery scan {scan_id}: {', '.join(strangers[:20])}"
        )
    rows = await sys.handle.register_found(
        scan_id, addresses,
        audit=lambda r: audit.entry(who, "discovery.register", f"host:{r.id}",
                                    after={**audit.host_view(r), "scan_id": scan_id}),
    )  # fmt: skip
    scope_changed(sys.db)
    return rows


def scan_json(scan: Any) -> dict[str, Any]:
    """A scan as the API and the page show it: found agents in address order."""
    return {
        "scan_id": scan.scan_id,
        "progress": scan.progress,
        "found": sorted(scan.found, key=lambda f: tuple(map(int, f.address.split(".")))),
    }


async def registered(
    sys: System, who: Principal, addresses: Sequence[str]
) -> dict[str, RegisteredAddress]:
    """Which of ``addresses`` are registered hosts already (the scan page marks them)."""
    require(who, Action.DISCOVER)
    return await sys.db.run(registered_addresses, list(addresses))


async def history(sys: System, who: Principal, limit: int = 20) -> list[ScanSummary]:
    """The latest scans, newest first (stored: they survive a restart). One stored as running
    that this process does not run was interrupted: ``failed (interrupted)``."""
    require(who, Action.DISCOVER)
    scans = await sys.db.run(recent_scans, limit)
    shown = []
    for scan in scans:
        if scan.status == "running":
            report = await sys.handle.discovery(scan.id)
            if report is None or report.progress.failed:
                scan = replace(scan, status="failed (interrupted)")
        shown.append(scan)
    return shown
