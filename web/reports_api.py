"""JSON API of the reports (``GET /api/v1/reports/{kind}?format=json|csv|pdf``), the evidence
pack and risk waivers: typed models in, the service layer, typed models out. CSV is streamed."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from reports import ComplianceRules
from reports import model as rm
from storage import Database

from . import models as m
from . import report_models as rmo
from .handle import SystemHandle
from .models_io import body, path_id, query, record, reply
from .services import System, principal
from .services import reports as service
from .services import waivers as waiver_service


def _attachment(filename: str) -> dict[str, str]:
    return {"content-disposition": f'attachment; filename="{filename}"'}


def report_reply(kind: str, report: service.Report) -> Response:
    if isinstance(report, rm.ComplianceReport):
        s = report.summary
        summary = rmo.SummaryOut(**record(s), percent=s.percent, percent_of_all=s.percent_of_all)
        return reply(rmo.ComplianceOut, as_of=report.as_of, summary=summary, trend=report.trend,
                     hosts=report.hosts, waivers=report.waivers, about=report.about)  # fmt: skip
    if isinstance(report, rm.HistoryReport):
        return reply(rmo.HistoryOut, **record(report))
    if isinstance(report, rm.ExposureReport):
        return reply(rmo.ExposureOut, **record(report))
    return reply(rmo.RebootsOut, **record(report))


class ReportsApi:
    def __init__(self, handle: SystemHandle, db: Database, rules: ComplianceRules) -> None:
        self.sys = System(handle, db)
        self.rules = rules

    async def report(self, request: Request) -> Response:
        kind = request.url.path.rsplit("/", 1)[-1]
        return await self.render(request, kind, query(request, rmo.ReportQuery))

    async def render(self, request: Request, kind: str, q: rmo.ReportQuery) -> Response:
        """The report ``kind`` for ``q`` as JSON, streamed CSV or PDF."""
        who = principal(request)
        name = f"{kind}-{service.now():%Y%m%dT%H%MZ}"
        if q.format == "csv":
            return StreamingResponse(
                await service.open_csv(self.sys, who, self.rules, kind, q),
                media_type="text/csv; charset=utf-8",
                headers=_attachment(f"{name}.csv"),
            )
        if q.format == "pdf":
            data = await service.pdf(self.sys, who, self.rules, kind, q)
            return Response(data, media_type="application/pdf", headers=_attachment(f"{name}.pdf"))
        return report_reply(kind, await service.download_json(self.sys, who, self.rules, kind, q))

    async def evidence(self, request: Request) -> Response:
        q = query(request, rmo.EvidenceQuery)
        data = await service.evidence(self.sys, principal(request), self.rules, q)
        name = f"evidence-{service.now():%Y%m%dT%H%MZ}.zip"
        return Response(data, media_type="application/zip", headers=_attachment(name))

    async def waivers(self, request: Request) -> Response:
        rows = await waiver_service.waivers(self.sys, principal(request))
        return reply(rmo.WaiversOut, as_of=service.now(), waivers=rows)

    async def create_waiver(self, request: Request) -> Response:
        data = await body(request, rmo.WaiverCreate)
        waiver_id, warnings = await waiver_service.create(self.sys, principal(request), data)
        return reply(rmo.WaiverCreated, 201, id=waiver_id, warnings=warnings)

    async def revoke_waiver(self, request: Request) -> Response:
        await waiver_service.revoke(self.sys, principal(request), path_id(request, "waiver_id"))
        return Response(status_code=204)

    async def definitions(self, request: Request) -> Response:
        rows = await service.definitions(self.sys, principal(request))
        return reply(rmo.Definitions, definitions=rows)

    async def create_definition(self, request: Request) -> Response:
        data = await body(request, rmo.DefinitionCreate)
        definition_id = await service.save_definition(self.sys, principal(request), data)
        return reply(m.Created, 201, id=definition_id)

    async def delete_definition(self, request: Request) -> Response:
        definition_id = path_id(request, "definition_id")
        await service.delete_definition(self.sys, principal(request), definition_id)
        return Response(status_code=204)

    async def download_definition(self, request: Request) -> Response:
        """Run a stored definition now, within the caller's scope."""
        d = await service.definition(
            self.sys, principal(request), path_id(request, "definition_id")
        )
        return await self.render(request, d.report, service.definition_query(d))

    def routes(self) -> list[Route]:
        return [
            *(
                Route(f"/api/v1/reports/{kind}", self.report, methods=["GET"])
                for kind in service.KINDS
            ),
            Route("/api/v1/reports/evidence", self.evidence, methods=["GET"]),
            Route("/api/v1/waivers", self.waivers, methods=["GET"]),
            Route("/api/v1/waivers", self.create_waiver, methods=["POST"]),
            Route("/api/v1/waivers/{waiver_id:int}/revoke", self.revoke_waiver, methods=["POST"]),
            Route("/api/v1/report-definitions", self.definitions, methods=["GET"]),
            Route("/api/v1/report-definitions", self.create_definition, methods=["POST"]),
            Route(
                "/api/v1/report-definitions/{definition_id:int}",
                self.delete_definition,
                methods=["DELETE"],
            ),
            Route(
                "/api/v1/report-definitions/{definition_id:int}/download",
                self.download_definition,
                methods=["GET"],
            ),
        ]
