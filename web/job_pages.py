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
    WindowRow,
)

from .authz import Action, require
from .forms import blackout_form, fields, job_form, window_form
from .handle import HandleError, Missing
from .models import MAX_SELECTION, HostSelection
from .models_io import given, path_id, split_list, validate
from .pages import Base, Pages
from .services import groups, jobs, principal, windows
from .services import hosts as host_service

UTC = dt.UTC


@dataclass(frozen=True)
class DeployPage(Base):
    hosts: list[HostListItem] = field(default_factory=list)
    groups: list[GroupItem] = field(default_factory=list)
    patches: list[dict[str, Any]] = field(default_factory=list)
    form: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    everything: bool = False  # the selection matches every host: all_hosts must be confirmed


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
        self.sys = pages.sys

    async def deploy(
        self,
        request: Request,
        errors: dict[str, str] | None = None,
        form: dict[str, str] | None = None,
        status: int = 200,
    ) -> Response:
        """The confirmation shows how many hosts the selection resolves to right now."""
        form = form or dict(request.query_params.items())
        who = principal(request)
        require(who, Action.DEPLOY)
        values = given({k: v for k, v in form.items() if k in ("group", "filter", "host_ids")})
        if "host_ids" in values:
            values["host_ids"] = split_list(values["host_ids"])
        hosts: list[HostListItem] = []
        patches: list[dict[str, Any]] = []
        everything = False
        try:
            selection = validate(HostSelection, values)
            if values:
                found = await jobs.preview(self.sys, who, selection)
                wanted = set(found.hosts)
                everything = found.everything
                patches = found.patches
                listed = await host_service.find(self.sys, who, HostFilter(limit=MAX_SELECTION))
                hosts = [h for h in listed if h.id in wanted]
        except HandleError as exc:
            errors = {**exc.fields, **(errors or {})}
            status = 422
        page = DeployPage(
            **self.p.base(request, "Deploy", "deploy"),
            hosts=hosts,
            groups=await groups.all_groups(self.sys, who),
            patches=patches,
            form=form,
            errors=errors or {},
            everything=everything,
        )
        return self.p.render(request, "deploy.html", page, status)

    async def create(self, request: Request) -> Response:
        form = fields(await request.form())
        try:
            job_id, count = await jobs.create(self.sys, principal(request), job_form(form))
        except HandleError as exc:
            return await self.deploy(request, exc.fields, form, 422)
        return self.p.back(f"/jobs/{job_id}", f"Job {job_id} created for {count} host(s)")

    async def jobs(self, request: Request) -> Response:
        status = request.query_params.get("status", "")
        if status not in ("", "queued", "running", "succeeded", "failed", "cancelled"):
            status = ""
        page = JobsPage(
            **self.p.base(request, "Jobs", "jobs"),
            jobs=await jobs.jobs(self.sys, principal(request), status),
            status=status,
        )
        return self.p.render(request, "jobs.html", page)

    async def job(self, request: Request) -> Response:
        try:
            job, rows = await jobs.get(self.sys, principal(request), path_id(request, "job_id"))
        except Missing:
            return self.p.not_found(request, f"There is no job {request.path_params['job_id']}.")
        counts: dict[str, int] = {}
        for r in rows:
            counts[r.state] = counts.get(r.state, 0) + 1
        page = JobPage(
            **self.p.base(request, f"Job {job.id}", "jobs"), job=job, rows=rows, counts=counts
        )
        return self.p.render(request, "job.html", page)

    async def job_action(self, request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ("cancel", "retry", "rollback"):
            return self.p.not_found(request, f"Unknown job action {action!r}.")
        who = principal(request)
        try:
            job_id = path_id(request, "job_id")
            form = await request.form()
            if action == "cancel":
                count = await jobs.cancel(self.sys, who, job_id)
                return self.p.back(f"/jobs/{job_id}", f"{count} host(s) cancelled")
            if action == "retry":
                count = await jobs.retry(self.sys, who, job_id)
                return self.p.back(f"/jobs/{job_id}", f"Retrying {count} failed host(s)")
            picked = [str(h) for h in form.getlist("host_id")]
            hosts = validate(HostSelection, {"host_ids": picked}).host_ids if picked else None
            new_id = await jobs.rollback(self.sys, who, job_id, hosts)
        except Missing as exc:
            return self.p.not_found(request, str(exc))
        except HandleError as exc:
            return self.p.back(f"/jobs/{request.path_params['job_id']}", exc.message)
        return self.p.back(f"/jobs/{new_id}", f"Rollback job {new_id} created")

    async def windows(
        self,
        request: Request,
        errors: dict[str, str] | None = None,
        form: dict[str, str] | None = None,
        status: int = 200,
    ) -> Response:
        who = principal(request)
        items = await windows.windows(self.sys, who)
        blackouts = await windows.blackouts(self.sys, who)
        now = dt.datetime.now(UTC)
        entries = windows.calendar(items, blackouts, now, 30)
        page = WindowsPage(
            **self.p.base(request, "Maintenance windows", "windows"),
            windows=items,
            blackouts=blackouts,
            calendar=entries,
            days=calendar_days(entries, now.date()),
            hosts=await host_service.find(self.sys, who, HostFilter(limit=MAX_SELECTION)),
            groups=await groups.all_groups(self.sys, who),
            form=form or {},
            errors=errors or {},
            today=now.date().isoformat(),
        )
        return self.p.render(request, "windows.html", page, status)

    async def save_window(self, request: Request) -> Response:
        raw = await request.form()
        try:
            await windows.save(self.sys, principal(request), window_form(raw))
        except HandleError as exc:
            return await self.windows(request, exc.fields, fields(raw), 422)
        return self.p.back("/windows", "Window saved")

    async def delete_window(self, request: Request) -> Response:
        try:
            await windows.delete(self.sys, principal(request), path_id(request, "window_id"))
        except Missing:
            return self.p.back("/windows", "That window was already deleted")
        return self.p.back("/windows", "Window deleted")

    async def add_blackout(self, request: Request) -> Response:
        """Times without a zone are UTC: the same rule as the API (``BlackoutCreate``)."""
        form = await request.form()
        try:
            await windows.add_blackout(self.sys, principal(request), blackout_form(form))
        except HandleError as exc:
            message = "; ".join(f"{k}: {v}" for k, v in exc.fields.items())
            return await self.windows(request, {"blackout": message}, status=422)
        return self.p.back("/windows", "Blackout added")

    async def remove_blackout(self, request: Request) -> Response:
        with contextlib.suppress(Missing):
            await windows.remove_blackout(
                self.sys, principal(request), path_id(request, "blackout_id")
            )
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
