"""JSON API of the certificate lifecycle (issue 14).

``GET /api/v1/pki/crl.pem`` (agent-api §7.3), ``POST /api/v1/enroll`` and
``GET /api/v1/enroll/status/{token}`` (§7.1) are public: agents call them without an account.
The certificate and approval-queue routes are admin-only (``Action.MANAGE_PKI``).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from storage import Database

from . import pki_models as pm
from .handle import Missing, SystemHandle
from .models_io import body, path_id, query, record, reply
from .services import System, enrolment, principal
from .services import certificates as certs

CRL_PATH = "/api/v1/pki/crl.pem"
REPO_CONFIG_PATH = "/api/v1/pki/repo-config"
ENROL_PATH = "/api/v1/enroll"
ENROL_STATUS_PREFIX = "/api/v1/enroll/status/"


class PkiApi:
    def __init__(self, handle: SystemHandle, db: Database) -> None:
        self.sys = System(handle, db)
        self.gate = enrolment.EnrolGate()

    # -- enrolment (public: the agent has no account yet) --------------------------------------

    async def enrol(self, request: Request) -> Response:
        data = await body(request, pm.EnrolRequest)
        source = request.client.host if request.client else ""
        token = await enrolment.request(
            self.sys, self.gate, source, machine_id=data.machine_id, fqdn=data.fqdn,
            ip_address=str(data.ip_address), hostname=data.hostname, os_details=data.os_details,
            bootstrap_token=data.bootstrap_token,
        )  # fmt: skip
        return reply(pm.EnrolAccepted, 202, polling_token=token)

    async def enrol_status(self, request: Request) -> Response:
        answer = await enrolment.status(self.sys, str(request.path_params["token"]))
        content = pm.EnrolStatus.model_construct(**answer).model_dump_json(exclude_none=True)
        return Response(content, media_type="application/json")  # only the fields that apply

    # -- the approval queue (admins) ------------------------------------------------------------

    async def enrolments(self, request: Request) -> Response:
        rows = await enrolment.queue(self.sys, principal(request), pending_only=False)
        return reply(
            pm.Enrolments, enrolments=[pm.EnrolmentOut.model_construct(**record(r)) for r in rows]
        )

    async def approve(self, request: Request) -> Response:
        data = await body(request, pm.Approve, optional=True)
        row = await enrolment.approve(
            self.sys, principal(request), path_id(request, "enrolment_id"), data.group
        )
        return reply(pm.EnrolmentOut, **record(row))

    async def deny(self, request: Request) -> Response:
        row = await enrolment.deny(self.sys, principal(request), path_id(request, "enrolment_id"))
        return reply(pm.EnrolmentOut, **record(row))

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

    # -- repository configuration -----------------------------------------------------------

    async def repo_config(self, request: Request) -> Response:
        q = query(request, pm.RepoConfigQuery)
        found = await certs.repo_config_for(self.sys, q.distro_id)
        if found is None:
            raise Missing(f"no repository configuration for distro_id {q.distro_id!r}")
        return reply(pm.RepoConfig, **found)  # a bare RepoConfig, as the agent parses it

    async def repo_configs(self, request: Request) -> Response:
        found = await certs.list_repo_configs(self.sys, principal(request))
        return reply(
            pm.RepoConfigs, repo_configs=[pm.RepoConfig.model_construct(**f) for f in found]
        )

    async def save_repo_config(self, request: Request) -> Response:
        data = await body(request, pm.RepoConfig)
        await certs.save_repo(self.sys, principal(request), data.model_dump())
        return reply(pm.RepoConfig, **data.model_dump())

    async def delete_repo_config(self, request: Request) -> Response:
        data = await body(request, pm.DistroId)
        await certs.delete_repo(self.sys, principal(request), data.distro_id)
        return Response(status_code=204)

    def routes(self) -> list[Route]:
        return [
            Route(REPO_CONFIG_PATH, self.repo_config, methods=["GET"]),
            Route("/api/v1/repo-configs", self.repo_configs, methods=["GET"]),
            Route("/api/v1/repo-configs", self.save_repo_config, methods=["POST"]),
            Route("/api/v1/repo-configs/delete", self.delete_repo_config, methods=["POST"]),
            Route(CRL_PATH, self.crl, methods=["GET"]),
            Route(ENROL_PATH, self.enrol, methods=["POST"]),
            Route(ENROL_STATUS_PREFIX + "{token}", self.enrol_status, methods=["GET"]),
            Route("/api/v1/enrolments", self.enrolments, methods=["GET"]),
            Route("/api/v1/enrolments/{enrolment_id:int}/approve", self.approve, methods=["POST"]),
            Route("/api/v1/enrolments/{enrolment_id:int}/deny", self.deny, methods=["POST"]),
            Route("/api/v1/certificates", self.list_all, methods=["GET"]),
            Route("/api/v1/certificates/renew", self.renew, methods=["POST"]),
            Route("/api/v1/certificates/revoke", self.revoke, methods=["POST"]),
        ]
