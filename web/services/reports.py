"""Reports: compliance, patch history, exposure, reboots and the evidence pack, each computed by
``reports`` over storage (never the live actors) within the principal's host scope."""

from __future__ import annotations

import copy
import datetime as dt
import functools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import trio
from pydantic import BaseModel

from reports import ComplianceRules, Context
from reports import model as rm
from reports import pdf as render
from reports.csv_out import compliance_csv, exposure_csv, history_csv, reboot_csv
from reports.evidence import evidence_pack
from storage import DatabaseUnavailable, HostScope, NotFound, list_groups
from storage.display import user_time_zone
from storage.reports import (
    ReportDefinition,
    ReportFilter,
    WaiverRow,
    get_definition,
    list_definitions,
    waivers_version,
)
from storage.reports import delete_definition as remove_definition
from storage.reports import save_definition as store_definition

from .. import audit, authz
from ..authz import Action, Role, require, scope_of
from ..handle import InvalidInput, Missing
from ..report_models import DefinitionCreate, EvidenceQuery, ReportQuery
from .base import Principal, System

KINDS = ("compliance", "patch-history", "exposure", "reboots")
# PDF rendering is CPU-bound: at most two at once in worker threads.
PDF_LIMITER = trio.CapacityLimiter(2)


def scope(who: Principal) -> HostScope:
    """The one place the reports and waivers take the principal's host scope from (auditors
    read reports within their groups like everybody else)."""
    require(who, Action.VIEW)
    return scope_of(who)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def context(
    sys: System, who: Principal, rules: ComplianceRules, about: rm.About | None = None
) -> Context:
    """Storage and configuration only (``rules.interval_of``), never the live actors."""
    return Context(sys.db, scope(who), rules, now(), about or rm.About())


async def about(sys: System, who: Principal) -> rm.About:
    """Who is generating a report and their scope in words (stated in every output)."""
    s = scope(who)
    if s.all_hosts:
        where = "all hosts"
    else:
        names = [g.name for g in await sys.db.run(list_groups, s)]
        where = f"groups: {', '.join(names)}" if names else "no group"
        if s.ungrouped:
            where += " and hosts of no group"
    return rm.About(f"{who.username} ({who.role.value})", where)


def report_filter(q: ReportQuery | EvidenceQuery) -> ReportFilter:
    if isinstance(q, EvidenceQuery):
        return ReportFilter(since=q.since, until=q.until, group=q.group.strip())
    return ReportFilter(
        since=q.since, until=q.until, group=q.group.strip(), host_id=q.host_id,
        severity=q.severity or "",
    )  # fmt: skip


def check_filters(kind: str, q: ReportQuery) -> None:
    """Filters that have no meaning for ``kind`` are refused, not silently ignored: the reboots
    report lists hosts, not patches, so it has no severity."""
    if kind == "reboots" and q.severity:
        raise InvalidInput("severity", "the reboots report has no severity filter")


Report = rm.ComplianceReport | rm.HistoryReport | rm.ExposureReport | rm.RebootReport


async def build(
    sys: System, who: Principal, rules: ComplianceRules, kind: str, q: ReportQuery
) -> Report:
    check_filters(kind, q)
    ctx, f = context(sys, who, rules, await about(sys, who)), report_filter(q)
    if kind == "compliance":
        return await rm.compliance_report(ctx, f)
    if kind == "patch-history":
        return await rm.history_report(ctx, f)
    if kind == "exposure":
        return await rm.exposure_report(ctx, f)
    return await rm.reboot_report(ctx, f)


async def download_json(
    sys: System, who: Principal, rules: ComplianceRules, kind: str, q: ReportQuery
) -> Report:
    """``build`` for the JSON API: a download, recorded like the CSV and PDF ones."""
    report = await build(sys, who, rules, kind, q)
    await _downloaded(sys, who, kind, "json", q)
    return report


def stream_csv(
    sys: System, who: Principal, rules: ComplianceRules, kind: str, q: ReportQuery
) -> AsyncIterator[str]:
    """The report as CSV chunks, read from storage one page at a time while it is sent."""
    check_filters(kind, q)
    ctx, f = context(sys, who, rules), report_filter(q)
    if kind == "compliance":
        return compliance_csv(rm.compliance_pages(ctx, f))
    if kind == "patch-history":
        return history_csv(rm.history_pages(ctx, f))
    if kind == "exposure":
        return exposure_csv(rm.exposure_pages(ctx, f))
    return reboot_csv(rm.reboot_pages(ctx, f))


async def open_csv(
    sys: System, who: Principal, rules: ComplianceRules, kind: str, q: ReportQuery
) -> AsyncIterator[str]:
    """``stream_csv`` with its header and first page already read, so a query that fails does
    so before the response starts (an error reply, never a truncated 200)."""
    chunks = stream_csv(sys, who, rules, kind, q)
    first = [chunk async for chunk in _take(chunks, 2)]
    await _downloaded(sys, who, kind, "csv", q)

    async def rest() -> AsyncIterator[str]:
        for chunk in first:
            yield chunk
        async for chunk in chunks:
            yield chunk

    return rest()


async def _take(chunks: AsyncIterator[str], n: int) -> AsyncIterator[str]:
    for _ in range(n):
        try:
            yield await anext(chunks)
        except StopAsyncIteration:
            return


async def pdf(sys: System, who: Principal, rules: ComplianceRules, kind: str,
              q: ReportQuery) -> bytes:  # fmt: skip
    """The report as a PDF, rendered in a worker thread (never on the event loop), its times
    in the user's time zone (named in the document)."""
    report = await build(sys, who, rules, kind, q)
    tz = await sys.db.run(user_time_zone, who.user_id) if who.user_id else "UTC"
    renderer: Callable[..., bytes] = {  # type: ignore[assignment]
        "compliance": render.compliance_pdf,
        "patch-history": render.history_pdf,
        "exposure": render.exposure_pdf,
        "reboots": render.reboot_pdf,
    }[kind]
    data = await trio.to_thread.run_sync(
        functools.partial(renderer, tz=tz), report, limiter=PDF_LIMITER
    )
    await _downloaded(sys, who, kind, "pdf", q)
    return data


async def evidence(sys: System, who: Principal, rules: ComplianceRules,
                   q: EvidenceQuery) -> bytes:  # fmt: skip
    """The auditor evidence pack (ZIP with a SHA-256 manifest), built in a worker thread."""
    ctx, f = context(sys, who, rules, await about(sys, who)), report_filter(q)
    compliance = await rm.compliance_report(ctx, f)
    history = await rm.history_report(ctx, f)
    pack = await trio.to_thread.run_sync(
        evidence_pack, compliance, history, f, rules, limiter=PDF_LIMITER
    )
    await _downloaded(sys, who, "evidence", "zip", q)
    return pack


async def _downloaded(sys: System, who: Principal, kind: str, fmt: str, q: BaseModel) -> None:
    """The audit entry of a report or export download (nothing else changes)."""
    filters = q.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    entry = audit.entry(who, "report.download", f"report:{kind}",
                        after={"format": fmt, "filters": filters})  # fmt: skip
    await audit.record(sys, entry)


@dataclass(frozen=True)
class DashboardCompliance:
    """The dashboard's compliance figures: live as of ``as_of`` (the same function and query as
    the compliance report), the trend from the daily snapshots."""

    as_of: dt.datetime
    summary: rm.Summary
    breaches: int  # pending patches past their SLA, not waived
    trend: list[float]  # daily compliance % (snapshots), oldest first
    expiring: list[WaiverRow]  # active waivers expiring within waiver_warning_days


_CacheKey = tuple[HostScope, tuple[int, ...], int]


class _Computation:
    """One load's computation of a scope's figures, which the other loads wait for."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.figures: DashboardCompliance | None = None
        self.error: BaseException | None = None


class DashboardCache:
    """The dashboard's compliance figures per host scope, reused for ``ttl_s`` seconds (the
    page shows their "as of" time): judging 2,500 hosts takes 0.1 to 0.3 s (10,000: ~0.5 s),
    too slow for every dashboard load. Reports and the API always compute afresh.

    One request at a time computes a scope's figures: while it does, the other requests get
    the previous figures (their "as of" says how old) if those are less than ``2 * ttl_s`` old,
    or else wait for that one computation (at most ``wait_s`` seconds, then
    ``DatabaseUnavailable``) instead of starting their own. When it fails, every request
    waiting for it gets its error at once (none computes again after it). The figures are
    recomputed when a waiver is recorded or revoked and when a scope changes (group
    membership, roles, hosts: ``authz.scope_generation``). ``now`` is the clock (tests)."""

    def __init__(
        self,
        ttl_s: float = 30.0,
        *,
        wait_s: float = 30.0,
        now: Callable[[], float] = trio.current_time,
    ) -> None:
        self.ttl_s = ttl_s
        self.wait_s = wait_s
        self._now = now
        self._entries: dict[_CacheKey, tuple[float, DashboardCompliance]] = {}
        self._computing: dict[_CacheKey, _Computation] = {}

    def computing(self) -> int:
        """How many scopes' figures are being computed right now."""
        return len(self._computing)

    async def get(self, sys: System, who: Principal, rules: ComplianceRules) -> DashboardCompliance:
        # A recorded or revoked waiver, or a changed scope, shows at once (figures recomputed).
        generation = authz.scope_generation(sys.db)
        key = (scope(who), await sys.db.run(waivers_version), generation)
        hit = self._entries.get(key)
        age = None if hit is None else self._now() - hit[0]
        if hit is not None and age is not None and age < self.ttl_s:
            return hit[1]
        computing = self._computing.get(key)
        if computing is not None:
            if hit is not None and age is not None and age < 2 * self.ttl_s:
                return hit[1]  # expired but recent enough: shown with its "as of"
            with trio.move_on_after(self.wait_s):
                await computing.done.wait()
            if not computing.done.is_set():
                raise DatabaseUnavailable("the dashboard's figures are still being computed")
            if computing.figures is None:
                # The same failure (and so the same answer) as the computing load's.
                error = computing.error or DatabaseUnavailable("no dashboard figures")
                raise copy.copy(error) from error
            return computing.figures
        computing = self._computing[key] = _Computation()
        try:
            figures = await dashboard(sys, who, rules)
        except BaseException as exc:
            # Cancelled (the computing request went away) is not the others' error.
            computing.error = (
                DatabaseUnavailable("the dashboard's figures could not be computed")
                if isinstance(exc, trio.Cancelled)
                else exc
            )
            raise
        else:
            computing.figures = figures
            if len(self._entries) > 256:  # many distinct scopes: start again
                self._entries.clear()
            self._entries[key] = (self._now(), figures)
            return figures
        finally:
            del self._computing[key]
            computing.done.set()


async def dashboard(sys: System, who: Principal, rules: ComplianceRules) -> DashboardCompliance:
    report = await rm.compliance_report(context(sys, who, rules), ReportFilter())
    soon = report.as_of + dt.timedelta(days=rules.waiver_warning_days)
    expiring = [
        w for w in report.waivers if w.revoked_at is None and report.as_of < w.expires_at <= soon
    ]
    trend = [pct for _, pct in rm.trend_percentages(report.trend[-30:])]
    breaches = sum(h.breaches for h in report.hosts)
    return DashboardCompliance(report.as_of, report.summary, breaches, trend, expiring)


# -- scheduled report definitions (stored; delivered by e-mail once notifications exist) -------


def owner_of(who: Principal) -> str | None:
    """Whose definitions ``who`` may see and delete: an admin everybody's, others (and an
    admin's group-restricted token) their own (a definition carries its creator's filters and
    recipients, which may name any host)."""
    return None if who.role is Role.ADMIN and who.token_groups is None else who.username


async def definitions(sys: System, who: Principal) -> list[ReportDefinition]:
    require(who, Action.VIEW)
    return await sys.db.run(list_definitions, owner_of(who))


async def save_definition(sys: System, who: Principal, data: DefinitionCreate) -> int:
    require(who, Action.DEPLOY)  # the roles that act on hosts (admins, operators)
    filters = data.filters.model_dump(mode="json", exclude_none=True) if data.filters else {}
    return await audit.audited(
        sys,
        lambda d: audit.entry(who, "report_definition.create", f"report_definition:{d}",
                              after=data.model_dump(mode="json")),
        store_definition, data.name, data.report, data.format, filters, data.recipients,
        data.schedule, who.username,
    )  # fmt: skip


async def delete_definition(sys: System, who: Principal, definition_id: int) -> None:
    require(who, Action.DEPLOY)
    try:
        await audit.audited(
            sys,
            audit.entry(who, "report_definition.delete", f"report_definition:{definition_id}"),
            remove_definition,
            definition_id,
            owner_of(who),
        )
    except NotFound as exc:
        raise Missing(str(exc)) from None


async def definition(sys: System, who: Principal, definition_id: int) -> ReportDefinition:
    """A stored definition, to be run now with the caller's scope (``Missing`` if unknown)."""
    require(who, Action.VIEW)
    try:
        return await sys.db.run(get_definition, definition_id, owner_of(who))
    except NotFound as exc:
        raise Missing(str(exc)) from None


def definition_query(d: ReportDefinition) -> ReportQuery:
    return ReportQuery.model_validate({**d.filters, "format": d.format})


async def host_compliance(
    sys: System, who: Principal, rules: ComplianceRules, host_id: int
) -> rm.HostCompliance | None:
    """One host's verdict, by the same function and query as the compliance report."""
    report = await rm.compliance_report(context(sys, who, rules), ReportFilter(host_id=host_id))
    return report.hosts[0] if report.hosts else None
