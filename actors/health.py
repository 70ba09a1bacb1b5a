"""The host health model (R-3.3) as pure state transitions. No trio, no I/O.

``pending`` (never seen) → ``healthy`` / ``degraded`` after a successful poll; ``unreachable``
only after ``UNREACHABLE_AFTER`` consecutive transport failures (hysteresis: one lost packet does
not flip a host). Repeated failures of reachable-but-broken endpoints make a healthy host
``degraded``; they are counted per kind of poll, so errors of ``/system/info`` are lifted by the
next successful health poll and errors of ``/patches`` by the next successful patch poll.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from .agent_records import Health

UNREACHABLE_AFTER = 3
DEGRADED_AFTER_ERRORS = 3


class HealthState(enum.Enum):
    PENDING = "pending"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class HealthTracker:
    """What the last polls said. ``state``/``reason`` are derived, never set directly."""

    base: HealthState = HealthState.PENDING
    base_reason: str = ""
    transport_failures: int = 0
    request_failures: int = 0  # of patch polls
    last_request_error: str = ""
    health_request_failures: int = 0  # of health (+ system info) polls
    last_health_request_error: str = ""
    patch_problem: str = ""  # a patch poll's unfixable error: only a successful patch poll clears

    def _repeated_error(self) -> str | None:
        if self.base is not HealthState.HEALTHY:
            return None
        if self.health_request_failures >= DEGRADED_AFTER_ERRORS:
            return self.last_health_request_error
        if self.request_failures >= DEGRADED_AFTER_ERRORS:
            return self.last_request_error
        return None

    def _patch_problem(self) -> str | None:
        return (
            self.patch_problem if self.patch_problem and self.base is HealthState.HEALTHY else None
        )

    @property
    def state(self) -> HealthState:
        if self._repeated_error() is not None or self._patch_problem() is not None:
            return HealthState.DEGRADED
        return self.base

    @property
    def reason(self) -> str:
        error = self._repeated_error()
        if error is not None:
            return f"repeated errors: {error}"
        problem = self._patch_problem()
        if problem is not None:
            return f"patch poll failing: {problem}"
        return self.base_reason


def after_health(tracker: HealthTracker, health: Health) -> HealthTracker:
    """A health poll (health + system info) answered."""
    reasons = health.degraded_reasons
    base = HealthState.DEGRADED if reasons else HealthState.HEALTHY
    return replace(tracker, base=base, base_reason="; ".join(reasons), transport_failures=0,
                   health_request_failures=0, last_health_request_error="")  # fmt: skip


def after_transport_failure(tracker: HealthTracker, message: str) -> HealthTracker:
    """The agent could not be reached (refused, timed out, dropped)."""
    failures = tracker.transport_failures + 1
    if failures >= UNREACHABLE_AFTER:
        return replace(tracker, base=HealthState.UNREACHABLE, base_reason=message,
                       transport_failures=failures)  # fmt: skip
    return replace(tracker, transport_failures=failures)


def after_agent_problem(
    tracker: HealthTracker, reason: str, *, patch_poll: bool = False
) -> HealthTracker:
    """Reached, but unusable in a way retrying cannot fix (certificate, whitelist, protocol).
    A patch poll's problem is kept apart: the next health poll must not lift it."""
    if patch_poll:
        return replace(tracker, patch_problem=reason, transport_failures=0)
    return replace(tracker, base=HealthState.DEGRADED, base_reason=reason, transport_failures=0)


def after_request_failure(
    tracker: HealthTracker, message: str, *, health_poll: bool = False
) -> HealthTracker:
    """A reachable agent answered a poll with a (transient) error."""
    if health_poll:
        return replace(tracker, health_request_failures=tracker.health_request_failures + 1,
                       last_health_request_error=message, transport_failures=0)  # fmt: skip
    return replace(tracker, request_failures=tracker.request_failures + 1,
                   last_request_error=message, transport_failures=0)  # fmt: skip


def after_request_success(tracker: HealthTracker) -> HealthTracker:
    """A patch poll answered."""
    return replace(tracker, request_failures=0, last_request_error="", patch_problem="")
