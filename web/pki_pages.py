"""Certificates and enrolment pages (issue 14): every certificate with its expiry, renew and
revoke with confirmation, root CA download link; the enrolment approval queue. Admin-only
(``Action.MANAGE_PKI``, checked by the services)."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from storage import EnrolmentRow, GroupItem

from .forms import fields
from .handle import HandleError, Missing
from .models_io import path_id
from .pages import Base, Pages
from .services import certificates as certs
from .services import enrolment, groups, principal
from .services.certificates import CertificateHost, CertificateView


@dataclass(frozen=True)
class CertificatesPage(Base):
    certificates: list[CertificateView] = field(default_factory=list)
    hosts: dict[str, CertificateHost] = field(default_factory=dict)  # by serial
    expiry_days: dict[str, float] = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True)
class EnrolmentsPage(Base):
    pending: list[EnrolmentRow] = field(default_factory=list)
    decided: list[EnrolmentRow] = field(default_factory=list)
    groups: list[GroupItem] = field(default_factory=list)
    error: str = ""


class PkiPages:
    def __init__(self, pages: Pages) -> None:
        self.p = pages
        self.sys = pages.sys

    async def certificates(self, request: Request, error: str = "", status: int = 200) -> Response:
        who = principal(request)
        views, expiry = await certs.listing(self.sys, who)
        page = CertificatesPage(
            **self.p.base(request, "Certificates", "certificates"),
            certificates=views,
            hosts=await certs.hosts_of(self.sys, who, views),
            expiry_days={k: round(v / 86_400, 1) for k, v in expiry.items()},
            error=error,
        )
        return self.p.render(request, "certificates.html", page, status)

    async def renew(self, request: Request) -> Response:
        form = fields(await request.form())
        try:
            serial = await certs.renew(self.sys, principal(request), form.get("kind", ""))
        except HandleError as exc:
            return await self.certificates(request, exc.message, 422)
        return self.p.back("/certificates", f"Renewed: new serial {serial}, in use now")

    async def revoke(self, request: Request) -> Response:
        form = fields(await request.form())
        try:
            serial = await certs.revoke(self.sys, principal(request), form.get("serial", ""))
        except Missing as exc:
            return await self.certificates(request, str(exc), 404)
        except HandleError as exc:
            return await self.certificates(request, exc.message, exc.status)
        return self.p.back("/certificates", f"Revoked {serial}; the CRL was re-signed")

    async def enrolments(self, request: Request, error: str = "", status: int = 200) -> Response:
        who = principal(request)
        rows = await enrolment.queue(self.sys, who, pending_only=False)
        pending = await enrolment.queue(self.sys, who, pending_only=True)
        waiting = {r.id for r in pending}
        page = EnrolmentsPage(
            **self.p.base(request, "Enrolment", "enrolments"),
            pending=pending,
            decided=[r for r in rows if r.id not in waiting][:50],
            groups=await groups.all_groups(self.sys, who),
            error=error,
        )
        return self.p.render(request, "enrolments.html", page, status)

    async def approve(self, request: Request) -> Response:
        return await self._decide(request, approve=True)

    async def deny(self, request: Request) -> Response:
        return await self._decide(request, approve=False)

    async def _decide(self, request: Request, *, approve: bool) -> Response:
        who = principal(request)
        form = fields(await request.form())
        try:
            enrolment_id = path_id(request, "enrolment_id")
            if approve:
                row = await enrolment.approve(
                    self.sys, who, enrolment_id, form.get("group") or None
                )
                notice = f"Approved {row.fqdn}: host registered, certificate at its next poll"
            else:
                row = await enrolment.deny(self.sys, who, enrolment_id)
                notice = f"Denied {row.fqdn}"
        except Missing as exc:
            return self.p.not_found(request, str(exc))
        except HandleError as exc:
            return await self.enrolments(request, exc.message, exc.status)
        return self.p.back("/enrolments", notice)

    async def bundle(self, request: Request) -> Response:
        try:
            name, archive = await certs.host_bundle(
                self.sys, principal(request), path_id(request, "host_id")
            )
        except Missing as exc:
            return self.p.not_found(request, str(exc))
        return Response(
            archive,
            media_type="application/gzip",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    async def issue(self, request: Request) -> Response:
        form = fields(await request.form())
        try:
            name, archive = await certs.issue_bundle(
                self.sys, principal(request), form.get("names", "")
            )
        except HandleError as exc:
            return await self.certificates(request, exc.message, 422)
        return Response(
            archive,
            media_type="application/gzip",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    async def reissue(self, request: Request) -> Response:
        form = fields(await request.form())
        try:
            name, archive = await certs.reissue_bundle(
                self.sys, principal(request), form.get("serial", "")
            )
        except Missing as exc:
            return await self.certificates(request, str(exc), 404)
        except HandleError as exc:
            return await self.certificates(request, exc.message, exc.status)
        return Response(
            archive,
            media_type="application/gzip",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    def routes(self) -> list[Route]:
        return [
            Route("/certificates/issue", self.issue, methods=["POST"]),
            Route("/certificates/reissue", self.reissue, methods=["POST"]),
            Route("/hosts/{host_id:int}/certificate-bundle", self.bundle, methods=["POST"]),
            Route("/certificates", self.certificates, methods=["GET"]),
            Route("/certificates/renew", self.renew, methods=["POST"]),
            Route("/certificates/revoke", self.revoke, methods=["POST"]),
            Route("/enrolments", self.enrolments, methods=["GET"]),
            Route("/enrolments/{enrolment_id:int}/approve", self.approve, methods=["POST"]),
            Route("/enrolments/{enrolment_id:int}/deny", self.deny, methods=["POST"]),
        ]
