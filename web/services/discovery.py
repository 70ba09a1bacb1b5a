"""Discovery scans: start, read, cancel, register what was found."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from storage import HostRow

from ..authz import Action, require, scope_changed
from ..handle import Missing
from .base import Principal, System


async def start(sys: System, who: Principal, cidr: str) -> Any:
    """Raises ``InvalidInput`` (field ``cidr``) or ``TooBusy``. Admins only: a scan probes
    networks and what it finds is not in anyone's groups yet."""
    require(who, Action.DISCOVER)
    return await sys.handle.start_discovery(cidr)


async def get(sys: System, who: Principal, scan_id: int) -> Any:
    require(who, Action.DISCOVER)
    scan = await sys.handle.discovery(scan_id)
    if scan is None:
        raise Missing(f"no discovery scan {scan_id}")
    return scan


async def cancel(sys: System, who: Principal, scan_id: int) -> bool:
    await get(sys, who, scan_id)
    return sys.handle.cancel_discovery(scan_id)


async def register_found(
    sys: System, who: Principal, scan_id: int, addresses: Sequence[str]
) -> list[HostRow]:
    await get(sys, who, scan_id)
    rows = await sys.handle.register_found(scan_id, addresses)
    scope_changed(sys.db)
    return rows


def scan_json(scan: Any) -> dict[str, Any]:
    """A scan as the API and the page show it: found agents in address order."""
    return {
        "scan_id": scan.scan_id,
        "progress": scan.progress,
        "found": sorted(scan.found, key=lambda f: tuple(map(int, f.address.split(".")))),
    }
