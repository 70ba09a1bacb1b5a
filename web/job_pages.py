"""Pages for deployments, jobs and maintenance windows."""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from storage import (
    BlackoutRow,
    GroupItem,
    HostFilter,
    HostListItem,
    JobHostRow,
    JobRow,
    NotFound,
    WindowRow,
    create_blackout,
    delete_blackout,
    delete_window,
    get_job,
    job_rows,
    list_blackouts,
    list_groups,
    list_jobs,
    list_windows,
    pending_union,
    save_window,
    search_hosts,
)

from .forms import ValidationFailed, job_input, window_input
from .jobs_api import calendar, resolve_hosts, spec_of
from .pages import Base, Pages

UTC = dt.UTC


@dataclass(frozen=True)
class DeployPage(Base):
    hosts: list[HostListItem] = field(default_factory=list)
    groups: list[GroupItem] = field(default_factory=list)
    patches: list[dict[str, Any]] = field(default_factory=list)
    form: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class JobsPage(Base):
    jobs: list[tuple[JobRow, dict[str, int]]] = field(default_factory=list)
    status: str = ""


@dataclass(frozen=True)
class JobPage(Base):
    job: JobRow | None = None
    rows: list[JobHostRow] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class WindowsPage(Base):
    windows: list[WindowRow] = field(default_factory=list)
    blackouts: list[BlackoutRow] = field(default_factory=list)
    calendar: list[dict[str, Any]] = field(default_factory=list)
    days: list[dict[str, Any]] = field(default_factory=list)
    hosts: list[HostListItem] = field(default_factory=list)
    groups: list[GroupItem] = field(default_factory=list)
    form: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    today: str = ""


def calendar_days(
    entries: list[dict[str, Any]], start: dt.date, days: int = 30
) -> list[dict[str, Any]]:
    by_day: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        by_day.setdefault(e["start"][:10], []).append(e)
    return [
        {"date": d, "entries": by_day.get(d.isoformat(), [])}
        for d in (start + dt.timedelta(days=i) for i in range(days))
    ]


class JobPages:
    def __init__(self, pages: Pages) -> None:
        self.p = pages
        self.db = pages.db
        self.handle = pages.handle

    async def deploy(
        self,
        request: Request,
        errors: dict[str, str] | None = None,
        form: dict[str, str] | None = None,
        status: int = 200,
    ) -> Response:
        form = form or {k: v for k, v in request.query_params.items()}
        ids = [int(i) for i in form.get("host_ids", "").split(",") if i.strip().isdigit()]
        f = HostFilter(group=form.get("group", ""), text=form.get("filter", ""), limit=100_000)
        if ids:
            hosts = [
                h
                for h in (await self.db.run(search_hosts, HostFilter(limit=100_000)))[0]
                if h.id in ids
            ]
        elif form.get("group") or form.get("filter"):
            hosts = (await self.db.run(search_hosts, f))[0]
        else:
            hosts = []
        patches = await self.db.run(pending_union, [h.id for h in hosts]) if hosts else []
        page = DeployPage(
            **self.p.base(request, "Deploy", "deploy"),
            hosts=hosts,
            groups=await self.db.run(list_groups),
            patches=patches,
            form=form,
            errors=errors or {},
        )
        return self.p.render(request, "deploy.html", page, status)

    async def create(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).multi_items() if k != "csrf_token"}
        try:
            data = job_input(form)
        except ValidationFailed as exc:
            return await self.deploy(request, exc.errors, form, 422)
        hosts = await resolve_hosts(self.db, data)
        if not hosts:
            return await self.deploy(request, {"hosts": "no host matches the selection"}, form, 422)
        session = request.scope["state"]["session"]
        job_id = await self.handle.create_job(spec_of(data, session.user.username), hosts)
        return self.p.back(f"/jobs/{job_id}", f"Job {job_id} created for {len(hosts)} host(s)")

    async def jobs(self, request: Request) -> Response:
        status = request.query_params.get("status", "")
        page = JobsPage(
            **self.p.base(request, "Jobs", "jobs"),
            jobs=await self.db.run(list_jobs, status),
            status=status,
        )
        return self.p.render(request, "jobs.html", page)

    async def job(self, request: Request) -> Response:
        job_id = int(request.path_params["job_id"])
        try:
            job = await self.db.run(get_job, job_id)
        except NotFound:
            return self.p.not_found(request, f"There is no job {job_id}.")
        rows = await self.db.run(job_rows, job_id)
        counts: dict[str, int] = {}
        for r in rows:
            counts[r.state] = counts.get(r.state, 0) + 1
        page = JobPage(
            **self.p.base(request, f"Job {job_id}", "jobs"), job=job, rows=rows, counts=counts
        )
        return self.p.render(request, "job.html", page)

    async def job_action(self, request: Request) -> Response:
        job_id = int(request.path_params["job_id"])
        action = request.path_params["action"]
        if action not in ("cancel", "retry", "rollback"):
            return self.p.not_found(request, f"Unknown job action {action!r}.")
        form = await request.form()
        if action == "cancel":
            count = await self.handle.cancel_job(job_id)
            return self.p.back(f"/jobs/{job_id}", f"{count} host(s) cancelled")
        if action == "retry":
            count = await self.handle.retry_failed(job_id)
            return self.p.back(f"/jobs/{job_id}", f"Retrying {count} failed host(s)")
        hosts = [int(str(h)) for h in form.getlist("host_id") if str(h).isdigit()] or None
        try:
            new_id = await self.handle.rollback(job_id, hosts)
        except ValueError as exc:
            return self.p.back(f"/jobs/{job_id}", str(exc))
        return self.p.back(f"/jobs/{new_id}", f"Rollback job {new_id} created")

    async def windows(
        self,
        request: Request,
        errors: dict[str, str] | None = None,
        form: dict[str, str] | None = None,
        status: int = 200,
    ) -> Response:
        windows = await self.db.run(list_windows)
        blackouts = await self.db.run(list_blackouts)
        now = dt.datetime.now(UTC)
        entries = calendar(windows, blackouts, now, 30)
        page = WindowsPage(
            **self.p.base(request, "Maintenance windows", "windows"),
            windows=windows,
            blackouts=blackouts,
            calendar=entries,
            days=calendar_days(entries, now.date()),
            hosts=(await self.db.run(search_hosts, HostFilter(limit=100_000)))[0],
            groups=await self.db.run(list_groups),
            form=form or {},
            errors=errors or {},
            today=now.date().isoformat(),
        )
        return self.p.render(request, "windows.html", page, status)

    async def save_window(self, request: Request) -> Response:
        raw = await request.form()
        form: dict[str, Any] = {k: str(v) for k, v in raw.items() if k != "csrf_token"}
        form["weekdays"] = [str(v) for v in raw.getlist("weekdays")]
        target = str(raw.get("target", ""))
        if target.startswith("host:"):
            form["host_id"] = target[5:]
        elif target.startswith("group:"):
            form["group_id"] = target[6:]
        form["enabled"] = "enabled" in raw
        try:
            values = window_input(form)
        except ValidationFailed as exc:
            return await self.windows(
                request, exc.errors, {k: str(v) for k, v in form.items()}, 422
            )
        session = request.scope["state"]["session"]
        await self.db.run(save_window, values, None, session.user.username)
        self.handle.poke_jobs()
        return self.p.back("/windows", "Window saved")

    async def delete_window(self, request: Request) -> Response:
        session = request.scope["state"]["session"]
        try:
            await self.db.run(
                delete_window, int(request.path_params["window_id"]), session.user.username
            )
        except NotFound:
            return self.p.back("/windows", "That window was already deleted")
        self.handle.poke_jobs()
        return self.p.back("/windows", "Window deleted")

    async def add_blackout(self, request: Request) -> Response:
        form = await request.form()
        try:
            start = dt.datetime.fromisoformat(str(form.get("starts_at"))).replace(tzinfo=UTC)
            end = dt.datetime.fromisoformat(str(form.get("ends_at"))).replace(tzinfo=UTC)
            if end <= start:
                raise ValueError
        except ValueError:
            return await self.windows(
                request, {"blackout": "start and end (UTC), end after start"}, status=422
            )
        await self.db.run(create_blackout, str(form.get("name", ""))[:100], start, end)
        self.handle.poke_jobs()
        return self.p.back("/windows", "Blackout added")

    async def remove_blackout(self, request: Request) -> Response:
        with contextlib.suppress(NotFound):
            await self.db.run(delete_blackout, int(request.path_params["blackout_id"]))
        self.handle.poke_jobs()
        return self.p.back("/windows", "Blackout removed")

    def routes(self) -> list[Route]:
        return [
            Route("/deploy", self.deploy, methods=["GET"]),
            Route("/deploy", self.create, methods=["POST"]),
            Route("/jobs", self.jobs, methods=["GET"]),
            Route("/jobs/{job_id:int}", self.job, methods=["GET"]),
            Route("/jobs/{job_id:int}/{action:str}", self.job_action, methods=["POST"]),
            Route("/windows", self.windows, methods=["GET"]),
            Route("/windows", self.save_window, methods=["POST"]),
            Route("/windows/{window_id:int}/delete", self.delete_window, methods=["POST"]),
            Route("/blackouts", self.add_blackout, methods=["POST"]),
            Route("/blackouts/{blackout_id:int}/delete", self.remove_blackout, methods=["POST"]),
        ]
