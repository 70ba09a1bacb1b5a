"""JSON API of the certificate lifecycle (issue 14).

``GET /api/v1/pki/crl.pem`` is public (agents fetch it, agent-api §7.3); the certificate
routes are admin-only (``Action.MANAGE_PKI``).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from storage import Database

from . import pki_models as pm
from .handle import SystemHandle
from .models_io import body, record, reply
from .services import System, principal
from .services import certificates as certs

CRL_PATH = "/api/v1/pki/crl.pem"


class PkiApi:
    def __init__(self, handle: SystemHandle, db: Database) -> None:
        self.sys = System(handle, db)

    async def crl(self, request: Request) -> Response:
        return Response(
            await certs.crl_pem(self.sys),
            media_type="application/x-pem-file",
            headers={"cache-control": "no-cache"},
        )

    async def list_all(self, request: Request) -> Response:
        views, expiry = await certs.listing(self.sys, principal(request))
        items = [
            pm.CertificateOut.model_construct(**(record(v) | {"sans": list(v.sans)})) for v in views
        ]
        return reply(pm.Certificates, certificates=items, expiry_s=expiry)

    async def renew(self, request: Request) -> Response:
        data = await body(request, pm.RenewRequest)
        serial = await certs.renew(self.sys, principal(request), data.kind)
        return reply(pm.Renewed, kind=data.kind, serial=serial)

    async def revoke(self, request: Request) -> Response:
        data = await body(request, pm.RevokeRequest)
        serial = await certs.revoke(self.sys, principal(request), data.serial)
        return reply(pm.Revoked, serial=serial)

    def routes(self) -> list[Route]:
        return [
            Route(CRL_PATH, self.crl, methods=["GET"]),
            Route("/api/v1/certificates", self.list_all, methods=["GET"]),
            Route("/api/v1/certificates/renew", self.renew, methods=["POST"]),
            Route("/api/v1/certificates/revoke", self.revoke, methods=["POST"]),
        ]
