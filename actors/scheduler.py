"""The scheduler actor: owns the host actors and fleet-wide work (R-3.1, R-3.5, R-2.2).

It reconciles the desired hosts (the hosts table, plus the configuration's policies) with the
running actors: a new host gets an actor within a second, a removed host's actor is stopped, a
paused host's actor parks. A configuration reload reaches only the actors whose effective policy
changed. Each actor runs under ``supervise``; a host that keeps crashing is marked failed without
disturbing the others. Discovery scans run here too.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import random
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import trio

from settings import Config, ConfigStore, EffectivePolicy, PollingPolicy, effective_policy
from storage import AuditArg, HostRow

from .address_policy import AddressPolicy
from .discovery import (
    DiscoveryBusy,
    DiscoveryError,
    Found,
    ScanProgress,
    ScanReport,
    addresses,
    parse_range,
    scan,
)
from .heap import HeapTrimmer
from .host import HostActor, utc_now
from .jobs import JobChange, JobChanges, JobCoordinator
from .ports import AgentFactory, HostSink, HostTarget
from .state import FleetState, HostSnapshot, Phase
from .supervisor import SupervisionState, supervise

log = logging.getLogger(__name__)


class HostDirectoryPort(Protocol):
    async def list_hosts(self) -> list[HostRow]: ...

    async def watch(
        self,
        on_change: Callable[[], None],
        on_refresh: Callable[[list[int] | None], None],
        *,
        task_status: trio.TaskStatus[None] = ...,
    ) -> None: ...


class DiscoveryStore(Protocol):
    async def create(self, cidr: str, total: int, audit: AuditArg = None) -> int: ...

    async def progress(
        self, scan_id: int, progress: ScanProgress, status: str | None, error: str = ""
    ) -> None: ...

    async def add(self, scan_id: int, found: Sequence[Found]) -> None: ...

    async def get(self, scan_id: int) -> ScanReport | None: ...


@dataclass
class RunningHost:
    row: HostRow
    policy: PollingPolicy
    scope: trio.CancelScope
    supervision: SupervisionState
    actor: HostActor | None = None


@dataclass
class Scan:
    scan_id: int
    progress: ScanProgress
    scope: trio.CancelScope
    found: list[Found] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)
    probing: bool = True  # false once the probes ended: a cancel comes too late
    cancel_requested: bool = False

    def report(self) -> ScanReport:
        return ScanReport(self.scan_id, self.progress, tuple(self.found))


def host_policy(config: Config, row: HostRow) -> EffectivePolicy:
    """The configuration's policy for a host, with a pause from the UI/database on top."""
    eff = effective_policy(config, row.name, row.groups)
    if row.paused and not eff.policy.paused:
        return EffectivePolicy(replace(eff.policy, paused=True), {**eff.origins, "paused": "ui"})
    return eff


INGEST_SLOTS = 16  # two per connection of the default database pool (8)


class Scheduler:
    """Run with ``await nursery.start(scheduler.run)``; cancel to stop every actor."""

    def __init__(
        self,
        *,
        config: ConfigStore,
        directory: HostDirectoryPort,
        agent_factory: AgentFactory,
        sink: HostSink,
        fleet: FleetState,
        ssl_context: ssl.SSLContext | None = None,
        discovery_store: DiscoveryStore | None = None,
        rng: random.Random | None = None,
        wall: Callable[[], dt.datetime] = utc_now,
        tick: float = 1.0,
        reconcile_interval: float = 30.0,
        job_store: Any = None,
    ) -> None:
        self.config = config
        self.directory = directory
        self.agent_factory = agent_factory
        self.sink = sink
        self.fleet = fleet
        self.ssl_context = ssl_context
        self.discovery_store = discovery_store
        self.rng = rng or random.Random()
        self.wall = wall
        self.tick = tick
        self.reconcile_interval = reconcile_interval
        self.heartbeat: float | None = None
        self.running = False
        self.hosts: dict[int, RunningHost] = {}
        self.refused: dict[int, str] = {}  # stored hosts the address policy refuses: why
        # Hosts the coordinator asked about without an actor: reconciles started by then.
        self._unknown: dict[int, int] = {}
        self.scans: dict[int, Scan] = {}  # running scans only; finished ones are in the store
        self._scans_starting = 0
        self._nursery: trio.Nursery | None = None
        self._reconcile_requested = trio.Event()
        self._reconciled = trio.Event()
        self._reconciles_started = 0
        self._reconciles_done = 0
        self.job_store = job_store
        self.admitting = True  # false once shutdown began
        self._coordinator_scope = trio.CancelScope()
        self.job_changes = JobChanges()
        # Freed heap handed back after an ingest burst (package lists parsed), glibc only.
        self.heap = HeapTrimmer()
        # Hosts fetching, parsing and storing patch data at once (the rest wait before asking).
        self.ingest = trio.CapacityLimiter(INGEST_SLOTS)
        self.jobs = (
            JobCoordinator(
                job_store,
                wall=wall,
                tick=tick,
                host_blocked=self._host_blocked,
                permits_granted=self._wake_runners,
                on_change=self._job_changed,
            )
            if job_store is not None
            else None
        )

    # -- public -----------------------------------------------------------------------------

    def heartbeat_age(self) -> float | None:
        if self.heartbeat is None or not self.running:
            return None
        return trio.current_time() - self.heartbeat

    def stop_admitting(self) -> None:
        """Shutdown, first rung: the job coordinator stops and no actor starts a new job row
        (rows in flight are finished); polling goes on until the actors are stopped."""
        self.admitting = False
        self._coordinator_scope.cancel()
        for running in self.hosts.values():
            if running.actor is not None:
                running.actor.stop_admitting()

    async def _run_coordinator(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        assert self.jobs is not None
        with self._coordinator_scope:
            await self.jobs.run(task_status=task_status)

    def request_reconcile(self) -> None:
        self._reconcile_requested.set()

    async def reconcile_now(self) -> None:
        """Ask for a reconcile and wait until one that *started after this call* completed
        (one already under way may have read the host list before the caller's change)."""
        wanted = self._reconciles_started + 1
        self.request_reconcile()
        while self._reconciles_done < wanted:
            await self._reconciled.wait()

    def refresh(self, host_ids: Sequence[int] | None = None) -> int:
        """Poll now (all hosts when ``host_ids`` is None). Failed hosts are restarted."""
        count = 0
        for host_id in self.hosts if host_ids is None else host_ids:
            running = self.hosts.get(host_id)
            if running is None:
                continue
            if running.supervision.failed:
                self._stop(host_id)
                self._start(running.row)
            elif running.actor is not None:
                running.actor.request_refresh()
            count += 1
        return count

    def _job_row_final(self) -> None:
        if self.jobs is not None:
            self.jobs.poke()

    def _host_blocked(self, host_id: int) -> str:
        """Why a host cannot run job rows now ("" when it can); the coordinator skips the rows
        of such a host (at once for apply-now jobs, when the window closes otherwise)."""
        running = self.hosts.get(host_id)
        if running is None:
            return self._unknown_host(host_id)
        if running.policy.paused:
            return "the host is paused"
        if running.supervision.failed:
            return "the host's actor failed (crashed too often)"
        return ""

    def _unknown_host(self, host_id: int) -> str:
        """A host without an actor: refused by the address policy (its rows wait, as before),
        added since the last reconcile (not started yet: ""), or removed. A removed host's
        rows that were not final were cancelled (an UPDATE, since migration 0011), but a failed
        row the rollout would retry stays: it must end skipped, or its job never does. Unknown
        at a reconcile that started after it was first asked about: removed."""
        if host_id in self.refused:
            return ""
        first = self._unknown.setdefault(host_id, self._reconciles_started)
        if self._reconciles_done > first:
            return "the host was removed"
        self.request_reconcile()
        return ""

    def _wake_runners(self, host_ids: list[int]) -> None:
        for host_id in host_ids:
            running = self.hosts.get(host_id)
            if running is not None and running.actor is not None:
                running.actor.wake_jobs()

    def _job_changed(self, change: JobChange) -> None:
        self.job_changes.publish(change)

    def policy_of(self, host_id: int) -> EffectivePolicy | None:
        running = self.hosts.get(host_id)
        return None if running is None else host_policy(self.config.current, running.row)

    # -- main loop --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.running = True
            self.heartbeat = trio.current_time()
            try:
                await nursery.start(self._watch_directory)
                nursery.start_soon(self._follow_config)
                nursery.start_soon(self.heap.run)
                await self._reconcile()
                if self.jobs is not None:
                    await nursery.start(self._run_coordinator)
                task_status.started()
                next_reconcile = trio.current_time() + self.reconcile_interval
                deadline = trio.current_time() + self.tick
                while True:
                    with trio.move_on_at(min(deadline, next_reconcile)):
                        await self._reconcile_requested.wait()
                    self.heartbeat = trio.current_time()
                    # The next beat is one tick after the last one due, however often a
                    # reconcile request woke the loop early meanwhile.
                    if self.heartbeat >= deadline:
                        deadline += self.tick
                        if deadline <= self.heartbeat:  # fell behind: do not try to catch up
                            deadline = self.heartbeat + self.tick
                    if self._reconcile_requested.is_set() or self.heartbeat >= next_reconcile:
                        self._reconcile_requested = trio.Event()
                        await self._reconcile()
                        next_reconcile = trio.current_time() + self.reconcile_interval
            finally:
                self.running = False
                nursery.cancel_scope.cancel()

    async def _reconcile(self) -> None:
        self._reconciles_started += 1
        number = self._reconciles_started
        try:
            await self._reconcile_once()
        finally:
            self._reconciles_done = number
            self._reconciled.set()
            self._reconciled = trio.Event()

    async def _reconcile_once(self) -> None:
        try:
            rows = await self.directory.list_hosts()
        except Exception as exc:  # the database may be down: keep the running set
            log.warning("cannot read the host list: %s", exc)
            return
        desired = {row.id: row for row in rows}
        for host_id in [h for h in self.hosts if h not in desired]:
            log.info(
                "host removed: stopping its actor", extra={"host": self.hosts[host_id].row.name}
            )
            self._stop(host_id)
            self.fleet.remove(host_id)
            self.sink.forget(host_id)  # its queued state writes would fail (row deleted)
        for host_id in [h for h in self.refused if h not in desired]:
            del self.refused[host_id]
            self.fleet.remove(host_id)
        config = self.config.current
        addresses = AddressPolicy.from_config(config)
        for host_id, row in desired.items():
            if self._refuse(addresses, row):
                continue
            running = self.hosts.get(host_id)
            if running is None:
                self._unknown.pop(host_id, None)
                self._start(row)
                continue
            if (row.address, row.port, row.name) != (running.row.address, running.row.port,
                                                     running.row.name):  # fmt: skip
                self._stop(host_id)
                self._start(row)
                continue
            running.row = row
            self._apply_policy(running, host_policy(config, row).policy)

    def _refuse(self, addresses: AddressPolicy, row: HostRow) -> bool:
        """Registration checks the address policy; a stored row is checked again at every
        reconcile, so a reload that narrows ``agents.allow_addresses`` stops polling a host it
        now refuses (its snapshot says why) and one that widens it starts the actor again."""
        refusal = addresses.refusal(row.address, row.port) if row.address else None
        if refusal is None:
            if self.refused.pop(row.id, None) is not None:
                log.info("host address permitted again: starting its actor",
                         extra={"host_id": row.id, "host": row.name})  # fmt: skip
            return False
        reason = f"address refused by the address policy: {refusal}"
        if row.id in self.hosts:
            log.warning("%s: stopping its actor", reason,
                        extra={"host_id": row.id, "host": row.name})  # fmt: skip
            self._stop(row.id)
        if self.refused.get(row.id) != reason:
            self.refused[row.id] = reason
            before = self.fleet.get(row.id)  # polled before: its data's age stays known
            refused = HostSnapshot(row.id, row.name, phase=Phase.REFUSED, health_reason=reason,
                                   last_error=reason, last_error_at=self.wall())  # fmt: skip
            if before is not None:
                refused = replace(refused, health_as_of=before.health_as_of,
                                  patches_as_of=before.patches_as_of)  # fmt: skip
            self.fleet.publish(refused)
        return True

    async def _watch_directory(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The host-directory listener, restarted after any error: a failure there is logged
        and waited out, never the end of the process (a reconcile every
        ``reconcile_interval`` keeps the actors right meanwhile)."""
        failures = 0
        reported = False
        while True:
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.directory.watch, self.request_reconcile, self.refresh)
                    if not reported:
                        reported = True
                        task_status.started()
                return
            except Exception as exc:  # contained: logged, waited out, restarted
                delay = min(2.0**failures, 60.0)
                failures += 1
                log.error("host-directory listener failed, restarting in %.0fs: %s", delay,
                          exc, exc_info=exc)  # fmt: skip
            if not reported:
                reported = True
                task_status.started()
            await trio.sleep(delay)
            self.request_reconcile()  # changes may have been missed meanwhile

    async def _follow_config(self) -> None:
        version = self.config.version
        while True:
            version, config = await self.config.wait_changed(version)
            changed = 0
            for running in self.hosts.values():
                changed += self._apply_policy(running, host_policy(config, running.row).policy)
            log.info("configuration applied: %d host actor(s) got a new policy", changed)
            self.request_reconcile()  # the address policy may refuse or permit stored hosts

    def _apply_policy(self, running: RunningHost, policy: PollingPolicy) -> bool:
        if policy == running.policy:
            return False
        running.policy = policy
        if running.actor is not None:
            running.actor.update_policy(policy)
        return True

    def _start(self, row: HostRow) -> None:
        assert self._nursery is not None
        policy = host_policy(self.config.current, row).policy
        running = RunningHost(row, policy, trio.CancelScope(), SupervisionState())
        self.hosts[row.id] = running
        self.fleet.publish(HostSnapshot(row.id, row.name))
        self._nursery.start_soon(self._supervise, running)

    def _stop(self, host_id: int) -> None:
        running = self.hosts.pop(host_id, None)
        if running is not None:
            running.scope.cancel()

    async def _supervise(self, running: RunningHost) -> None:
        row = running.row
        target = HostTarget(row.id, row.name, row.address or row.name, row.port, row.groups)

        async def start_actor() -> None:
            actor = HostActor(target, running.policy, agent_factory=self.agent_factory,
                              sink=self.sink, fleet=self.fleet,
                              rng=random.Random(self.rng.random()), wall=self.wall,
                              job_store=self.job_store, ingest=self.ingest,
                              on_ingest=self.heap.ingested,
                              on_row_final=self._job_row_final)  # fmt: skip
            running.actor = actor
            actor.admitting = self.admitting
            await actor.run()

        def crashed(state: SupervisionState, delay: float) -> None:
            self._mark(row.id, Phase.RESTARTING, state)

        def failed(state: SupervisionState) -> None:
            self._mark(row.id, Phase.FAILED, state)

        settings = self.config.current.supervision
        with running.scope:
            await supervise(row.name, start_actor, settings, rng=self.rng,
                            state=running.supervision, on_crash=crashed,
                            on_failed=failed)  # fmt: skip

    def _mark(self, host_id: int, phase: Phase, state: SupervisionState) -> None:
        snapshot = self.fleet.get(host_id)
        if snapshot is not None:
            self.fleet.publish(replace(snapshot, phase=phase, crashes=state.crashes,
                                       last_error=state.last_error,
                                       last_error_at=self.wall()))  # fmt: skip

    # -- discovery --------------------------------------------------------------------------

    async def start_discovery(self, cidr: str, *, audit: AuditArg = None) -> Scan:
        """Validate and start a scan; returns at once with its live state.

        Raises ``DiscoveryError`` for a range that cannot be scanned (too large, not IPv4, every
        address refused by the address policy) and ``DiscoveryBusy`` when
        ``discovery.max_concurrent_scans`` scans are running.
        """
        config = self.config.current
        policy = AddressPolicy.from_config(config)
        network = parse_range(cidr, min_prefix_len=config.discovery.min_prefix_len, policy=policy)
        limit = config.discovery.max_concurrent_scans
        if len(self.scans) + self._scans_starting >= limit:
            raise DiscoveryBusy(
                f"{limit} scan(s) are running (discovery.max_concurrent_scans); "
                "try again when one has finished"
            )
        if self._nursery is None or self.ssl_context is None:
            raise DiscoveryError("discovery is not available in this process")
        self._scans_starting += 1  # the slot is taken while the scan row is being created
        try:
            # Up to 65,534 policy checks: off the event loop, which keeps serving meanwhile.
            targets = await trio.to_thread.run_sync(addresses, network, policy)
            total = len(targets)
            scan_id = (
                await self.discovery_store.create(str(network), total, audit)
                if self.discovery_store is not None
                else max(self.scans, default=0) + 1
            )
        finally:
            self._scans_starting -= 1
        state = Scan(scan_id, ScanProgress(str(network), total, 0, 0), trio.CancelScope())
        self.scans[scan_id] = state
        self._nursery.start_soon(self._run_scan, state, network, policy, targets)
        return state

    async def discovery(self, scan_id: int) -> ScanReport | None:
        """A running scan from memory, a finished one from the store; None if unknown."""
        state = self.scans.get(scan_id)
        if state is not None:
            return state.report()
        if self.discovery_store is None:
            return None
        return await self.discovery_store.get(scan_id)

    async def wait_discovery_change(self, scan_id: int) -> ScanProgress | None:
        """Wait for the next progress of a running scan; a finished one answers at once (None
        if the scan is unknown)."""
        state = self.scans.get(scan_id)
        if state is not None:
            await state.changed.wait()
            return state.progress
        report = await self.discovery(scan_id)
        return None if report is None else report.progress

    def cancel_discovery(self, scan_id: int) -> bool:
        """True if the scan was still probing: it ends stored as cancelled. False for a scan
        that is unknown or whose probes already ended (it is, or is being, stored finished)."""
        state = self.scans.get(scan_id)
        if state is None or state.progress.done or not state.probing:
            return False
        state.cancel_requested = True
        state.scope.cancel()
        return True

    async def _run_scan(
        self,
        state: Scan,
        network: ipaddress.IPv4Network,
        policy: AddressPolicy,
        targets: list[str],
    ) -> None:
        config = self.config.current
        assert self.ssl_context is not None

        def publish(p: ScanProgress) -> None:
            state.progress = p
            state.changed.set()
            state.changed = trio.Event()

        def progress(p: ScanProgress) -> None:
            if not p.done:  # "done" is published once the results are stored
                publish(p)

        try:
            with state.scope:
                await scan(network, port=config.agents.port, ssl_context=self.ssl_context,
                           concurrency=config.discovery.concurrency,
                           connect_timeout=config.discovery.connect_timeout_s,
                           on_progress=progress, on_found=state.found.append,
                           policy=policy, targets=targets)  # fmt: skip
            state.probing = False
            # A cancel accepted while probing is a cancelled scan even if the last probe
            # returned before the cancellation was delivered.
            cancelled = state.scope.cancelled_caught or state.cancel_requested
            status = "cancelled" if cancelled else "finished"
            final = replace(state.progress, found=len(state.found), done=True, cancelled=cancelled)
            log.info("discovery of %s %s: %d agent(s) in %d address(es)", network, status,
                     len(state.found), final.total)  # fmt: skip
            if self.discovery_store is not None:
                final = await self._store_scan(state, final, status)
            publish(final)
        finally:
            # Finished scans live in the store, not in memory (the scan's waiters were woken).
            self.scans.pop(state.scan_id, None)

    async def _store_scan(self, state: Scan, final: ScanProgress, status: str) -> ScanProgress:
        """Save the results (shielded: a scan cancelled by shutdown still records its end).

        A storage error is logged and makes the scan failed; it never ends the scheduler
        (issue 10, finding 7). Returns the progress to publish.
        """
        store = self.discovery_store
        assert store is not None
        result = final
        with trio.CancelScope(shield=True):
            try:
                await store.add(state.scan_id, state.found)
                await store.progress(state.scan_id, final, status)
            except Exception as exc:
                log.error("discovery %d: the results of %s could not be stored: %s",
                          state.scan_id, final.cidr, exc, exc_info=True)  # fmt: skip
                error = f"the results could not be stored: {exc}"
                result = replace(final, failed=True, error=error)
                try:
                    await store.progress(state.scan_id, result, "failed", error)
                except Exception as again:
                    log.error("discovery %d: cannot mark the scan failed either: %s",
                              state.scan_id, again)  # fmt: skip
        return result
