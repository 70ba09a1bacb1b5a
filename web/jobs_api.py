"""JSON API for deployments, maintenance windows, blackouts and the calendar (R-4, R-5)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from maintenance import Interval, WindowError, WindowRule, occurrences
from storage import (
    Database,
    HostFilter,
    JobSpec,
    NotFound,
    create_blackout,
    delete_blackout,
    delete_window,
    get_job,
    job_rows,
    list_blackouts,
    list_jobs,
    list_windows,
    pending_union,
    save_window,
    search_hosts,
)

from .api import invalid, json_body, path_id
from .errors import ApiError
from .forms import JobInput, ValidationFailed, job_input, window_input
from .handle import SystemHandle
from .serialize import to_json

UTC = dt.UTC


async def resolve_hosts(db: Database, data: JobInput) -> list[int]:
    """Host ids from an explicit list, a group or a text filter (in that order)."""
    if data.host_ids:
        return list(data.host_ids)
    f = HostFilter(group=data.group, text=data.filter_text, limit=100_000)
    items, _ = await db.run(search_hosts, f)
    return [h.id for h in items]


def spec_of(data: JobInput, user: str) -> JobSpec:
    return JobSpec(
        kind=data.kind,
        schedule=data.schedule,
        selection=data.selection,
        packages=data.packages,
        allow_reboot=data.allow_reboot,
        reboot_delay_s=data.reboot_delay_s,
        batch_size=data.batch_size,
        batch_percent=data.batch_percent,
        failure_threshold=data.failure_threshold,
        canary=data.canary,
        created_by=user,
    )


def calendar(
    windows: list[Any], blackouts: list[Any], start: dt.datetime, days: int
) -> list[dict[str, Any]]:
    """Every enabled window's occurrences for the next ``days`` days, blackouts cut out."""
    end = start + dt.timedelta(days=days)
    shut = [Interval(b.starts_at, b.ends_at) for b in blackouts]
    entries = []
    for w in windows:
        if not w.enabled:
            continue
        for piece in occurrences(WindowRule.from_columns(w), start, end, shut):
            entries.append(
                {
                    "window_id": w.id,
                    "name": w.name,
                    "target": w.target,
                    "start": piece.start.isoformat(),
                    "end": piece.end.isoformat(),
                    "auto_apply": w.auto_apply,
                }
            )
    return sorted(entries, key=lambda e: e["start"])


class JobsApi:
    def __init__(self, handle: SystemHandle, db: Database) -> None:
        self.handle = handle
        self.db = db

    @staticmethod
    def user(request: Request) -> str:
        session = request.scope["state"].get("session")
        return session.user.username if session else ""

    # -- jobs -------------------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        try:
            data = job_input(await json_body(request))
        except ValidationFailed as exc:
            raise invalid(exc) from None
        hosts = await resolve_hosts(self.db, data)
        if not hosts:
            raise ApiError(
                422,
                "no host matches the selection",
                details={"fields": {"hosts": "no host matches"}},
            )
        job_id = await self.handle.create_job(spec_of(data, self.user(request)), hosts)
        return JSONResponse({"job_id": job_id, "hosts": len(hosts)}, status_code=201)

    async def list_jobs(self, request: Request) -> Response:
        status = request.query_params.get("status", "")
        items = await self.db.run(list_jobs, status)
        return JSONResponse({"jobs": [{**to_json(job), "hosts": counts} for job, counts in items]})

    async def get(self, request: Request) -> Response:
        job_id = path_id(request, "job_id")
        try:
            job = await self.db.run(get_job, job_id)
        except NotFound:
            raise ApiError(404, f"no job {job_id}") from None
        rows = await self.db.run(job_rows, job_id)
        return JSONResponse({**to_json(job), "rows": to_json(rows)})

    async def cancel(self, request: Request) -> Response:
        try:
            count = await self.handle.cancel_job(path_id(request, "job_id"))
        except NotFound as exc:
            raise ApiError(404, str(exc)) from None
        return JSONResponse({"cancelled": count})

    async def retry(self, request: Request) -> Response:
        return JSONResponse(
            {"retrying": await self.handle.retry_failed(path_id(request, "job_id"))}
        )

    async def rollback(self, request: Request) -> Response:
        body = await json_body(request) if await request.body() else {}
        ids = body.get("host_ids")
        try:
            job_id = await self.handle.rollback(path_id(request, "job_id"), ids)
        except ValueError as exc:
            raise ApiError(409, str(exc)) from None
        return JSONResponse({"job_id": job_id}, status_code=201)

    async def preview(self, request: Request) -> Response:
        body = await json_body(request)
        try:
            data = job_input({"kind": "patch", **body})
        except ValidationFailed as exc:
            raise invalid(exc) from None
        hosts = await resolve_hosts(self.db, data)
        return JSONResponse(
            {"hosts": len(hosts), "patches": await self.db.run(pending_union, hosts)}
        )

    # -- windows ----------------------------------------------------------------------------

    async def windows(self, request: Request) -> Response:
        return JSONResponse({"windows": to_json(await self.db.run(list_windows))})

    async def save_window(self, request: Request) -> Response:
        window_id = (
            int(request.path_params["window_id"]) if "window_id" in request.path_params else None
        )
        try:
            values = window_input(await json_body(request))
            saved = await self.db.run(save_window, values, window_id, self.user(request))
        except ValidationFailed as exc:
            raise invalid(exc) from None
        except NotFound as exc:
            raise ApiError(404, str(exc)) from None
        self.handle.poke_jobs()
        return JSONResponse({"id": saved}, status_code=201 if window_id is None else 200)

    async def delete_window(self, request: Request) -> Response:
        try:
            await self.db.run(delete_window, path_id(request, "window_id"), self.user(request))
        except NotFound as exc:
            raise ApiError(404, str(exc)) from None
        return Response(status_code=204)

    async def window_preview(self, request: Request) -> Response:
        """The next occurrences of a draft window, for the editor's live preview."""
        body = await json_body(request)
        try:
            values = window_input({**body, "host_id": body.get("host_id") or 1, "group_id": None})
            rule = WindowRule.from_columns(type("Draft", (), values)()).validate()
        except ValidationFailed as exc:
            raise invalid(exc) from None
        except WindowError as exc:
            raise ApiError(422, str(exc), details={"fields": {exc.field: exc.message}}) from None
        now = dt.datetime.now(UTC)
        upcoming = occurrences(rule, now, now + dt.timedelta(days=120))[:8]
        return JSONResponse(
            {
                "occurrences": [
                    {"start": i.start.isoformat(), "end": i.end.isoformat()} for i in upcoming
                ]
            }
        )

    async def calendar(self, request: Request) -> Response:
        days = min(max(int(request.query_params.get("days", "30") or 30), 1), 92)
        windows = await self.db.run(list_windows)
        blackouts = await self.db.run(list_blackouts)
        return JSONResponse({"entries": calendar(windows, blackouts, dt.datetime.now(UTC), days)})

    async def blackouts(self, request: Request) -> Response:
        return JSONResponse({"blackouts": to_json(await self.db.run(list_blackouts))})

    async def create_blackout(self, request: Request) -> Response:
        body = await json_body(request)
        try:
            start = dt.datetime.fromisoformat(str(body.get("starts_at")))
            end = dt.datetime.fromisoformat(str(body.get("ends_at")))
        except ValueError:
            raise ApiError(
                422,
                "some fields are invalid",
                details={"fields": {"starts_at": "ISO 8601 date-times with a zone"}},
            ) from None
        if start.tzinfo is None or end.tzinfo is None or end <= start:
            raise ApiError(
                422,
                "some fields are invalid",
                details={"fields": {"ends_at": "must be after starts_at; both with a time zone"}},
            )
        blackout_id = await self.db.run(
            create_blackout, str(body.get("name") or "")[:100], start, end
        )
        self.handle.poke_jobs()
        return JSONResponse({"id": blackout_id}, status_code=201)

    async def delete_blackout(self, request: Request) -> Response:
        try:
            await self.db.run(delete_blackout, path_id(request, "blackout_id"))
        except NotFound as exc:
            raise ApiError(404, str(exc)) from None
        return Response(status_code=204)

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/jobs", self.list_jobs, methods=["GET"]),
            Route("/api/v1/jobs", self.create, methods=["POST"]),
            Route("/api/v1/jobs/{job_id:int}", self.get, methods=["GET"]),
            Route("/api/v1/jobs/{job_id:int}/cancel", self.cancel, methods=["POST"]),
            Route("/api/v1/jobs/{job_id:int}/retry", self.retry, methods=["POST"]),
            Route("/api/v1/jobs/{job_id:int}/rollback", self.rollback, methods=["POST"]),
            Route("/api/v1/deploy/preview", self.preview, methods=["POST"]),
            Route("/api/v1/windows", self.windows, methods=["GET"]),
            Route("/api/v1/windows", self.save_window, methods=["POST"]),
            Route("/api/v1/windows/preview", self.window_preview, methods=["POST"]),
            Route("/api/v1/windows/{window_id:int}", self.save_window, methods=["PUT"]),
            Route("/api/v1/windows/{window_id:int}", self.delete_window, methods=["DELETE"]),
            Route("/api/v1/calendar", self.calendar, methods=["GET"]),
            Route("/api/v1/blackouts", self.blackouts, methods=["GET"]),
            Route("/api/v1/blackouts", self.create_blackout, methods=["POST"]),
            Route("/api/v1/blackouts/{blackout_id:int}", self.delete_blackout, methods=["DELETE"]),
        ]
