"""The Audit page (admins and auditors): entries by time, actor, action, target and outcome,
paged newest first; the CSV export of the same filter; the last verification of the chain and
a "verify now" button. The same models and service as the API."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from storage import StoredEntry

from . import audit_models as am
from .forms import in_zone
from .handle import HandleError
from .models_io import given, validate
from .pages import Base, Pages
from .services import audit as service
from .services import principal

FILTERS = ("since", "until", "actor", "action", "target", "outcome")


@dataclass(frozen=True)
class AuditPage(Base):
    entries: list[StoredEntry] = field(default_factory=list)
    total: int = 0
    filters: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    next_page: str = ""  # the query string of the next (older) page; "" on the last
    export_query: str = ""
    last_verify: StoredEntry | None = None
    hosts: dict[int, list[tuple[str, str]]] = field(default_factory=dict)  # entry id → targets


class AuditPages:
    def __init__(self, pages: Pages) -> None:
        self.p = pages
        self.sys = pages.sys

    async def audit(self, request: Request) -> Response:
        who = principal(request)
        raw = {k: request.query_params.get(k, "")[:200] for k in (*FILTERS, "before_id")}
        errors: dict[str, str] = {}
        found: list[StoredEntry] = []
        total = 0
        next_page = ""
        filters = {k: raw[k] for k in FILTERS}
        # The page's from/until are in the user's time zone (the API's: UTC without a zone).
        zoned = dict(raw)
        try:
            zoned = in_zone(raw, ("since", "until"), self.p.zones.get(principal(request).user_id))
            q = validate(am.AuditQuery, given(zoned) | {"limit": 50})
        except HandleError as exc:
            errors = exc.fields
            q = None
        last = await service.last_verification(self.sys, who)
        if q is not None:
            found, total = await service.entries(self.sys, who, q)
            if len(found) == q.limit and found[-1].id > 1:
                next_page = urlencode(given(filters) | {"before_id": found[-1].id})
        page = AuditPage(
            **self.p.base(request, "Audit log", "audit"),
            entries=found,
            total=total,
            filters=filters,
            errors=errors,
            next_page=next_page,
            export_query=urlencode(given({k: zoned[k] for k in FILTERS})),
            last_verify=last,
            hosts=await service.target_hosts(self.sys, found),
        )
        return self.p.render(request, "audit.html", page, 422 if errors else 200)

    async def verify(self, request: Request) -> Response:
        result = await service.verify_now(self.sys, principal(request))
        if result.ok:
            notice = f"The audit chain verifies: {result.checked} entries checked."
        else:
            at = f" at entry {result.broken_id}" if result.broken_id is not None else ""
            notice = f"The audit chain is BROKEN{at}: {result.problem}"
        return self.p.back("/audit", notice)

    def routes(self) -> list[Route]:
        return [
            Route("/audit", self.audit, methods=["GET"]),
            Route("/audit/verify", self.verify, methods=["POST"]),
        ]
