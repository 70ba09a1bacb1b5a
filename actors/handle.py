"""``FleetHandle``: the one object through which the web layer (and the CLI) reaches the actors:
snapshots, subscriptions and commands."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import trio

from settings import EffectivePolicy
from storage import Database, DiscoveryResult, HostRow, delete_host

from .discovery import ScanProgress
from .registration import register
from .scheduler import Scan, Scheduler
from .state import POLL_BUCKETS, BroadcastStatistics, FleetState, HostSnapshot, SnapshotChange

log = logging.getLogger(__name__)


class FleetHandle:
    def __init__(self, scheduler: Scheduler, fleet: FleetState, db: Database) -> None:
        self._scheduler = scheduler
        self._fleet = fleet
        self._db = db

    # -- live state -------------------------------------------------------------------------

    def snapshots(self) -> list[HostSnapshot]:
        return sorted(self._fleet.snapshots(), key=lambda s: s.host_id)

    def snapshot(self, host_id: int) -> HostSnapshot | None:
        return self._fleet.get(host_id)

    @contextmanager
    def subscribe(self, buffer: int = 256) -> Iterator[trio.MemoryReceiveChannel[SnapshotChange]]:
        """Every snapshot change from now on; the channel closes if the subscriber lags."""
        with self._fleet.subscribe(buffer) as channel:
            yield channel

    def statistics(self) -> BroadcastStatistics:
        return self._fleet.statistics()

    def metrics(self) -> dict[str, Any]:
        snaps = self._fleet.snapshots()
        m = self._fleet.metrics
        return {
            "actors_by_phase": dict(Counter(s.phase.value for s in snaps)),
            "hosts_by_health": dict(Counter(s.health.value for s in snaps)),
            "polls_ok": m.ok,
            "polls_failed": m.failed,
            "poll_buckets": list(zip(POLL_BUCKETS, m.buckets, strict=True)),
            "poll_seconds_sum": m.seconds_sum,
            "polls_observed": m.ok + m.failed,
            "dropped_subscribers": self._fleet.statistics().dropped_subscribers,
        }

    def effective_policy(self, host_id: int) -> EffectivePolicy | None:
        return self._scheduler.policy_of(host_id)

    # -- commands ---------------------------------------------------------------------------

    def refresh(self, host_ids: Sequence[int] | None = None) -> int:
        """Poll these hosts now (all when None); repeated requests coalesce."""
        return self._scheduler.refresh(host_ids)

    async def register_host(
        self,
        name: str,
        *,
        display_name: str = "",
        groups: Sequence[str] = (),
        port: int | None = None,
    ) -> HostRow:
        """Validate, resolve and store a host; its actor starts within a second.

        Raises ``RegistrationError`` naming the field that is wrong (duplicates included).
        """
        port = port or self._scheduler.config.current.agents.port
        row = await register(self._db, name, port=port, display_name=display_name, groups=groups)
        log.info(
            "host registered: %s (%s:%d)",
            row.name,
            row.address,
            row.port,
            extra={"host": row.name},
        )
        await self._scheduler.reconcile_now()
        return row

    async def remove_host(self, host_id: int) -> HostRow:
        row = await self._db.run(delete_host, host_id)
        log.info("host removed: %s", row.name, extra={"host": row.name})
        await self._scheduler.reconcile_now()
        return row

    async def start_discovery(self, cidr: str) -> Scan:
        """Raises ``DiscoveryError`` for a range that cannot be scanned."""
        return await self._scheduler.start_discovery(cidr)

    def discovery(self, scan_id: int) -> Scan | None:
        return self._scheduler.scans.get(scan_id)

    def cancel_discovery(self, scan_id: int) -> bool:
        return self._scheduler.cancel_discovery(scan_id)

    async def wait_discovery_change(self, scan_id: int) -> ScanProgress:
        state = self._scheduler.scans[scan_id]
        await state.changed.wait()
        return state.progress

    async def register_found(self, scan_id: int, addresses: Sequence[str]) -> list[HostRow]:
        state = self._scheduler.scans.get(scan_id)
        known = {f.address: f for f in state.found} if state else {}
        rows = []
        for address in addresses:
            found = known.get(address)
            name = found.hostname if found else ""
            rows.append(await self.register_host(address, display_name=name))
        return rows


__all__ = ["DiscoveryResult", "FleetHandle"]
