"""The Starlette application: pages, the JSON API under /api/v1 and the live relay."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from .errors import ApiError, api_error_handler, http_error_handler, unhandled_error_handler
from .handle import SystemHandle
from .middleware import RequestIdMiddleware

DEFAULT_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def create_app(handle: SystemHandle, *, templates_dir: Path = DEFAULT_TEMPLATES) -> Starlette:
    templates = Jinja2Templates(directory=str(templates_dir))

    async def health(request: Request) -> Response:
        report = await handle.health()
        body = {
            "status": "ok" if report.ok else "degraded",
            "database": report.database,
            "scheduler": report.scheduler,
            **report.details,
        }
        return JSONResponse(body, status_code=200 if report.ok else 503)

    async def index(request: Request) -> Response:
        return templates.TemplateResponse(request, "index.html", {"title": "Dashboard"})

    return Starlette(
        routes=[
            Route("/", index, name="index"),
            Route("/api/v1/health", health, name="api_health"),
        ],
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers={
            ApiError: api_error_handler,
            HTTPException: http_error_handler,
            Exception: unhandled_error_handler,
        },
    )
