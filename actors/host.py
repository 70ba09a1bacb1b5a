"""The host actor: one per managed host, owning its polling, backoff and state (R-3.1 to R-3.7).

A host actor is a small nursery of two halves sharing one agent client:

- the **poller** polls health (+ system info) every ``health_interval_s`` and patches
  (+ packages) every ``patch_interval_s``, each on a drift-free cadence anchored at a per-host
  phase offset. Each kind of poll has its own backoff (``backoff_s`` with jitter, honouring
  ``Retry-After``); when a kind's retries are used up it returns to its normal cadence and stays
  there until a poll succeeds (an unreachable host is probed at its normal interval, R-3.2).
  Patch-poll backoff never delays a health poll.
- the **job half** runs the host's job rows; it never blocks the poller.

Storage errors (the database is down) are waited out where they happen: at start the actor
waits for its stored state; an unwritten patch diff is kept and written again later while
polling goes on. Every change is published as a new immutable ``HostSnapshot``.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Protocol, TypeVar, cast, runtime_checkable

import trio

from settings import PollingPolicy
from storage import (
    FINAL_ROW_STATES,
    DatabaseUnavailable,
    HostState,
    Transition,
)

from .agent_errors import (
    AdmissionRefused,
    AgentError,
    AgentRequestError,
    RateLimited,
    TransportError,
)
from .agent_records import Health, Package, PatchList, PatchPoll, SystemInfo
from .apt_check import cross_check
from .health import (
    HealthState,
    HealthTracker,
    after_agent_problem,
    after_health,
    after_request_failure,
    after_request_success,
    after_transport_failure,
)
from .job_runner import JobRunner
from .ports import (
    AgentFactory,
    AgentPort,
    HostSink,
    HostTarget,
    JobAgentPort,
    JobStore,
    digest_of_poll,
)
from .state import FleetState, HostSnapshot, Phase, stale_after
from .timing import next_deadline, phase_offset, retry_delay

log = logging.getLogger(__name__)

T = TypeVar("T")
STORAGE_RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)  # waiting out a database outage
Wall = Callable[[], dt.datetime]


@runtime_checkable
class KeyedPatchData(Protocol):
    """An agent port that also polls patch data with a key (``AgentClient.patch_data``): a
    package list whose key is the stored data's is not decoded at all."""

    async def patch_data(self, unless: bytes = b"") -> PatchPoll: ...


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# The host every log line of an actor's tasks is about: (host id, host name). Set at the start
# of ``HostActor.run``; trio copies it into every task the actor then starts (poller, job
# runner), and ``patch_manager.logs`` adds it to each record.
log_host: contextvars.ContextVar[tuple[int, str] | None] = contextvars.ContextVar(
    "log_host", default=None
)


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
        ingest: trio.CapacityLimiter | None = None,
        on_ingest: Callable[[], None] = lambda: None,
    ) -> None:
        self._on_ingest = on_ingest  # a package list was parsed (the heap trimmer counts them)
        self.target = target
        self._ingest = ingest  # fleet-wide slots for fetching, parsing and storing patch data
        self._on_row_final = on_row_final
        self._job_store = job_store
        self.jobs: JobRunner | None = None  # the job half, once running
        self.policy = policy
        self.admitting = True  # false once shutdown began: no new job rows
        self._agent_factory = agent_factory
        self._sink = sink
        self._fleet = fleet
        self._rng = rng or random.Random()
        self._wall = wall
        self._wake = trio.Event()  # the poller's: refresh or policy change
        self._agent: AgentPort | None = None
        self._job_agent: AgentPort | None = None  # the client a running job uses
        self._retired: list[AgentPort] = []  # replaced clients a running job still uses
        self._health_attempt = 0  # failures of the health poll since its last success
        self._patch_attempt = 0
        self._health_backoff = False  # is the next health deadline a retry?
        self._patch_backoff = False
        self._health_failing = False
        self._failing_since: dt.datetime | None = None  # wall time of the streak's first failure
        self._patch_failing_since: dt.datetime | None = None  # the same for the patch poll
        self._patch_owed = False  # a patch poll was skipped while the host was unreachable
        self._unwritten: tuple[PatchList, tuple[Package, ...], dt.datetime, bytes] | None = None
        # The key (``PatchPoll.key``) of the answers whose data is stored: 16 bytes, empty
        # while unknown (before the first poll, or while a poll's data is not stored yet).
        self._stored_key = b""
        self.unchanged_answers = 0  # patch polls whose package list was not even decoded
        self._next_write = float("inf")
        self._write_failures = 0
        self._refresh = False
        self._policy_changed = False
        self.tracker = HealthTracker()
        self._state: HostState | None = None
        # The stored patch data as a digest only (lean actor: not the maps); a poll with the
        # same digest writes nothing, a changed one is diffed against the database by the sink.
        self._data_digest = b""
        self.snapshot = fleet.get(target.host_id) or HostSnapshot(target.host_id, target.name)
        self.polls = 0
        self.ingest_waits = 0  # patch polls put off because no ingest slot came before health

    # -- commands ---------------------------------------------------------------------------

    def stop_admitting(self) -> None:
        """Shutdown: start no new job row (one in flight is finished); polling goes on."""
        self.admitting = False

    def request_refresh(self) -> None:
        """Poll health and patches now. Requests made before the poll starts coalesce."""
        self._refresh = True
        self._wake.set()

    def wake_jobs(self) -> None:
        """New permits may concern this host: the job half looks at the database now."""
        if self.jobs is not None:
            self.jobs.wake()

    def _job_report(self, row_id: int, state: str, label: str) -> None:
        self._publish(job=label, job_row=row_id, job_state=state)
        if state in FINAL_ROW_STATES:
            self._on_row_final()  # the coordinator rolls the job up now, not at its next tick

    def _lend_job_agent(self) -> JobAgentPort:
        """The client the next job row uses (the current one; kept open while the row runs)."""
        assert self._agent is not None
        self._job_agent = self._agent
        return cast(JobAgentPort, self._agent)

    async def _job_row_done(self) -> None:
        await self._release_job_agent()
        self.request_refresh()  # the patch data changed: poll again

    def update_policy(self, policy: PollingPolicy) -> None:
        if policy != self.policy:
            self.policy = policy
            self._policy_changed = True
            self._wake.set()

    # -- helpers ----------------------------------------------------------------------------

    def _wall_at(self, deadline: float) -> dt.datetime:
        return self._wall() + dt.timedelta(seconds=deadline - trio.current_time())

    def _publish(self, **changes: object) -> None:
        self._stage(**changes)
        self._fleet.publish(self.snapshot)

    def _stage(self, **changes: object) -> None:
        """Change the snapshot without telling observers (the next ``_publish`` does)."""
        self.snapshot = replace(self.snapshot, **changes)  # type: ignore[arg-type]

    async def _sleep_until(self, deadline: float) -> None:
        """Sleep until ``deadline`` or until a refresh or a policy change."""
        while not (self._refresh or self._policy_changed):
            with trio.move_on_at(deadline) as scope:
                await self._wake.wait()
            self._wake = trio.Event()
            if scope.cancelled_caught:
                return

    def _anchors(self, now: float) -> tuple[float, float]:
        """This host's phase on each cadence: a stable offset across the whole interval."""
        key = f"{self.target.host_id}:{self.target.name}"
        h, p = self.policy.health_interval_s, self.policy.patch_interval_s
        return now + phase_offset("h" + key, h), now + phase_offset("p" + key, p)

    def _due(self, last: dt.datetime | None, interval: float, now: float) -> float:
        """When a poll last made at ``last`` (wall clock) is due again, in trio time: one
        interval later, or within the first minute if that has passed (never before now)."""
        if last is None:
            return float("inf")
        left = (last - self._wall()).total_seconds() + interval
        if left > 0:
            return now + left
        return now + self._rng.uniform(0, min(60.0, interval))

    # -- main loop --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll (and run jobs) until cancelled. Waits for the database if it is down at start;
        reports readiness once the stored state is loaded."""
        log_host.set((self.target.host_id, self.target.name))
        stored = await self._wait_for_storage(lambda: self._sink.load(self.target.host_id))
        self._state = stored.state
        self._data_digest = stored.data_digest()
        if stored.state is not None and stored.state.health != "pending":
            self.tracker = HealthTracker(base=HealthState(stored.state.health),
                                         base_reason=stored.state.health_reason)  # fmt: skip
        if stored.state is not None:
            self._stage(health_as_of=stored.state.last_health_poll_at,
                        patches_as_of=stored.state.last_patch_poll_at,
                        health_since=stored.health_since)  # fmt: skip
        self._stage_freshness()
        self._publish(phase=Phase.STARTING, health=self.tracker.state,
                      health_reason=self.tracker.reason)  # fmt: skip
        task_status.started()
        never_polled = stored.state is None or stored.state.last_health_poll_at is None
        self._agent = self._agent_factory(self.target, self.policy)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._poller, never_polled)
                if self._job_store is not None:
                    nursery.start_soon(self._job_half)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                for agent in {id(a): a for a in (self._agent, *self._retired)}.values():
                    await agent.aclose()

    async def _wait_for_storage(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, retried while the database is unavailable (shown, never a crash)."""
        failures = 0
        while True:
            try:
                return await call()
            except DatabaseUnavailable as exc:
                if failures == 0:
                    log.warning("waiting for the database: %s", exc,
                                extra={"host": self.target.name})  # fmt: skip
                self._publish(phase=Phase.WAITING_FOR_DATABASE)
                await trio.sleep(STORAGE_RETRY_S[min(failures, len(STORAGE_RETRY_S) - 1)])
                failures += 1

    async def _replace_agent(self) -> None:
        old, self._agent = self._agent, self._agent_factory(self.target, self.policy)
        if old is None:
            return
        if old is self._job_agent:
            self._retired.append(old)  # the job half closes it when it is done with it
        else:
            await old.aclose()

    async def _job_half(self) -> None:
        """The job runner, in its own task: the poller never waits for it."""
        assert self._job_store is not None
        self.jobs = JobRunner(
            self.target.name,
            self.target.host_id,
            self._lend_job_agent,
            self._job_store,
            report=self._job_report,
            wall=self._wall,
            paused=lambda: self.policy.paused or not self.admitting,
            admitting=lambda: self.admitting,
            after_row=self._job_row_done,
            unreachable_backoff=self.policy.backoff_s,
        )
        try:
            await self.jobs.run()
        finally:
            self._job_agent = None

    async def _release_job_agent(self) -> None:
        agent, self._job_agent = self._job_agent, None
        if agent is not None and agent in self._retired:
            self._retired.remove(agent)
            await agent.aclose()

    async def _poller(self, never_polled: bool) -> None:
        now = trio.current_time()
        health_anchor, patch_anchor = self._anchors(now)
        if never_polled:
            # Never seen: poll soon (a new host should not wait minutes), then settle on the
            # per-host phase (hosts registered together must not stay in lock-step).
            next_health = next_patch = now + self._rng.uniform(
                0, min(1.0, self.policy.health_interval_s)
            )
        else:
            # A restart does not stretch a host's cadence: each first poll comes at the host's
            # phase or one interval after the last poll before the restart, whichever is
            # sooner (hosts already overdue spread over the first minute).
            next_health = min(
                health_anchor,
                self._due(self.snapshot.health_as_of, self.policy.health_interval_s, now),
            )
            next_patch = min(
                patch_anchor,
                self._due(self.snapshot.patches_as_of, self.policy.patch_interval_s, now),
            )
        while True:
            if self._policy_changed:
                self._policy_changed = False
                await self._replace_agent()
                now = trio.current_time()
                health_anchor, patch_anchor = self._anchors(now)
                next_health = next_deadline(health_anchor, self.policy.health_interval_s, now)
                next_patch = next_deadline(patch_anchor, self.policy.patch_interval_s, now)
                self._health_backoff = self._patch_backoff = False
                self._stage_freshness()
            if self.policy.paused:
                self._publish(phase=Phase.PAUSED, next_health_poll=None, next_patch_poll=None,
                              backoff_attempt=0, backoff_until=None)  # fmt: skip
                self._refresh = False
                await self._sleep_until(float("inf"))
                continue
            self._publish_schedule(next_health, next_patch)
            await self._sleep_until(min(next_health, next_patch, self._next_write))
            if self._policy_changed:
                continue
            refresh, self._refresh = self._refresh, False
            now = trio.current_time()
            if now >= self._next_write:
                await self._write_patch_data()
            health_polled = refresh or now >= next_health
            if health_polled:
                next_health = await self._health_poll(health_anchor)
            owed = self._patch_owed and health_polled and not self._health_failing
            if refresh or owed or now >= next_patch:
                # Waiting for an ingest slot never delays a due health poll: the wait ends
                # when the next one is due, the health poll is made and the patch poll (still
                # due: ``next_patch`` is now) waits again.
                next_patch = await self._patch_poll(patch_anchor, next_health)

    def _publish_schedule(self, next_health: float, next_patch: float) -> None:
        backing = [d for d, b in ((next_health, self._health_backoff),
                                  (next_patch, self._patch_backoff)) if b]  # fmt: skip
        self._publish(
            phase=Phase.BACKING_OFF if backing else Phase.IDLE,
            backoff_attempt=max(self._health_attempt if self._health_backoff else 0,
                                self._patch_attempt if self._patch_backoff else 0),
            backoff_until=self._wall_at(min(backing)) if backing else None,
            next_health_poll=self._wall_at(next_health),
            next_patch_poll=self._wall_at(next_patch),
            retries_used=min(self._health_attempt, len(self.policy.backoff_s)),
            retries_total=len(self.policy.backoff_s),
            next_attempt=self._wall_at(next_health) if self._health_failing else None,
            patch_retries_used=min(self._patch_attempt, len(self.policy.backoff_s)),
            patch_next_attempt=(self._wall_at(next_patch)
                                if self._patch_failing_since is not None else None),
        )  # fmt: skip

    def _stage_freshness(self) -> None:
        """``stale_after`` for the current data and polling interval (the grace covers one
        health poll: a connect and two requests)."""
        grace = self.policy.connect_timeout_s + 2 * self.policy.request_timeout_s
        due = stale_after(self.snapshot.health_as_of, self.policy.health_interval_s, grace,
                          patches_as_of=self.snapshot.patches_as_of,
                          patch_interval_s=self.policy.patch_interval_s)  # fmt: skip
        by_health = stale_after(self.snapshot.health_as_of, self.policy.health_interval_s, grace)
        self._stage(stale_after=due, stale_by_patches=due != by_health)

    # -- one poll of each kind --------------------------------------------------------------

    async def _try(
        self, phase: Phase, call: Callable[[], Awaitable[T]], *, health_poll: bool
    ) -> T | AgentError:
        """One attempt; the failure (already noted in the health tracker) is returned."""
        self._publish(phase=phase)
        started = trio.current_time()
        try:
            result = await call()
        except AgentError as exc:
            self._fleet.metrics.observe(trio.current_time() - started, ok=False)
            self._note_failure(exc, health_poll=health_poll)
            return exc
        self.polls += 1
        self._fleet.metrics.observe(trio.current_time() - started, ok=True)
        return result

    def _unreachable(self) -> bool:
        return self.tracker.state is HealthState.UNREACHABLE

    def _retry_at(self, attempt: int, exc: AgentError) -> float | None:
        """When to retry after failure number ``attempt`` (0-based), or None: normal cadence."""
        if not exc.transient:
            return None
        delay = retry_delay(attempt, self.policy.backoff_s, self.policy.jitter_ratio,
                            self._rng, exc.retry_after)  # fmt: skip
        return None if delay is None else trio.current_time() + delay

    def _note_failure(self, exc: AgentError, *, health_poll: bool) -> None:
        """Update health for a failure."""
        message = exc.message
        if isinstance(exc, TransportError) and exc.transient:
            if self.snapshot.job_state != "rebooting":  # a reboot we asked for: expected
                self.tracker = after_transport_failure(self.tracker, message)
        elif isinstance(exc, RateLimited | AdmissionRefused):
            pass  # reachable and alive: just wait as asked
        elif isinstance(exc, AgentRequestError) and exc.transient:
            self.tracker = after_request_failure(self.tracker, message, health_poll=health_poll)
        else:
            self.tracker = after_agent_problem(self.tracker, message, patch_poll=not health_poll)
        now = self._wall()
        self._record(last_error=message, last_error_at=now)
        log.warning("poll failed: %s", message, extra={"host": self.target.name})

    async def _health_poll(self, anchor: float) -> float:
        """Poll health + system info once; return when to poll health next."""
        agent = self._agent
        assert agent is not None

        async def poll() -> tuple[Health, SystemInfo]:
            return await agent.health(), await agent.system_info()

        result = await self._try(Phase.POLLING_HEALTH, poll, health_poll=True)
        grid = next_deadline(anchor, self.policy.health_interval_s, trio.current_time())
        if isinstance(result, AgentError):
            self._health_failing = True
            if self._failing_since is None:
                self._failing_since = self._wall()
                self._stage(failing_since=self._failing_since)
            retry = self._retry_at(self._health_attempt, result)
            # Ladder used up: stay on the normal cadence (no new ladder) until a poll succeeds.
            self._health_backoff = retry is not None
            if retry is None:
                return grid
            self._health_attempt += 1
            return retry
        self._health_failing = self._health_backoff = False
        self._health_attempt = 0
        health, info = result
        self.tracker = after_health(self.tracker, health)
        now = self._wall()
        self._failing_since = None
        self._stage(failing_since=None, next_attempt=None, retries_used=0, health_as_of=now)
        self._stage_freshness()
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
        return grid

    async def _patch_poll(self, anchor: float, health_due: float = float("inf")) -> float:
        """``_fetch_patch_data`` in one of the fleet's ingest slots: at most that many hosts
        fetch, parse and store a package list at once (a sweep's transient heap stays small,
        so fewer allocator arenas are left pinned by survivors afterwards). The slot is waited
        for only until ``health_due`` (the next health poll); then the patch poll is still
        due (returns now) and is tried again right after that health poll. The slot is held
        across the fetch (the agent client parses as it fetches) and the store, never while
        waiting: a host without a slot holds no package data."""
        if self._ingest is None:
            return await self._fetch_patch_data(anchor)
        acquired = False
        with trio.move_on_at(health_due):  # only the wait: a fetch under way is never cut
            await self._ingest.acquire()
            acquired = True
        if not acquired:
            self.ingest_waits += 1
            return trio.current_time()
        try:
            return await self._fetch_patch_data(anchor)
        finally:
            self._ingest.release()

    async def _fetch_patch_data(self, anchor: float) -> float:
        """Poll patches + packages once; return when to poll patches next. While the host is
        unreachable (or its health poll is failing) the poll is owed and made right after the
        next successful health poll: reachability has one backoff, the health poll's. A host
        that answers health but fails this poll retries it along its own ladder."""
        agent = self._agent
        assert agent is not None
        grid = next_deadline(anchor, self.policy.patch_interval_s, trio.current_time())
        if self._health_failing or self.tracker.state is HealthState.UNREACHABLE:
            self._owe_patch_poll()
            return grid

        async def poll() -> PatchPoll:
            if isinstance(agent, KeyedPatchData):
                return await agent.patch_data(self._stored_key)
            return PatchPoll(await agent.patches(), await agent.packages(), b"")

        result = await self._try(Phase.POLLING_PATCHES, poll, health_poll=False)
        grid = next_deadline(anchor, self.policy.patch_interval_s, trio.current_time())
        if isinstance(result, AgentError):
            # (read again: the failed poll itself may have made the host unreachable)
            unreachable = self._health_failing or self._unreachable()
            if isinstance(result, TransportError) and unreachable:
                self._owe_patch_poll()
                return grid
            # The host answers its health poll but not this one (e.g. /patches times out):
            # the patch poll backs off on its own ladder instead of being re-run (and blocking
            # the poller for up to 2 x request_timeout) after every successful health poll.
            self._patch_owed = False
            if self._patch_failing_since is None:
                self._patch_failing_since = self._wall()
                self._stage(patch_failing_since=self._patch_failing_since)
            retry = self._retry_at(self._patch_attempt, result)
            self._patch_backoff = retry is not None
            if retry is None:
                return grid
            self._patch_attempt += 1
            return retry
        self._patch_owed = self._patch_backoff = False
        self._patch_attempt = 0
        self._patch_failing_since = None
        self._stage(patch_failing_since=None, patch_next_attempt=None, patch_retries_used=0)
        patches, packages = result.patches, result.packages
        self.tracker = after_request_success(self.tracker)
        now = self._wall()
        if packages is None:  # the very answers whose data is stored: nothing to write
            self.unchanged_answers += 1
        else:
            self._on_ingest()
            patches = cross_check(patches, packages)  # agent-api §3.10: apt's version columns
            self._unwritten = (patches, packages, now, result.key)
            self._stored_key = b""
            await self._write_patch_data()
        self._record(
            last_seen_at=now, last_patch_poll_at=now,
            pending_patches=len(patches.patches),
            security_patches=sum(p.severity in ("critical", "high") for p in patches.patches),
            reboot_patches=sum(p.requires_reboot for p in patches.patches),
        )  # fmt: skip
        return grid

    def _owe_patch_poll(self) -> None:
        """The host is unreachable: the patch poll is made right after the next successful
        health poll, and the health poll's failing line says it all (no patch ladder)."""
        self._patch_owed = True
        self._patch_backoff = False
        self._patch_attempt = 0
        self._patch_failing_since = None
        self._stage(patch_failing_since=None, patch_next_attempt=None, patch_retries_used=0)

    async def _write_patch_data(self) -> None:
        """Store the last polled patch data (as a diff). While the database is down the data
        is kept and written again later; polling goes on meanwhile."""
        self._next_write = float("inf")
        if self._unwritten is None:
            return
        patches, packages, at, key = self._unwritten
        digest = digest_of_poll(patches, packages)
        if digest != self._data_digest:
            try:
                await self._sink.write_patch_data(self.target.host_id, patches, packages, at)
            except DatabaseUnavailable as exc:
                delay = STORAGE_RETRY_S[min(self._write_failures, len(STORAGE_RETRY_S) - 1)]
                if self._write_failures == 0:
                    log.warning("patch data not stored yet, retrying: %s", exc,
                                extra={"host": self.target.name})  # fmt: skip
                self._write_failures += 1
                self._next_write = trio.current_time() + delay
                return
            self._data_digest = digest
        self._unwritten = None
        self._stored_key = key
        self._write_failures = 0

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
        if transition is not None:
            self._stage(health_since=transition.at)
        if new.last_patch_poll_at is not None:
            self._stage(patches_as_of=new.last_patch_poll_at)
            self._stage_freshness()  # stale_after also depends on the patch data's age
        self._publish(
            health=self.tracker.state, health_reason=self.tracker.reason,
            last_success=new.last_seen_at, last_error=new.last_error,
            last_error_at=error_at,
            pending_patches=new.pending_patches, security_patches=new.security_patches,
            pending_reboot=new.pending_reboot, agent_version=new.agent_version, os=new.os,
            hostname=new.hostname, uptime_seconds=new.uptime_seconds,
        )  # fmt: skip
