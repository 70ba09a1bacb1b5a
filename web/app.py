"""The Starlette application: pages, the JSON API under /api/v1, the live relay, /metrics."""

from __future__ import annotations

import logging
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp

from ca import Sealer
from reports import ComplianceRules
from storage import AuditWriteFailed, Database, DatabaseUnavailable, Session, StorageError

from . import audit, metrics
from .api import Api
from .audit_api import AuditApi
from .audit_pages import AuditPages
from .auth import SESSION_COOKIE, Auth, AuthMiddleware
from .authz import Action, Forbidden, PrincipalMiddleware, may
from .authz import load as load_principal
from .errors import ApiError, api_error_handler, envelope
from .freshness import ZoneMiddleware
from .handle import HandleError, Missing, SystemHandle
from .job_pages import JobPages
from .jobs_api import JobsApi
from .mfa_pages import MfaPages
from .middleware import (
    DEFAULT_MAX_BODY_BYTES,
    BodyLimitMiddleware,
    DisconnectMiddleware,
    RequestIdMiddleware,
    SecurityHeadersMiddleware,
)
from .notification_pages import NotificationPages
from .notifications_api import NotificationsApi
from .openapi import document
from .pages import Pages, since
from .paths import IdOutOfRange
from .paths import register as register_path_convertors
from .pki_api import PkiApi
from .pki_pages import PkiPages
from .relay import Relay
from .report_pages import ReportPages
from .reports_api import ReportsApi
from .settings_pages import SettingsPages
from .sso import OidcClient
from .sso_api import SsoApi
from .sso_pages import SsoPages
from .tokens import Tokens
from .tokens_api import TokensApi
from .tokens_pages import TokenPages
from .user_pages import AccountPages
from .users_api import UsersApi

ROOT = Path(__file__).resolve().parent.parent
RETRY_AFTER_S = 30  # seconds a 429 asks the client to wait
UNAVAILABLE_RETRY_S = 10  # seconds a 503 (the database cannot answer) asks it to wait
log = logging.getLogger(__name__)

register_path_convertors()  # before any route is built: {id:int} is a bounded database id


def _templates_dir() -> Path:
    """templates/ beside the code in a checkout, share/patch-manager/templates when installed."""
    beside = ROOT / "templates"
    if beside.is_dir():
        return beside
    return Path(sys.prefix) / "share" / "patch-manager" / "templates"


DEFAULT_TEMPLATES = _templates_dir()
STATIC = Path(__file__).resolve().parent / "static"
VERSION = "0.1.0"


class WebApp(Starlette):
    """Starlette with ``web.middleware``'s layers outside its ServerErrorMiddleware, so that
    500s carry the request id and the security headers too."""

    def __init__(self, *args: Any, max_body_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_body_bytes = max_body_bytes

    def build_middleware_stack(self) -> ASGIApp:
        inner = BodyLimitMiddleware(super().build_middleware_stack(), self.max_body_bytes)
        return SecurityHeadersMiddleware(RequestIdMiddleware(inner))


async def _session_or_none(auth: Auth, token: str) -> Session | None:
    try:
        return await auth.session(token)
    except StorageError:
        return None  # the database went away since the health check


async def _observer(db: Database, session: Session, operators_see_ungrouped: bool) -> bool:
    try:
        who = await load_principal(
            db, session.user.id, operators_see_ungrouped=operators_see_ungrouped
        )
    except StorageError:
        return False
    return may(who, Action.OBSERVE)


def create_app(
    handle: SystemHandle,
    db: Database,
    *,
    auth: Auth | None = None,
    templates_dir: Path = DEFAULT_TEMPLATES,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    operators_see_ungrouped: bool = False,
    compliance: ComplianceRules | None = None,
    webauthn_rp_id: str = "",
    webauthn_origin: str = "",
    sealer: Sealer | None = None,
    sso_client: OidcClient | None = None,
    tokens: Tokens | None = None,
) -> Starlette:
    register_path_convertors()
    # API tokens and access JWTs: the JWT signing keys are sealed with ``sealer``; without one
    # (tests) with a key of this process only, so they do not outlive it.
    tokens = tokens or Tokens(
        db,
        sealer or Sealer(secrets.token_bytes(32)),
        operators_see_ungrouped=operators_see_ungrouped,
    )
    rules = compliance or ComplianceRules()
    auth = auth or Auth(db)
    templates = Jinja2Templates(directory=str(templates_dir))
    templates.env.filters["since"] = since
    pages = Pages(handle, db, auth, templates, rules)
    api = Api(handle, db)
    relay = Relay(
        handle, db, operators_see_ungrouped=operators_see_ungrouped, idle_timeout=auth.idle_timeout
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        """While serving: the relay hears of user changes made by other processes (the CLI)."""
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.watch_notifications)
            yield
            nursery.cancel_scope.cancel()

    async def health(request: Request) -> Response:
        """Anonymous callers get only the status; a session whose role may observe the system
        (``authz.Action.OBSERVE``: admins) and has completed any forced password change also
        gets the details. (A public path: the session
        is looked up only when its cookie is there, and only when the database is up: a
        session cannot be checked without it.)"""
        report = await handle.health()
        body: dict[str, object] = {"status": "ok" if report.ok else "degraded"}
        token = request.cookies.get(SESSION_COOKIE, "")
        session = await _session_or_none(auth, token) if token and report.database == "ok" else None
        if (
            session is not None
            and not session.user.must_change_password  # a one-time password proves little
            and session.mfa_at is not None  # nor does a password without its second factor
            and await _observer(db, session, operators_see_ungrouped)
        ):
            body |= {"database": report.database, "scheduler": report.scheduler}
            body |= report.details
        return JSONResponse(body, status_code=200 if report.ok else 503)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document(VERSION))

    def wants_html(request: Request) -> bool:
        path = request.url.path
        return not path.startswith("/api/") and path != "/metrics"

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if wants_html(request) and request.scope.get("state", {}).get("session"):
            context = {**pages.base(request, "Error", ""), "status": exc.status_code,
                       "message": str(exc.detail)}  # fmt: skip
            return templates.TemplateResponse(request, "error.html", context,
                                              status_code=exc.status_code)  # fmt: skip
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "error"
        )
        response = envelope(request, exc.status_code, code, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    async def refused(request: Request, exc: Exception) -> Response:
        """The service layer's typed refusals: 404 (a page for pages), 409/422/429 with the
        fields named in the envelope's details."""
        if isinstance(exc, Forbidden):
            await audit.record_denied(db, request, exc)
            if wants_html(request) and request.scope.get("state", {}).get("session"):
                context = {**pages.base(request, "Not allowed", ""), "status": 403,
                           "message": str(exc)}  # fmt: skip
                return templates.TemplateResponse(request, "error.html", context,
                                                  status_code=403)  # fmt: skip
            return envelope(request, 403, "forbidden", str(exc))
        if isinstance(exc, Missing):
            if wants_html(request) and request.scope.get("state", {}).get("session"):
                context = {**pages.base(request, "Not found", ""), "status": 404,
                           "message": str(exc)}  # fmt: skip
                return templates.TemplateResponse(request, "error.html", context,
                                                  status_code=404)  # fmt: skip
            return envelope(request, 404, "not_found", str(exc))
        assert isinstance(exc, HandleError)
        session = request.scope.get("state", {}).get("session")
        if isinstance(exc, IdOutOfRange) and wants_html(request) and session:
            context = {**pages.base(request, "Invalid address", ""), "status": 422,
                       "message": f"No such page: {exc.message}"}  # fmt: skip
            return templates.TemplateResponse(request, "error.html", context,
                                              status_code=422)  # fmt: skip
        response = envelope(request, exc.status, exc.code, exc.message, {"fields": exc.fields})
        if exc.status == 429:  # busy (discovery scans): try again once one has had time to end
            response.headers["retry-after"] = str(RETRY_AFTER_S)
        return response

    async def server_error(request: Request, exc: Exception) -> Response:
        # A database outage in a middleware (the session lookup) reaches only this handler.
        leaves = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
        if leaves and all(isinstance(leaf, DatabaseUnavailable) for leaf in leaves):
            return await unavailable(request, leaves[0])  # type: ignore[arg-type]
        return envelope(request, 500, "internal_error", "internal error; see the server log")

    async def unaudited(request: Request, exc: Exception) -> Response:
        return await audit.write_failed(request, exc)

    async def unavailable(request: Request, exc: Exception) -> Response:
        """503 + Retry-After: the database could not answer (down, or a statement timed out or
        was cancelled); nothing the request tried to change was committed."""
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        message = "the database is not reachable; try again soon"
        response: Response
        if wants_html(request) and request.scope.get("state", {}).get("session"):
            context = {**pages.base(request, "Unavailable", ""), "status": 503,
                       "message": message}  # fmt: skip
            response = templates.TemplateResponse(request, "error.html", context,
                                                  status_code=503)  # fmt: skip
        else:
            response = envelope(request, 503, "unavailable", message)
        response.headers["retry-after"] = str(UNAVAILABLE_RETRY_S)
        return response

    routes = [
        Route("/api/v1/health", health, methods=["GET"]),
        Route("/api/v1/openapi.json", openapi, methods=["GET"]),
        Route("/metrics", metrics.endpoint(handle, relay, db), methods=["GET"]),
        WebSocketRoute("/api/v1/live", relay.endpoint),
        *api.routes(),
        *JobsApi(handle, db).routes(),
        *PkiApi(handle, db).routes(),
        *NotificationsApi(db).routes(),
        *NotificationPages(pages).routes(),
        *pages.routes(),
        *AccountPages(pages).routes(),
        *MfaPages(pages, rp_id=webauthn_rp_id, origin=webauthn_origin).routes(),
        *UsersApi(handle, db, auth).routes(),
        *JobPages(pages).routes(),
        *PkiPages(pages).routes(),
        *SettingsPages(pages).routes(),
        *SsoPages(pages, sso_client or OidcClient(), sealer).routes(),
        *SsoApi(pages.sys).routes(),
        *ReportsApi(handle, db, rules).routes(),
        *ReportPages(pages, rules).routes(),
        *AuditApi(handle, db).routes(),
        *AuditPages(pages).routes(),
        *TokensApi(tokens).routes(),
        *TokenPages(pages, tokens).routes(),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    app = WebApp(
        routes=routes,
        lifespan=lifespan,
        max_body_bytes=max_body_bytes,
        middleware=[
            Middleware(DisconnectMiddleware),
            Middleware(AuthMiddleware, auth=auth, tokens=tokens),
            Middleware(PrincipalMiddleware, db=db, operators_see_ungrouped=operators_see_ungrouped),
            Middleware(audit.AuditContextMiddleware),
            Middleware(ZoneMiddleware, zones=pages.zones, db=db),
        ],
        exception_handlers={
            ApiError: api_error_handler,
            HandleError: refused,
            Missing: refused,
            Forbidden: refused,
            AuditWriteFailed: unaudited,
            DatabaseUnavailable: unavailable,
            HTTPException: http_error,
            Exception: server_error,
        },
    )
    app.state.relay = relay
    app.state.tokens = tokens
    return app
