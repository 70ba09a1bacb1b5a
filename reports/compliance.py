"""The one compliance definition (R-6.1), as a pure function.

A host is **compliant** when its last successful patch poll is fresh (no older than
``freshness_factor`` times its patch interval) and it shows no pending patch at or above
``min_severity`` that has been pending longer than that severity's remediation SLA, except
patches covered by an active risk waiver (those are counted separately, never hidden). A host
with no patch data, or stale data, is **unknown**, never compliant. No I/O, no clock: ``now`` is
given, and every datetime must carry a time zone (``ValueError`` otherwise).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

SEVERITIES = ("critical", "high", "medium", "low")
_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
DEFAULT_SLA_DAYS: Mapping[str, int] = {"critical": 7, "high": 30, "medium": 90, "low": 180}


def severity_rank(severity: str) -> int:
    """0 for critical … 3 for low; a severity the agent did not name counts as medium."""
    return _RANK.get(severity, _RANK["medium"])


IntervalOf = Callable[[str, tuple[str, ...]], int | None]


def no_interval(host: str, groups: tuple[str, ...]) -> int | None:
    return None


class Status(enum.Enum):
    COMPLIANT = "compliant"
    NONCOMPLIANT = "noncompliant"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ComplianceRules:
    """Remediation SLA (days) per severity, the lowest severity that counts, how stale data may
    be (times the host's patch interval) and the interval used when a host has none of its own.
    ``interval_of`` gives a host's configured patch interval from its name and group names (the
    composition root builds it from ``settings.effective_policy``; never from live actors)."""

    sla_days: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_SLA_DAYS))
    min_severity: str = "low"
    freshness_factor: float = 2.0
    default_patch_interval_s: int = 1800
    waiver_warning_days: int = 14
    interval_of: IntervalOf = field(default=no_interval, compare=False)

    def sla(self, severity: str) -> dt.timedelta:
        name = severity if severity in _RANK else "medium"
        return dt.timedelta(days=self.sla_days.get(name, DEFAULT_SLA_DAYS[name]))

    def counts(self, severity: str) -> bool:
        return severity_rank(severity) <= severity_rank(self.min_severity)


@dataclass(frozen=True)
class PendingPatch:
    name: str
    severity: str
    first_seen_at: dt.datetime
    cve_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Waiver:
    """An accepted risk on one host: for one package, one CVE, or (both empty) every patch."""

    id: int
    host_id: int
    package: str
    cve: str
    expires_at: dt.datetime

    def covers(self, host_id: int, patch: PendingPatch, now: dt.datetime) -> bool:
        """Active strictly before ``expires_at``; at that instant the waiver has expired."""
        if host_id != self.host_id or now >= self.expires_at:
            return False
        if self.package and self.package != patch.name:
            return False
        return not self.cve or self.cve in patch.cve_ids


@dataclass(frozen=True)
class HostFacts:
    """What storage knows of a host, for the compliance function."""

    host_id: int
    last_patch_poll_at: dt.datetime | None
    patch_interval_s: int | None
    patches: tuple[PendingPatch, ...] = ()


@dataclass(frozen=True)
class Breach:
    patch: PendingPatch
    overdue: dt.timedelta  # how far past its SLA
    waiver_id: int | None  # the active waiver covering it, if any


@dataclass(frozen=True)
class Assessment:
    status: Status
    reason: str
    breaches: tuple[Breach, ...]  # past SLA and not waived
    waived: tuple[Breach, ...]  # past SLA, covered by an active waiver
    stale_since: dt.datetime | None = None  # the last patch poll when the data is stale

    @property
    def label(self) -> str:
        if self.status is Status.COMPLIANT and self.waived:
            n = len(self.waived)
            return f"compliant with {n} waived patch{'es' if n != 1 else ''}"
        return self.status.value


def _aware(value: dt.datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must carry a time zone")


def assess(
    facts: HostFacts, rules: ComplianceRules, waivers: Sequence[Waiver], now: dt.datetime
) -> Assessment:
    """Whether ``facts`` describe a compliant host at ``now`` (see the module docstring)."""
    _aware(now, "now")
    breaches: list[Breach] = []
    waived: list[Breach] = []
    for patch in facts.patches:
        _aware(patch.first_seen_at, f"first_seen_at of {patch.name}")
        if not rules.counts(patch.severity):
            continue
        overdue = now - patch.first_seen_at - rules.sla(patch.severity)
        if overdue <= dt.timedelta(0):
            continue  # pending exactly the SLA is still within it
        waiver = next((w for w in waivers if w.covers(facts.host_id, patch, now)), None)
        item = Breach(patch, overdue, waiver.id if waiver else None)
        (waived if waiver else breaches).append(item)
    polled = facts.last_patch_poll_at
    if polled is None:
        return Assessment(Status.UNKNOWN, "never polled for patches", (), ())
    _aware(polled, "last_patch_poll_at")
    interval = facts.patch_interval_s or rules.default_patch_interval_s
    if now - polled > dt.timedelta(seconds=interval * rules.freshness_factor):
        # The instant stays data: pages show it in the reader's zone, files as ISO UTC.
        return Assessment(Status.UNKNOWN, "patch data stale", (), (), polled)
    if breaches:
        worst = min(breaches, key=lambda b: (severity_rank(b.patch.severity), -b.overdue))
        reason = (
            f"{len(breaches)} patch(es) past SLA; worst {worst.patch.name} ({worst.patch.severity})"
        )
        return Assessment(Status.NONCOMPLIANT, reason, tuple(breaches), tuple(waived))
    return Assessment(Status.COMPLIANT, "", (), tuple(waived))
