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
from storage import (
    AuditArg,
    Database,
    HostRow,
    JobHostRow,
    JobSpec,
    cancel_job,
    delete_host,
    job_rows,
    retry_failed_rows,
    run_audited,
)

from .address_policy import AddressPolicy
from .discovery import ScanProgress, ScanReport
from .jobs import JobChange
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

    @contextmanager
    def subscribe_jobs(self, buffer: int = 64) -> Iterator[trio.MemoryReceiveChannel[JobChange]]:
        """Every job roll-up change (status) from now on; a lagging subscriber loses some."""
        with self._scheduler.job_changes.subscribe(buffer) as channel:
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
        audit: AuditArg = None,
    ) -> HostRow:
        """Validate, resolve and store a host; its actor starts within a second. ``audit``:
        the audit entry written with the host (one transaction), as for every command here.

        Raises ``RegistrationError`` naming the field that is wrong: ``AddressRefused`` for an
        address or port the address policy refuses, ``HostAlreadyRegistered`` for a duplicate.
        """
        config = self._scheduler.config.current
        port = port or config.agents.port
        row = await register(
            self._db,
            name,
            port=port,
            policy=AddressPolicy.from_config(config),
            resolve_timeout=config.agents.resolve_timeout_s,
            display_name=display_name,
            groups=groups,
            audit=audit,
        )
        log.info(
            "host registered: %s (%s:%d)",
            row.name,
            row.address,
            row.port,
            extra={"host": row.name},
        )
        await self._scheduler.reconcile_now()
        return row

    async def remove_host(self, host_id: int, *, audit: AuditArg = None) -> HostRow:
        row = await run_audited(self._db, audit, delete_host, host_id)
        log.info("host removed: %s", row.name, extra={"host": row.name})
        await self._scheduler.reconcile_now()
        return row

    async def start_discovery(self, cidr: str, *, audit: AuditArg = None) -> Scan:
        """Raises ``DiscoveryError`` for a range that cannot be scanned, ``DiscoveryBusy`` when
        ``discovery.max_concurrent_scans`` scans are running."""
        return await self._scheduler.start_discovery(cidr, audit=audit)

    async def discovery(self, scan_id: int) -> ScanReport | None:
        """A scan: running ones from memory, finished ones from the database; None if unknown."""
        return await self._scheduler.discovery(scan_id)

    def cancel_discovery(self, scan_id: int) -> bool:
        return self._scheduler.cancel_discovery(scan_id)

    async def wait_discovery_change(self, scan_id: int) -> ScanProgress | None:
        """The next progress of a running scan; a finished scan answers at once."""
        return await self._scheduler.wait_discovery_change(scan_id)

    # -- jobs -------------------------------------------------------------------------------

    async def create_job(
        self, spec: JobSpec, host_ids: Sequence[int], *, audit: AuditArg = None
    ) -> int:
        """Store a job and its host rows (one transaction); the coordinator starts it."""
        store = self._scheduler.job_store
        if store is None or self._scheduler.jobs is None:
            raise RuntimeError("this scheduler runs no jobs")
        job_id: int = await store.create_job(spec, list(dict.fromkeys(host_ids)), audit=audit)
        log.info(
            "job %d created: %s on %d host(s), %s", job_id, spec.kind, len(host_ids), spec.schedule
        )
        self._scheduler.jobs.poke()
        return job_id

    def poke_jobs(self) -> None:
        if self._scheduler.jobs is not None:
            self._scheduler.jobs.poke()

    async def cancel_job(self, job_id: int, *, audit: AuditArg = None) -> int:
        count = await run_audited(self._db, audit, cancel_job, job_id)
        if self._scheduler.jobs is not None:
            self._scheduler.jobs.poke()
        return count

    async def retry_failed(self, job_id: int, *, audit: AuditArg = None) -> int:
        """Give the failed hosts of a finished or running job another go."""
        count = await run_audited(self._db, audit, retry_failed_rows, job_id)
        if self._scheduler.jobs is not None:
            self._scheduler.jobs.poke()
        return count

    async def rollback(
        self,
        job_id: int,
        host_ids: Sequence[int] | None = None,
        *,
        created_by: str = "",
        audit: AuditArg = None,
    ) -> int:
        """A new job reinstalling the versions the hosts had before ``job_id``; its creator is
        ``created_by`` (never empty: ``rollback of job N`` when no one is named)."""
        rows = [
            r
            for r in await self._db.run(job_rows, job_id)
            if r.state == "succeeded" and (host_ids is None or r.host_id in host_ids)
        ]
        specs = rollback_packages(rows)
        if not specs:
            raise ValueError("nothing to roll back: no succeeded host changed a package")
        # Each row carries its own host's versions (its plan); the job names the packages.
        planned: dict[int, dict[str, str]] = {}
        for s in specs:
            planned.setdefault(int(s["host_id"]), {})[str(s["name"])] = str(s["version"])
        spec = JobSpec(
            kind="rollback",
            schedule="now",
            packages=tuple(sorted({str(s["name"]) for s in specs})),
            rollback_of=job_id,
            created_by=created_by or f"rollback of job {job_id}",
            planned=planned,
        )
        return await self.create_job(spec, sorted(planned), audit=audit)

    async def register_found(
        self, scan_id: int, addresses: Sequence[str], *, audit: AuditArg = None
    ) -> list[HostRow]:
        """Register agents a scan found; the address policy applies as to any host (one
        audit entry per host: ``audit`` is called with each new row)."""
        report = await self._scheduler.discovery(scan_id)
        known = {f.address: f for f in report.found} if report else {}
        rows = []
        for address in addresses:
            found = known.get(address)
            name = found.hostname if found else ""
            rows.append(await self.register_host(address, display_name=name, audit=audit))
        return rows


def rollback_packages(rows: Sequence[JobHostRow]) -> list[dict[str, Any]]:
    """Per host, the versions to reinstall so that what a job changed goes back (R-4.5).

    Upgraded or removed packages go back to their version before the job; packages the job
    newly installed cannot be undone by an install and are left alone.
    """
    specs: list[dict[str, Any]] = []
    for row in rows:
        before, after = row.packages_before or {}, row.packages_after or {}
        for name, version in sorted(before.items()):
            if after.get(name) != version:
                specs.append({"host_id": row.host_id, "name": name, "version": version})
    return specs


__all__ = ["FleetHandle", "rollback_packages"]
