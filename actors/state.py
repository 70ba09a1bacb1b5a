"""Live actor state: one immutable snapshot per host and a broadcaster of changes (R-3.4).

Publishers never block: every subscriber has a bounded buffer, and a subscriber whose buffer is
full is dropped (its stream ends) and counted. Slow browsers never slow the actors.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import trio

from .health import HealthState


class Phase(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    POLLING_HEALTH = "polling_health"
    POLLING_PATCHES = "polling_patches"
    BACKING_OFF = "backing_off"
    RUNNING_JOB = "running_job"
    AGENT_WS = "agent_ws"
    PAUSED = "paused"
    WAITING_FOR_DATABASE = "waiting_for_database"  # storage trouble: waited out, not a crash
    RESTARTING = "restarting"  # crashed, restart scheduled
    FAILED = "failed"  # crashed too often; supervision gave up
    REFUSED = "refused"  # the address policy refuses its stored address: no actor, no polls


@dataclass(frozen=True)
class HostSnapshot:
    """One host actor as observers see it. ``phase`` is the poller's; the job half shows in
    ``job``/``job_state``; ``summary`` (derived, never passed) says both in one line, e.g.
    ``polling: healthy · job 12 running``."""

    host_id: int
    name: str
    phase: Phase = Phase.STARTING
    health: HealthState = HealthState.PENDING
    health_reason: str = ""
    last_success: dt.datetime | None = None
    last_error: str = ""
    last_error_at: dt.datetime | None = None
    next_health_poll: dt.datetime | None = None
    next_patch_poll: dt.datetime | None = None
    backoff_attempt: int = 0
    backoff_until: dt.datetime | None = None
    pending_patches: int = 0
    security_patches: int = 0
    pending_reboot: bool = False
    agent_version: str = ""
    os: str = ""
    hostname: str = ""
    uptime_seconds: int | None = None
    crashes: int = 0
    job: str = ""  # the job the actor is running, if any
    job_row: int = 0  # the job row it last reported on, and that row's state
    job_state: str = ""
    # Freshness (issue 16): when the data shown was last fetched, when it is too old for the
    # host's polling interval, and, while the health poll is failing, since when, how many of
    # the ladder's retries are used and when the next attempt is.
    health_as_of: dt.datetime | None = None  # last successful health poll
    patches_as_of: dt.datetime | None = None  # last successful patch poll
    stale_after: dt.datetime | None = None  # health data older than this is stale
    stale_by_patches: bool = False  # stale_after comes from the patch data's age
    failing_since: dt.datetime | None = None  # first failure of the current failing streak
    retries_used: int = 0
    retries_total: int = 0
    next_attempt: dt.datetime | None = None
    health_since: dt.datetime | None = None  # the last health transition this actor saw
    # The patch poll failing while health polls pass (its own ladder, ``retries_total`` long).
    patch_failing_since: dt.datetime | None = None
    patch_retries_used: int = 0
    patch_next_attempt: dt.datetime | None = None
    summary: str = field(init=False, default="")
    condition: str = field(init=False, default="")  # see condition_of

    def __post_init__(self) -> None:
        object.__setattr__(self, "summary", describe(self))
        object.__setattr__(self, "condition", condition_of(self))


_PARKED = {
    Phase.PAUSED: "paused",
    Phase.FAILED: "failed (crashed too often)",
    Phase.RESTARTING: "restarting after a crash",
    Phase.WAITING_FOR_DATABASE: "waiting for the database",
    Phase.STARTING: "starting",
}


HALTED = frozenset({Phase.FAILED, Phase.RESTARTING, Phase.WAITING_FOR_DATABASE, Phase.REFUSED})
STALE_FACTOR = 2.0  # a host is stale after this many health intervals without a success


def stale_after(
    health_as_of: dt.datetime | None,
    interval_s: float,
    grace_s: float,
    *,
    patches_as_of: dt.datetime | None = None,
    patch_interval_s: float = 0,
) -> dt.datetime | None:
    """When data polled at ``health_as_of`` becomes stale: two missed polls (a re-anchored
    cadence can leave up to two intervals between polls) plus ``grace_s`` for the poll itself;
    sooner if the patch data (``patches_as_of``) is older than two of its intervals plus grace
    (patch polls failing while health polls pass)."""
    if health_as_of is None:
        return None
    due = health_as_of + dt.timedelta(seconds=interval_s * STALE_FACTOR + grace_s)
    if patches_as_of is not None and patch_interval_s:
        due = min(due, patches_as_of + dt.timedelta(seconds=patch_interval_s * STALE_FACTOR
                                                     + grace_s))  # fmt: skip
    return due


def condition_of(snapshot: HostSnapshot) -> str:
    """What a host is as far as its data supports, without the clock: ``unknown`` (never
    polled successfully), ``paused``, ``failing`` (its health poll fails but the host is not yet
    unreachable) or its health. Readers turn ``healthy``/``degraded`` into ``stale`` once
    ``stale_after`` has passed (time passing publishes nothing). An actor that crashed, is
    restarting or waits for the database, or a host whose address is refused, polls nothing:
    ``halted``, whatever its last data."""
    if snapshot.phase in HALTED:
        return "halted"
    if snapshot.health_as_of is None and snapshot.health is HealthState.PENDING:
        return "unknown"
    if snapshot.phase is Phase.PAUSED:
        return "paused"
    if snapshot.failing_since is not None and snapshot.health is not HealthState.UNREACHABLE:
        return "failing"
    if snapshot.health is HealthState.PENDING:
        return "unknown"
    return str(snapshot.health.value)


def describe(snapshot: HostSnapshot) -> str:
    """Both halves of a host actor in one line: the poller, then the job runner."""
    parked = _PARKED.get(snapshot.phase)
    if snapshot.phase is Phase.REFUSED:
        polling = f"not polled: {snapshot.last_error}"
    elif parked is not None:
        polling = parked
    else:
        polling = f"polling: {snapshot.health.value}"
        if snapshot.backoff_until is not None:
            polling += f", backing off until {snapshot.backoff_until:%H:%M:%S}"
    if not snapshot.job:
        return polling
    return f"{polling} · {snapshot.job} {snapshot.job_state or 'running'}"


@dataclass(frozen=True)
class SnapshotChange:
    """One change: the new snapshot, or ``removed`` with the last one."""

    snapshot: HostSnapshot
    removed: bool = False


@dataclass(frozen=True)
class BroadcastStatistics:
    subscribers: int
    published: int
    dropped_subscribers: int


POLL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class PollMetrics:
    """Counters of agent polls for /metrics (cheap enough to update on every poll)."""

    ok: int = 0
    failed: int = 0
    seconds_sum: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(POLL_BUCKETS))

    def observe(self, seconds: float, ok: bool) -> None:
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        self.seconds_sum += seconds
        for index, bound in enumerate(POLL_BUCKETS):
            if seconds <= bound:
                self.buckets[index] += 1
                break


@dataclass
class _Subscriber:
    send: trio.MemorySendChannel[SnapshotChange]
    receive: trio.MemoryReceiveChannel[SnapshotChange]


@dataclass
class FleetState:
    """Latest snapshot of every host, plus change notifications to any number of subscribers."""

    buffer: int = 1024
    metrics: PollMetrics = field(default_factory=PollMetrics)
    _snapshots: dict[int, HostSnapshot] = field(default_factory=dict)
    _subscribers: list[_Subscriber] = field(default_factory=list)
    _published: int = 0
    _dropped: int = 0
    _changed: trio.Event = field(default_factory=trio.Event)

    def get(self, host_id: int) -> HostSnapshot | None:
        return self._snapshots.get(host_id)

    def snapshots(self) -> list[HostSnapshot]:
        return list(self._snapshots.values())

    def publish(self, snapshot: HostSnapshot) -> None:
        if self._snapshots.get(snapshot.host_id) == snapshot:
            return
        self._snapshots[snapshot.host_id] = snapshot
        self._fan_out(SnapshotChange(snapshot))

    def remove(self, host_id: int) -> None:
        snapshot = self._snapshots.pop(host_id, None)
        if snapshot is not None:
            self._fan_out(SnapshotChange(snapshot, removed=True))

    def _fan_out(self, change: SnapshotChange) -> None:
        self._published += 1
        for sub in list(self._subscribers):
            try:
                sub.send.send_nowait(change)
            except trio.WouldBlock:
                # Too slow: drop it rather than block or buffer without bound.
                self._subscribers.remove(sub)
                sub.send.close()
                self._dropped += 1
            except trio.ClosedResourceError:
                self._subscribers.remove(sub)
        self._changed.set()
        self._changed = trio.Event()

    @contextmanager
    def subscribe(
        self, buffer: int | None = None
    ) -> Iterator[trio.MemoryReceiveChannel[SnapshotChange]]:
        """Receive every change from now on. The channel ends if the subscriber falls behind
        by more than ``buffer`` changes (take a fresh ``snapshots()`` and subscribe again)."""
        send, receive = trio.open_memory_channel[SnapshotChange](buffer or self.buffer)
        sub = _Subscriber(send, receive)
        self._subscribers.append(sub)
        try:
            yield receive
        finally:
            if sub in self._subscribers:
                self._subscribers.remove(sub)
            send.close()

    async def wait_until(self, predicate: object) -> list[HostSnapshot]:
        """Wait until ``predicate(snapshots)`` is true; return the snapshots (tests, CLI)."""
        assert callable(predicate)
        while True:
            current = self.snapshots()
            if predicate(current):
                return current
            await self._changed.wait()

    def statistics(self) -> BroadcastStatistics:
        return BroadcastStatistics(len(self._subscribers), self._published, self._dropped)
