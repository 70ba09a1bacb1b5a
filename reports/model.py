"""The query layer of the reports: storage records in, report records out, every host judged by
the one compliance function. Lists come in pages (``async`` iterators of lists) so a CSV of
10,000 hosts never holds them all.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace

from storage import Database, HostScope
from storage.reports import (
    ExposureRow,
    HistoryRow,
    HostFactsRow,
    Remediation,
    ReportFilter,
    TrendPoint,
    WaiverRow,
    exposure_page,
    history_page,
    host_facts_page,
    list_waivers,
    pending_by_severity,
    remediation_times,
    trend,
)

from .compliance import (
    SEVERITIES,
    Assessment,
    ComplianceRules,
    HostFacts,
    PendingPatch,
    Status,
    Waiver,
    assess,
    severity_rank,
)

PAGE = 1000


@dataclass(frozen=True)
class Context:
    """Everything a report is computed against: who sees what, the rules, the instant."""

    db: Database
    scope: HostScope
    rules: ComplianceRules
    now: dt.datetime


@dataclass(frozen=True)
class HostCompliance:
    host_id: int
    name: str
    groups: tuple[str, ...]
    status: str
    label: str
    reason: str
    breaches: int
    waived: int
    pending: int
    last_patch_poll_at: dt.datetime | None


@dataclass(frozen=True)
class Summary:
    hosts: int = 0
    compliant: int = 0
    noncompliant: int = 0
    unknown: int = 0
    waived_hosts: int = 0  # compliant only thanks to an active waiver
    by_severity: dict[str, int] = field(default_factory=dict)  # pending patches

    @property
    def percent(self) -> float | None:
        """Compliant share of the hosts with known state (None when none is known)."""
        known = self.compliant + self.noncompliant
        return None if known == 0 else round(100 * self.compliant / known, 1)

    @property
    def percent_of_all(self) -> float | None:
        """Compliant share of all hosts: unknown ones count against it (None without hosts)."""
        return None if self.hosts == 0 else round(100 * self.compliant / self.hosts, 1)


def as_waivers(rows: Sequence[WaiverRow]) -> list[Waiver]:
    return [
        Waiver(w.id, w.host_id, w.package, w.cve, w.expires_at) for w in rows if not w.revoked_at
    ]


def judge(ctx: Context, row: HostFactsRow, waivers: Sequence[Waiver]) -> Assessment:
    facts = HostFacts(
        row.id,
        row.last_patch_poll_at,
        ctx.rules.interval_of(row.name, row.groups),
        tuple(PendingPatch(p.name, p.severity, p.first_seen_at, p.cve_ids) for p in row.patches),
    )
    return assess(facts, ctx.rules, waivers, ctx.now)


def host_compliance(row: HostFactsRow, a: Assessment) -> HostCompliance:
    return HostCompliance(
        row.id,
        row.name,
        row.groups,
        a.status.value,
        a.label,
        a.reason,
        len(a.breaches),
        len(a.waived),
        row.pending,
        row.last_patch_poll_at,
    )


async def active_waivers(ctx: Context) -> list[Waiver]:
    return as_waivers(await ctx.db.run(list_waivers, ctx.scope, False))


def cutoffs(ctx: Context) -> dict[str, dt.datetime]:
    """Per severity, the instant before which a pending patch is past its SLA (a severity that
    does not count: never). Patches seen later cannot change a verdict, so they are not read."""
    never = dt.datetime.min.replace(tzinfo=dt.UTC)
    return {
        s: ctx.now - ctx.rules.sla(s) if ctx.rules.counts(s) else never
        for s in ("critical", "high", "medium", "low")
    }


async def fact_pages(ctx: Context, f: ReportFilter) -> AsyncIterator[list[HostFactsRow]]:
    after = 0
    limits = cutoffs(ctx)
    while True:
        rows = await ctx.db.run(host_facts_page, ctx.scope, f, after, PAGE, limits)
        if not rows:
            return
        yield rows
        after = rows[-1].id
        if len(rows) < PAGE:
            return


def focused(ctx: Context, f: ReportFilter) -> Context:
    """``ctx`` judging only patches at or above the filter's severity (when it is stricter than
    the configured lowest severity that counts)."""
    if f.severity in SEVERITIES and severity_rank(f.severity) < severity_rank(
        ctx.rules.min_severity
    ):
        return replace(ctx, rules=replace(ctx.rules, min_severity=f.severity))
    return ctx


async def compliance_pages(ctx: Context, f: ReportFilter) -> AsyncIterator[list[HostCompliance]]:
    """Every host in scope matching ``f``, judged, in pages of at most ``PAGE``."""
    ctx = focused(ctx, f)
    waivers = await active_waivers(ctx)
    async for rows in fact_pages(ctx, f):
        yield [host_compliance(r, judge(ctx, r, waivers)) for r in rows]


def summarise(hosts: Sequence[HostCompliance], by_severity: dict[str, int]) -> Summary:
    counts = {s.value: 0 for s in Status}
    for h in hosts:
        counts[h.status] += 1
    return Summary(
        hosts=len(hosts),
        compliant=counts["compliant"],
        noncompliant=counts["noncompliant"],
        unknown=counts["unknown"],
        waived_hosts=sum(1 for h in hosts if h.status == "compliant" and h.waived),
        by_severity=by_severity,
    )


def trend_percentages(points: Sequence[TrendPoint]) -> list[tuple[dt.date, float]]:
    """Per snapshot day, the compliant share of the hosts with known state; days on which no
    host's state was known are left out (there is no percentage to show, not 0 %)."""
    return [
        (p.day, round(100 * p.compliant / (p.compliant + p.noncompliant), 1))
        for p in points
        if p.compliant + p.noncompliant > 0
    ]


@dataclass(frozen=True)
class ComplianceReport:
    as_of: dt.datetime
    summary: Summary
    trend: list[TrendPoint]
    hosts: list[HostCompliance]
    waivers: list[WaiverRow]


async def compliance_report(ctx: Context, f: ReportFilter) -> ComplianceReport:
    ctx = focused(ctx, f)
    waivers = await ctx.db.run(list_waivers, ctx.scope)
    active = as_waivers(waivers)
    hosts: list[HostCompliance] = []
    async for rows in fact_pages(ctx, f):
        hosts.extend(host_compliance(r, judge(ctx, r, active)) for r in rows)
    points = await ctx.db.run(trend, ctx.scope, f)
    by_severity = await ctx.db.run(pending_by_severity, ctx.scope, f)
    if f.group or f.host_id is not None:  # the waivers of the hosts this report is about
        shown = {h.host_id for h in hosts}
        waivers = [w for w in waivers if w.host_id in shown]
    return ComplianceReport(ctx.now, summarise(hosts, by_severity), points, hosts, waivers)


# -- patch history -----------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryReport:
    as_of: dt.datetime
    remediation: list[Remediation]
    sla_days: dict[str, int]
    outcomes: dict[str, int]
    jobs_per_day: dict[str, int]
    rows: list[HistoryRow]


async def history_pages(ctx: Context, f: ReportFilter) -> AsyncIterator[list[HistoryRow]]:
    after = 0
    while True:
        rows = await ctx.db.run(history_page, ctx.scope, f, after, PAGE)
        if not rows:
            return
        yield rows
        after = rows[-1].row_id
        if len(rows) < PAGE:
            return


async def history_report(ctx: Context, f: ReportFilter) -> HistoryReport:
    rows: list[HistoryRow] = []
    async for page in history_pages(ctx, f):
        rows.extend(page)
    outcomes: dict[str, int] = {}
    per_day: dict[str, int] = {}
    for r in rows:
        outcomes[r.state] = outcomes.get(r.state, 0) + 1
        if r.started_at or r.finished_at:
            day = (r.started_at or r.finished_at or ctx.now).date().isoformat()
            per_day[day] = per_day.get(day, 0) + 1
    mttr = await ctx.db.run(remediation_times, ctx.scope, f)
    sla = {s: ctx.rules.sla(s).days for s in ("critical", "high", "medium", "low")}
    return HistoryReport(ctx.now, mttr, sla, outcomes, dict(sorted(per_day.items())), rows)


# -- exposure ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExposureItem:
    host_id: int
    host: str
    package: str
    severity: str
    cve_ids: tuple[str, ...]
    first_seen_at: dt.datetime
    age_days: int
    waived: bool


AGE_BUCKETS = ((7, "0-7 d"), (30, "8-30 d"), (90, "31-90 d"), (None, "over 90 d"))


def age_bucket(days: int) -> str:
    for limit, label in AGE_BUCKETS:
        if limit is None or days <= limit:
            return label
    return AGE_BUCKETS[-1][1]


async def exposure_pages(ctx: Context, f: ReportFilter) -> AsyncIterator[list[ExposureItem]]:
    waivers = await active_waivers(ctx)
    after = 0
    while True:
        rows: list[ExposureRow] = await ctx.db.run(exposure_page, ctx.scope, f, after, PAGE)
        if not rows:
            return
        items = []
        for r in rows:
            patch = PendingPatch(r.package, r.severity, r.first_seen_at, r.cve_ids)
            waived = any(w.covers(r.host_id, patch, ctx.now) for w in waivers)
            age = max(0, (ctx.now - r.first_seen_at).days)
            items.append(
                ExposureItem(
                    r.host_id,
                    r.host,
                    r.package,
                    r.severity,
                    r.cve_ids,
                    r.first_seen_at,
                    age,
                    waived,
                )  # fmt: skip
            )
        yield items
        after = rows[-1].patch_id
        if len(rows) < PAGE:
            return


@dataclass(frozen=True)
class ExposureReport:
    as_of: dt.datetime
    by_severity_age: dict[str, dict[str, int]]
    hosts: int
    cves: int
    items: list[ExposureItem]


async def exposure_report(ctx: Context, f: ReportFilter) -> ExposureReport:
    items: list[ExposureItem] = []
    async for page in exposure_pages(ctx, f):
        items.extend(page)
    items.sort(key=lambda i: (severity_rank(i.severity), -i.age_days, i.host, i.package))
    table = {
        s: {label: 0 for _, label in AGE_BUCKETS} for s in ("critical", "high", "medium", "low")
    }
    for i in items:
        table.setdefault(i.severity, {label: 0 for _, label in AGE_BUCKETS})
        table[i.severity][age_bucket(i.age_days)] += 1
    cves = {c for i in items for c in i.cve_ids}
    return ExposureReport(ctx.now, table, len({i.host_id for i in items}), len(cves), items)


# -- reboots -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RebootItem:
    host_id: int
    host: str
    groups: tuple[str, ...]
    health: str
    last_boot_at: dt.datetime | None
    pending_patches: int


async def reboot_pages(ctx: Context, f: ReportFilter) -> AsyncIterator[list[RebootItem]]:
    async for rows in fact_pages(ctx, f):
        yield [
            RebootItem(r.id, r.name, r.groups, r.health, r.last_boot_at, r.pending)
            for r in rows
            if r.pending_reboot
        ]


@dataclass(frozen=True)
class RebootReport:
    as_of: dt.datetime
    items: list[RebootItem]


async def reboot_report(ctx: Context, f: ReportFilter) -> RebootReport:
    items: list[RebootItem] = []
    async for page in reboot_pages(ctx, f):
        items.extend(page)
    return RebootReport(ctx.now, items)
