"""The host actor: one per managed host, owning its polling, backoff and state (R-3.1 to R-3.6).

Health (+ system info) is polled every ``health_interval_s`` and patches (+ packages) every
``patch_interval_s``, each on a drift-free cadence anchored at a per-host phase offset. A failed
poll is retried after the policy's backoff delays (with jitter, honouring ``Retry-After``); when
the retries are used up the actor returns to its normal cadence. Every change is published as a
new immutable ``HostSnapshot``; state is written through the sink in batches.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar, cast

import trio

from settings import PollingPolicy
from storage import FINAL_ROW_STATES, HostState, JobRow, PatchRow, Transition

from .agent_errors import (
    AdmissionRefused,
    AgentError,
    AgentRequestError,
    RateLimited,
    TransportError,
)
from .agent_records import Health, Package, PatchList, SystemInfo
from .execution import Executor
from .health import (
    HealthState,
    HealthTracker,
    after_agent_problem,
    after_health,
    after_request_failure,
    after_request_success,
    after_transport_failure,
)
from .ports import (
    AgentFactory,
    AgentPort,
    HostSink,
    HostTarget,
    JobAgentPort,
    JobStore,
    diff_patch_data,
)
from .state import FleetState, HostSnapshot, Phase
from .timing import next_deadline, phase_offset, retry_delay

log = logging.getLogger(__name__)

T = TypeVar("T")
Wall = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class HostActor:
    """Polls one host until cancelled. ``request_refresh()`` and ``update_policy()`` may be
    called from any task; both return at once."""

    def __init__(
        self,
        target: HostTarget,
        policy: PollingPolicy,
        *,
        agent_factory: AgentFactory,
        sink: HostSink,
        fleet: FleetState,
        rng: random.Random | None = None,
        wall: Wall = utc_now,
        job_store: JobStore | None = None,
        on_row_final: Callable[[], None] = lambda: None,
    ) -> None:
        self.target = target
        self._on_row_final = on_row_final
        self._job_store = job_store
        self._assigned: list[tuple[JobRow, int]] = []
        self.executor = (
            Executor(
                target.name, target.host_id, job_store, wall=wall, report=self._job_report
            )  # fmt: skip
            if job_store is not None
            else None
        )
        self.policy = policy
        self._agent_factory = agent_factory
        self._sink = sink
        self._fleet = fleet
        self._rng = rng or random.Random()
        self._wall = wall
        self._wake = trio.Event()
        self._refresh = False
        self._policy_changed = False
        self.tracker = HealthTracker()
        self._state: HostState | None = None
        self._known_patches: dict[str, PatchRow] = {}
        self._known_packages: dict[str, str] = {}
        self.snapshot = fleet.get(target.host_id) or HostSnapshot(target.host_id, target.name)
        self.polls = 0

    # -- commands ---------------------------------------------------------------------------

    def request_refresh(self) -> None:
        """Poll health and patches now. Requests made before the poll starts coalesce."""
        self._refresh = True
        self._wake.set()

    def assign(self, job: JobRow, row_id: int) -> None:
        """Run this job row next (after the poll in progress, if any)."""
        if all(r != row_id for _, r in self._assigned):
            self._assigned.append((job, row_id))
            self._wake.set()

    def busy_with(self) -> set[int]:
        return {r for _, r in self._assigned}

    def _job_report(self, row_id: int, state: str, label: str) -> None:
        phase = Phase.RUNNING_JOB if label else self.snapshot.phase
        self._publish(phase=phase, job=label, job_row=row_id, job_state=state)
        if state in FINAL_ROW_STATES:
            self._on_row_final()  # the coordinator rolls the job up now, not at its next tick

    async def _run_jobs(self, agent: AgentPort) -> None:
        assert self.executor is not None
        while self._assigned:
            job, row_id = self._assigned[0]
            self._publish(phase=Phase.RUNNING_JOB, job=f"job {job.id}")
            try:
                await self.executor.run(cast(JobAgentPort, agent), job, row_id)
            finally:
                self._assigned.pop(0)
                self._publish(job="")
            self._refresh = True  # the patch data changed: poll again

    async def _resume_jobs(self, agent: AgentPort) -> None:
        assert self.executor is not None and self._job_store is not None
        for row in await self._job_store.in_flight(self.target.host_id):
            self._publish(phase=Phase.RUNNING_JOB, job=f"job {row.job_id}")
            await self.executor.resume(cast(JobAgentPort, agent), row)
            self._publish(job="")
            self._refresh = True

    def update_policy(self, policy: PollingPolicy) -> None:
        if policy != self.policy:
            self.policy = policy
            self._policy_changed = True
            self._wake.set()

    # -- helpers ----------------------------------------------------------------------------

    def _wall_at(self, deadline: float) -> dt.datetime:
        return self._wall() + dt.timedelta(seconds=deadline - trio.current_time())

    def _publish(self, **changes: object) -> None:
        self.snapshot = replace(self.snapshot, **changes)  # type: ignore[arg-type]
        self._fleet.publish(self.snapshot)

    async def _sleep_until(self, deadline: float, *, jobs_wake: bool = True) -> None:
        """Sleep until ``deadline`` or until woken by a command (a new job only wakes the
        idle loop, not a backoff: a failing host is not hammered because work arrived)."""
        while not (self._refresh or self._policy_changed or (jobs_wake and self._assigned)):
            with trio.move_on_at(deadline) as scope:
                await self._wake.wait()
            self._wake = trio.Event()
            if scope.cancelled_caught:
                return

    def _anchors(self, now: float, first_poll: bool) -> tuple[float, float]:
        key = f"{self.target.host_id}:{self.target.name}"
        h, p = self.policy.health_interval_s, self.policy.patch_interval_s
        if first_poll:
            # Never seen: poll soon (a newly registered host should not wait minutes).
            return now + self._rng.uniform(0, min(1.0, h)), now + self._rng.uniform(0, 1.0)
        return now + phase_offset("h" + key, h), now + phase_offset("p" + key, p)

    # -- main loop --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        stored = await self._sink.load(self.target.host_id)
        self._state = stored.state
        self._known_patches = dict(stored.patches)
        self._known_packages = dict(stored.packages)
        if stored.state is not None and stored.state.health != "pending":
            self.tracker = HealthTracker(base=HealthState(stored.state.health),
                                         base_reason=stored.state.health_reason)  # fmt: skip
        self._publish(phase=Phase.STARTING, health=self.tracker.state,
                      health_reason=self.tracker.reason)  # fmt: skip
        task_status.started()
        agent = self._agent_factory(self.target, self.policy)
        try:
            if self.executor is not None:
                await self._resume_jobs(agent)
            now = trio.current_time()
            never_polled = stored.state is None or stored.state.last_health_poll_at is None
            health_anchor, patch_anchor = self._anchors(now, never_polled)
            next_health, next_patch = health_anchor, patch_anchor
            while True:
                if self._policy_changed:
                    self._policy_changed = False
                    await agent.aclose()
                    agent = self._agent_factory(self.target, self.policy)
                    now = trio.current_time()
                    health_anchor, patch_anchor = self._anchors(now, False)
                    next_health = next_deadline(health_anchor, self.policy.health_interval_s, now)
                    next_patch = next_deadline(patch_anchor, self.policy.patch_interval_s, now)
                if self.policy.paused:
                    self._publish(phase=Phase.PAUSED, next_health_poll=None, next_patch_poll=None)
                    self._refresh = False
                    await self._sleep_until(float("inf"))
                    continue
                if self._assigned and self.executor is not None:
                    await self._run_jobs(agent)
                self._publish(phase=Phase.IDLE, backoff_attempt=0, backoff_until=None,
                              next_health_poll=self._wall_at(next_health),
                              next_patch_poll=self._wall_at(next_patch))  # fmt: skip
                if self._assigned:
                    continue
                await self._sleep_until(min(next_health, next_patch))
                if self._policy_changed:
                    continue
                refresh, self._refresh = self._refresh, False
                now = trio.current_time()
                reachable = True
                if refresh or now >= next_health:
                    reachable = await self._health_cycle(agent)
                    next_health = next_deadline(
                        health_anchor, self.policy.health_interval_s, trio.current_time()
                    )
                if reachable and (refresh or now >= next_patch):
                    await self._patch_cycle(agent)
                if refresh or now >= next_patch:
                    next_patch = next_deadline(
                        patch_anchor, self.policy.patch_interval_s, trio.current_time()
                    )
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await agent.aclose()

    # -- polling with retries ---------------------------------------------------------------

    async def _attempts(
        self, phase: Phase, call: Callable[[], Awaitable[T]], *, retry_transport: bool = True
    ) -> T | None:
        """Run ``call`` with the policy's retries. Returns None when it finally failed.

        With ``retry_transport`` false a transport failure ends the attempt at once: the
        health cadence owns reachability (one backoff sequence per host, not two).
        """
        attempt = 0
        while True:
            self._publish(phase=phase)
            started = trio.current_time()
            try:
                result = await call()
            except AgentError as exc:
                self._fleet.metrics.observe(trio.current_time() - started, ok=False)
                if not self._note_failure(exc):
                    return None
                if not retry_transport and isinstance(exc, TransportError):
                    return None
                delay = retry_delay(attempt, self.policy.backoff_s, self.policy.jitter_ratio,
                                    self._rng, exc.retry_after)  # fmt: skip
                if delay is None:
                    return None
                attempt += 1
                until = trio.current_time() + delay
                self._publish(phase=Phase.BACKING_OFF, backoff_attempt=attempt,
                              backoff_until=self._wall_at(until))  # fmt: skip
                await self._sleep_until(until, jobs_wake=False)
                if self._policy_changed:
                    return None
                self._refresh = False  # a refresh during backoff means: retry now
                continue
            self.polls += 1
            self._fleet.metrics.observe(trio.current_time() - started, ok=True)
            return result

    def _note_failure(self, exc: AgentError) -> bool:
        """Update health for a failure; True if retrying may help."""
        message = exc.message
        if isinstance(exc, TransportError) and exc.transient:
            self.tracker = after_transport_failure(self.tracker, message)
        elif isinstance(exc, RateLimited | AdmissionRefused):
            pass  # reachable and alive: just wait as asked
        elif isinstance(exc, AgentRequestError) and exc.transient:
            self.tracker = after_request_failure(self.tracker, message)
        else:
            self.tracker = after_agent_problem(self.tracker, message)
        now = self._wall()
        self._record(last_error=message, last_error_at=now)
        log.warning("poll failed: %s", message, extra={"host": self.target.name})
        return exc.transient

    async def _health_cycle(self, agent: AgentPort) -> bool:
        async def poll() -> tuple[Health, SystemInfo]:
            return await agent.health(), await agent.system_info()

        result = await self._attempts(Phase.POLLING_HEALTH, poll)
        if result is None:
            return self.tracker.state is not HealthState.UNREACHABLE
        health, info = result
        self.tracker = after_health(self.tracker, health)
        now = self._wall()
        previous = self._state
        rebooted = (previous is not None and previous.uptime_seconds is not None
                    and health.uptime_seconds < previous.uptime_seconds)  # fmt: skip
        if rebooted:
            log.info("host rebooted (uptime %ds)", health.uptime_seconds,
                     extra={"host": self.target.name})  # fmt: skip
        self._record(
            last_seen_at=now, last_health_poll_at=now, last_error="",
            hostname=info.hostname, os=info.os, os_version=info.os_version, kernel=info.kernel,
            architecture=info.architecture, agent_version=health.version,
            uptime_seconds=health.uptime_seconds,
            last_boot_at=now - dt.timedelta(seconds=health.uptime_seconds),
            pending_reboot=info.pending_reboot, package_db_clean=info.package_db_clean,
            crl_status=health.crl_status or "", gpg_key_status=health.gpg_key_status or "",
        )  # fmt: skip
        return True

    async def _patch_cycle(self, agent: AgentPort) -> None:
        async def poll() -> tuple[PatchList, tuple[Package, ...]]:
            return await agent.patches(), await agent.packages()

        result = await self._attempts(Phase.POLLING_PATCHES, poll, retry_transport=False)
        if result is None:
            return
        patches, packages = result
        self.tracker = after_request_success(self.tracker)
        diff = diff_patch_data(self._known_patches, self._known_packages, patches, packages)
        now = self._wall()
        if diff:
            await self._sink.write_patches(self.target.host_id, diff, now)
            for row in diff.upserts:
                self._known_patches[row.name] = row
            for name in diff.resolved:
                self._known_patches.pop(name, None)
            self._known_packages.update(dict(diff.package_upserts))
            for name in diff.package_deletes:
                self._known_packages.pop(name, None)
        self._record(
            last_seen_at=now, last_patch_poll_at=now,
            pending_patches=len(patches.patches),
            security_patches=sum(p.severity in ("critical", "high") for p in patches.patches),
            reboot_patches=sum(p.requires_reboot for p in patches.patches),
        )  # fmt: skip

    def _record(self, **changes: object) -> None:
        """Fold changes into the host state; submit it (with a transition if health moved)."""
        error_at = changes.pop("last_error_at", self.snapshot.last_error_at)
        old = self._state or HostState(
            health="pending", health_reason="", last_seen_at=None, last_health_poll_at=None,
            last_patch_poll_at=None, last_error="", hostname="", os="", os_version="", kernel="",
            architecture="", agent_version="", uptime_seconds=None, last_boot_at=None,
            pending_reboot=False, package_db_clean=None, crl_status="", gpg_key_status="",
            pending_patches=0, security_patches=0, reboot_patches=0,
        )  # fmt: skip
        new = replace(old, health=self.tracker.state.value, health_reason=self.tracker.reason,
                      **changes)  # type: ignore[arg-type]  # fmt: skip
        transition = None
        if new.health != old.health:
            transition = Transition(self.target.host_id, self._wall(), old.health, new.health,
                                    new.health_reason)  # fmt: skip
            log.info("health %s -> %s %s", old.health, new.health, new.health_reason,
                     extra={"host": self.target.name})  # fmt: skip
        self._state = new
        self._sink.submit_state(self.target.host_id, new, transition)
        self._publish(
            health=self.tracker.state, health_reason=self.tracker.reason,
            last_success=new.last_seen_at, last_error=new.last_error,
            last_error_at=error_at,
            pending_patches=new.pending_patches, security_patches=new.security_patches,
            pending_reboot=new.pending_reboot, agent_version=new.agent_version, os=new.os,
            hostname=new.hostname, uptime_seconds=new.uptime_seconds,
        )  # fmt: skip
