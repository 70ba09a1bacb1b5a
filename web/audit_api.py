"""The audit log's JSON API under /api/v1/audit (admins and auditors): entries by filter with
keyset paging, a streamed CSV export and verification of the chain."""

from __future__ import annotations

import datetime as dt

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from storage import Database, StoredEntry

from . import audit_models as am
from .handle import SystemHandle
from .models_io import body, query, record, reply
from .services import System, principal
from .services import audit as service


def entries_reply(found: list[StoredEntry], total: int, limit: int) -> Response:
    more = len(found) == limit and found[-1].id > 1
    return reply(
        am.AuditList,
        entries=[am.AuditEntryOut.model_construct(**record(e)) for e in found],
        total=total,
        next_before_id=found[-1].id if more else None,
    )


class AuditApi:
    def __init__(self, handle: SystemHandle, db: Database) -> None:
        self.sys = System(handle, db)

    async def entries(self, request: Request) -> Response:
        q = query(request, am.AuditQuery)
        found, total = await service.entries(self.sys, principal(request), q)
        return entries_reply(found, total, q.limit)

    async def export(self, request: Request) -> Response:
        q = query(request, am.AuditFilters)
        chunks = await service.export_csv(self.sys, principal(request), q)
        name = f"audit-{dt.datetime.now(dt.UTC):%Y%m%dT%H%MZ}.csv"
        return StreamingResponse(
            chunks,
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    async def verify(self, request: Request) -> Response:
        data = await body(request, am.AuditVerify, optional=True)
        result = await service.verify_now(self.sys, principal(request), data.since)
        return reply(am.AuditVerification, **record(result), verified_at=dt.datetime.now(dt.UTC))

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/audit", self.entries, methods=["GET"]),
            Route("/api/v1/audit/export", self.export, methods=["GET"]),
            Route("/api/v1/audit/verify", self.verify, methods=["POST"]),
        ]
