"""The host health model (R-3.3) as pure state transitions. No trio, no I/O.

``pending`` (never seen) → ``healthy`` / ``degraded`` after a successful poll; ``unreachable``
only after ``UNREACHABLE_AFTER`` consecutive transport failures (hysteresis: one lost packet does
not flip a host). Repeated failures of reachable-but-broken endpoints (500s on /patches) make a
healthy host ``degraded`` until a patch poll succeeds again.
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
    request_failures: int = 0
    last_request_error: str = ""

    @property
    def state(self) -> HealthState:
        if self.base is HealthState.HEALTHY and self.request_failures >= DEGRADED_AFTER_ERRORS:
            return HealthState.DEGRADED
        return self.base

    @property
    def reason(self) -> str:
        if self.base is HealthState.HEALTHY and self.request_failures >= DEGRADED_AFTER_ERRORS:
            return f"repeated errors: {self.last_request_error}"
        return self.base_reason


def after_health(tracker: HealthTracker, health: Health) -> HealthTracker:
    """A health poll answered."""
    reasons = health.degraded_reasons
    base = HealthState.DEGRADED if reasons else HealthState.HEALTHY
    return replace(tracker, base=base, base_reason="; ".join(reasons), transport_failures=0)


def after_transport_failure(tracker: HealthTracker, message: str) -> HealthTracker:
    """The agent could not be reached (refused, timed out, dropped)."""
    failures = tracker.transport_failures + 1
    if failures >= UNREACHABLE_AFTER:
        return replace(tracker, base=HealthState.UNREACHABLE, base_reason=message,
                       transport_failures=failures)  # fmt: skip
    return replace(tracker, transport_failures=failures)


def after_agent_problem(tracker: HealthTracker, reason: str) -> HealthTracker:
    """Reached, but unusable in a way retrying cannot fix (certificate, whitelist, protocol)."""
    return replace(tracker, base=HealthState.DEGRADED, base_reason=reason, transport_failures=0)


def after_request_failure(tracker: HealthTracker, message: str) -> HealthTracker:
    return replace(tracker, request_failures=tracker.request_failures + 1,
                   last_request_error=message, transport_failures=0)  # fmt: skip


def after_request_success(tracker: HealthTracker) -> HealthTracker:
    return replace(tracker, request_failures=0, last_request_error="")
