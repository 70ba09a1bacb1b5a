"""The Reports page (filters, summary, server-rendered SVG charts, downloads) and the risk
waivers page. Both call the same service layer as the JSON API."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from reports import ComplianceRules, svg
from reports import model as rm
from storage import GroupItem
from storage.reports import WaiverRow

from .forms import fields, in_zone
from .handle import HandleError, Missing
from .models_io import given, path_id, validate
from .pages import Base, Pages
from .report_models import ReportQuery, WaiverCreate
from .services import groups, principal
from .services import reports as service
from .services import waivers as waiver_service

SHOWN_ROWS = 200  # the page shows the first rows; the CSV and PDF have them all
KIND_TITLES = {
    "compliance": "Compliance",
    "patch-history": "Patch history",
    "exposure": "Vulnerability exposure",
    "reboots": "Reboot pending",
}


@dataclass(frozen=True)
class ReportsPage(Base):
    kind: str = "compliance"
    kinds: dict[str, str] = field(default_factory=lambda: dict(KIND_TITLES))
    report: Any = None
    charts: list[tuple[str, str]] = field(default_factory=list)
    rows_total: int = 0
    shown: int = SHOWN_ROWS
    query: dict[str, str] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    groups: list[GroupItem] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    rules: ComplianceRules | None = None


@dataclass(frozen=True)
class WaiversPage(Base):
    waivers: list[WaiverRow] = field(default_factory=list)
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    form: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def charts(report: service.Report) -> list[tuple[str, str]]:
    """(title, SVG markup) pairs; the SVG is built with every value escaped (``reports.svg``)."""
    out: list[tuple[str, str]] = []
    if isinstance(report, rm.ComplianceReport):
        s = report.summary
        out.append(("Patch status distribution", svg.bars(
            [("compliant", s.compliant, "ok"), ("not compliant", s.noncompliant, "bad"),
             ("unknown", s.unknown, "idle")], label="hosts by compliance status")))  # fmt: skip
        trend = [
            (day.strftime("%m-%d"), pct, "ok")
            for day, pct in rm.trend_percentages(report.trend[-90:])
        ]
        if trend:
            out.append(("Compliance trend (% of hosts with known state, daily snapshots)",
                        svg.bars(trend, label="daily compliance percentage")))  # fmt: skip
        severities = [(k, v, k) for k, v in s.by_severity.items()]
        out.append(("Pending patches by severity",
                    svg.bars(severities, label="pending patches by severity")))  # fmt: skip
    elif isinstance(report, rm.HistoryReport):
        days = list(report.jobs_per_day.items())[-60:]
        if days:
            out.append(("Host jobs per day", svg.bars([(d[5:], n, "accent") for d, n in days],
                                                      label="host jobs per day")))  # fmt: skip
        out.append(("Outcomes", svg.bars([(k, v, "accent") for k, v in report.outcomes.items()],
                                         label="host jobs by outcome")))  # fmt: skip
    elif isinstance(report, rm.ExposureReport):
        totals = [(sev, sum(ages.values()), sev) for sev, ages in report.by_severity_age.items()]
        out.append(("Pending security patches by severity (not waived)",
                    svg.bars(totals, label="security patches by severity")))  # fmt: skip
    return out


def rows_of(report: service.Report) -> list[Any]:
    if isinstance(report, rm.ComplianceReport):
        return report.hosts
    if isinstance(report, rm.HistoryReport):
        return report.rows
    return report.items


class ReportPages:
    def __init__(self, pages: Pages, rules: ComplianceRules) -> None:
        self.pages = pages
        self.sys = pages.sys
        self.rules = rules

    async def reports(self, request: Request) -> Response:
        who = principal(request)
        params = {k: v for k, v in request.query_params.items() if k != "format"}
        kind = params.pop("kind", "") or "compliance"
        if kind == "reboots":  # no severity there; the form hides it, a leftover is dropped
            params.pop("severity", None)
        errors: dict[str, str] = {}
        report = None
        if kind not in KIND_TITLES:
            errors["kind"] = f"one of: {', '.join(KIND_TITLES)}"
            kind = "compliance"  # the form shows its default; nothing is computed
        try:
            q = validate(ReportQuery, given(params))
            if not errors:
                report = await service.build(self.sys, who, self.rules, kind, q)
        except HandleError as exc:
            errors.update(exc.fields)
        rows = rows_of(report) if report is not None else []
        base = urlencode(given(params))
        links = {
            fmt: f"/api/v1/reports/{kind}?{base}{'&' if base else ''}format={fmt}"
            for fmt in ("csv", "pdf", "json")
        }
        evidence = {k: v for k, v in given(params).items() if k in ("since", "until", "group")}
        links["evidence"] = f"/api/v1/reports/evidence?{urlencode(evidence)}"
        page = ReportsPage(
            **self.pages.base(request, f"Reports: {KIND_TITLES[kind]}", "reports"),
            kind=kind,
            report=report,
            charts=charts(report) if report is not None else [],
            rows_total=len(rows),
            query={k: str(v)[:100] for k, v in params.items()},
            links=links,
            groups=await groups.all_groups(self.sys, who),
            errors=errors,
            rules=self.rules,
        )
        return self.pages.render(request, "reports.html", page, 422 if errors else 200)

    async def waivers(
        self,
        request: Request,
        form: dict[str, str] | None = None,
        errors: dict[str, str] | None = None,
        status: int = 200,
    ) -> Response:
        page = WaiversPage(
            **self.pages.base(request, "Risk waivers", "waivers"),
            waivers=await waiver_service.waivers(self.sys, principal(request)),
            form=form or {},
            errors=errors or {},
        )
        return self.pages.render(request, "waivers.html", page, status)

    async def create_waiver(self, request: Request) -> Response:
        form = fields(await request.form())
        try:
            tz = self.pages.zones.get(principal(request).user_id)  # expires_at: the user's
            data = validate(WaiverCreate, given(in_zone(form, ("expires_at",), tz)))
            _, warnings = await waiver_service.create(self.sys, principal(request), data)
        except HandleError as exc:
            return await self.waivers(request, form, exc.fields, exc.status)
        except Missing as exc:
            return await self.waivers(request, form, {"host_id": str(exc)}, 404)
        return self.pages.back("/waivers", "; ".join(["Waiver recorded", *warnings]))

    async def revoke_waiver(self, request: Request) -> Response:
        try:
            await waiver_service.revoke(self.sys, principal(request), path_id(request, "waiver_id"))
        except Missing as exc:
            return await self.waivers(request, None, {"revoke": str(exc)}, 404)
        return self.pages.back("/waivers", "Waiver revoked")

    def routes(self) -> list[Route]:
        return [
            Route("/reports", self.reports, methods=["GET"]),
            Route("/waivers", self.waivers, methods=["GET"]),
            Route("/waivers", self.create_waiver, methods=["POST"]),
            Route("/waivers/{waiver_id:int}/revoke", self.revoke_waiver, methods=["POST"]),
        ]
