"""Pages for deployments, jobs and maintenance windows."""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from maintenance import CalendarDay
from storage import (
    BlackoutRow,
    GroupItem,
    HostFilter,
    HostListItem,
    JobHostRow,
    JobRow,
    WindowRow,
)
from storage.inventory import CONDITIONS

from .authz import Action, require
from .forms import blackout_form, fields, job_form, window_form
from .freshness import version_changes, zone
from .handle import HandleError, InvalidInput, Missing
from .models import HostSelection
from .models_io import given, path_id, split_list, validate
from .pages import Base, Pages
from .services import groups, jobs, principal, windows
from .services import hosts as host_service
from .services.plans import Plan, StoredHost, versus

UTC = dt.UTC


@dataclass(frozen=True)
class DeployPage(Base):
    selected: int = 0  # how many hosts the selection reaches (never all listed)
    shown: list[tuple[int, str]] = field(default_factory=list)  # the first ones: (id, name)
    found: list[HostListItem] = field(default_factory=list)  # the host search's matches
    more_found: bool = False  # more hosts match the search than are listed
    conditions: tuple[str, ...] = CONDITIONS
    plan_rows: int = 0  # the plan's host rows shown (the rest counted, not rendered)
    groups: list[GroupItem] = field(default_factory=list)
    patches: list[dict[str, Any]] = field(default_factory=list)
    form: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    everything: bool = False  # the selection matches every host: all_hosts must be confirmed
    plan: Plan | None = None  # what the job would do with the options as they stand
    ticked: list[str] = field(default_factory=list)  # the patches chosen one by one


@dataclass(frozen=True)
class JobsPage(Base):
    jobs: list[tuple[JobRow, dict[str, int]]] = field(default_factory=list)
    status: str = ""


@dataclass(frozen=True)
class JobPage(Base):
    job: JobRow | None = None
    rows: list[JobHostRow] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    rollback_refusals: dict[int, str] = field(default_factory=dict)  # host id → why not
    attempts: dict[int, list[Any]] = field(default_factory=dict)  # row id → earlier attempts
    changes: dict[int, list[tuple[str, str, str]]] = field(default_factory=dict)  # by row id
    plan: dict[int, StoredHost] = field(default_factory=dict)  # the stored plan, by host id
    rollback_blocked: str = ""  # why "Roll back this job" cannot work ("" when it can)
    versus: dict[int, str] = field(default_factory=dict)  # row id → what it did vs the plan


HOST_PICKER = 200  # hosts listed in a page's host <select> (search for the others)
SHOWN_HOSTS = 12  # the selected hosts named on the Deploy page (the others counted)
HOST_SEARCH = 50  # hosts the Deploy page's search lists
PLAN_ROWS = 500  # the plan's host rows the Deploy page renders (the others counted)


@dataclass(frozen=True)
class WindowsPage(Base):
    windows: list[WindowRow] = field(default_factory=list)
    blackouts: list[BlackoutRow] = field(default_factory=list)
    texts: dict[int, str] = field(default_factory=dict)  # window id → its rule in words
    weeks: list[list[CalendarDay]] = field(default_factory=list)
    month: str = ""  # YYYY-MM shown
    month_title: str = ""
    prev_month: str = ""
    next_month: str = ""
    cal_target: str = ""
    hosts: list[HostListItem] = field(default_factory=list)  # the pickers' hosts (searched)
    host_query: str = ""  # ?hosts=TEXT: the pickers list hosts matching it
    hosts_limited: bool = False  # more hosts match than the pickers list
    groups: list[GroupItem] = field(default_factory=list)
    form: dict[str, str] = field(default_factory=dict)
    weekdays: list[str] = field(default_factory=list)  # the editor's ticked weekdays
    editing: int | None = None  # the window being edited (None: a new one)
    errors: dict[str, str] = field(default_factory=dict)
    today: str = ""


FIRST_YEAR, LAST_YEAR = 1900, 9998  # the calendar months shown
MAX_DEPLOY_FIELDS = 5000


def month_of(text: str) -> tuple[int, int] | None:
    """``YYYY-MM`` → (year, month), None unless it is a month between 1900-01 and 9998-12
    (the grid's weeks and a window's look-back before the 1st stay within dates Python has)."""
    year, dash, month = text.partition("-")
    if not (dash and len(year) == 4 and year.isdigit() and len(month) == 2 and month.isdigit()):
        return None
    if not (FIRST_YEAR <= int(year) <= LAST_YEAR and 1 <= int(month) <= 12):
        return None
    return int(year), int(month)


def shift_month(year: int, month: int, by: int) -> str:
    index = min(max(year * 12 + month - 1 + by, FIRST_YEAR * 12), LAST_YEAR * 12 + 11)
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def window_values(row: WindowRow) -> tuple[dict[str, str], list[str]]:
    """A stored window as the editor's form values and ticked weekdays."""
    values = {
        "name": row.name,
        "target": f"host:{row.host_id}" if row.host_id is not None else f"group:{row.group_id}",
        "recurrence": row.recurrence,
        "start_date": row.start_date.isoformat(),
        "start_time": row.start_time.strftime("%H:%M:%S" if row.start_time.second else "%H:%M"),
        "duration_minutes": str(row.duration_minutes),
        "timezone": row.timezone,
        "day_of_month": str(row.day_of_month),
        "short_month": row.short_month,
        "nth": str(row.nth),
        "until": row.until.isoformat() if row.until else "",
        "auto_apply": row.auto_apply,
    }
    for key in ("enabled", "allow_reboot"):
        if getattr(row, key):
            values[key] = "on"
    return values, [str(d) for d in row.weekdays]


def _option_errors(form: dict[str, str], ticked: list[str]) -> dict[str, str]:
    """The problems of the Deploy form as a job (``job_form``), beside their fields."""
    try:
        job_form(form, ticked)
    except HandleError as exc:
        return dict(exc.fields)
    return {}


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
        ticked: list[str] | None = None,
    ) -> Response:
        """The hosts the selection resolves to right now, their pending patches (each with a
        checkbox: deploy only the ticked ones) and the plan of the job as the form stands
        (``services.plans``: what Deploy then stores and runs)."""
        posted = form is not None  # "Show the plan" or a refused Deploy: the options count
        if form is None:
            form = dict(request.query_params.items())
            ticked = request.query_params.getlist("patch")
            picked = [p for p in request.query_params.getlist("pick") if p]
            form.pop("pick", None)
            if picked:  # hosts ticked in the search's list: the selection is those hosts
                form["host_ids"] = ",".join(picked)
        ticked = ticked or []
        who = principal(request)
        require(who, Action.DEPLOY)
        errors = dict(errors or {})
        chosen = await self._by_condition(request, form, errors)
        values = given({k: v for k, v in chosen.items() if k in ("group", "filter", "host_ids")})
        if "host_ids" in values:
            values["host_ids"] = split_list(values["host_ids"])
        selected = 0
        shown: list[tuple[int, str]] = []
        patches: list[dict[str, Any]] = []
        everything = False
        plan: Plan | None = None
        try:
            selection = validate(HostSelection, values)
            if values:
                found = await jobs.preview(self.sys, who, selection)
                selected = len(found.hosts)
                shown = await jobs.names(self.sys, found.hosts[:SHOWN_HOSTS])
                everything = found.everything
                patches = found.patches
                plan = await self._plan(request, chosen, ticked, errors)
        except HandleError as exc:
            errors = {**exc.fields, **errors}
            status = 422
        if plan is None and (posted or values):
            # The options are checked even when the hosts are not (or none are chosen), so
            # every invalid field is named at once.
            for key, message in _option_errors(form, ticked).items():
                errors.setdefault(key, message)
        if "host_ids" in errors:
            errors.pop("hosts", None)  # "choose hosts" beside a host list that is invalid
        if errors and status < 400:
            status = 422
        text = form.get("q", "").strip()[:200]
        listed = (
            await host_service.find(self.sys, who, HostFilter(text=text, limit=HOST_SEARCH + 1))
            if text
            else []
        )
        page = DeployPage(
            **self.p.base(request, "Deploy", "deploy"),
            selected=selected,
            shown=shown,
            found=listed[:HOST_SEARCH],
            more_found=len(listed) > HOST_SEARCH,
            plan_rows=PLAN_ROWS,
            groups=await groups.all_groups(self.sys, who),
            patches=patches,
            form=form,
            errors=errors,
            everything=everything,
            plan=plan,
            ticked=ticked,
        )
        return self.p.render(request, "deploy.html", page, status)

    async def _by_condition(
        self, request: Request, form: dict[str, str], errors: dict[str, str]
    ) -> dict[str, str]:
        """The form with a selection by ``condition`` (of the group / filter) made the hosts
        in that condition now (``jobs.condition_hosts``); the form as it is otherwise."""
        condition = form.get("condition", "")
        if not condition or form.get("host_ids"):
            return form
        try:
            ids = await jobs.condition_hosts(
                self.sys, principal(request), form.get("group", ""), form.get("filter", ""),
                condition,
            )  # fmt: skip
        except HandleError as exc:
            errors.update(exc.fields)
            return {k: v for k, v in form.items() if k not in ("group", "filter")}
        if not ids:
            errors.setdefault("condition", f"no host of this selection is {condition} now")
        rest = {k: v for k, v in form.items() if k not in ("group", "filter")}
        return {**rest, "host_ids": ",".join(map(str, ids))}

    async def _plan(
        self, request: Request, form: dict[str, str], ticked: list[str], errors: dict[str, str]
    ) -> Plan | None:
        """The plan of the form as it stands; None (and its problems in ``errors``, beside
        the fields) when the options cannot make a job yet."""
        try:
            draft = job_form(form, ticked)
            return (await jobs.plan(self.sys, principal(request), draft))[1]
        except HandleError as exc:
            for key, message in exc.fields.items():
                errors.setdefault(key, message)
            return None

    async def create(self, request: Request) -> Response:
        # Above the 1,000 packages a job may name, so too many ticked patches is an error
        # beside the packages (not Starlette's bare 400 "Too many fields").
        raw = await request.form(max_fields=MAX_DEPLOY_FIELDS)
        form = fields(raw)
        ticked = [str(v) for v in raw.getlist("patch")]
        if form.get("action") == "plan":  # "Show the plan": the page again, nothing created
            return await self.deploy(request, None, form, 200, ticked)
        try:
            errors: dict[str, str] = {}
            chosen = await self._by_condition(request, form, errors)
            data = job_form(chosen, ticked)
            if errors:
                raise InvalidInput("condition", errors["condition"])
            seen = form.get("plan_digest", "")[:64]
            # Hosts picked by their condition: every host of the fleet is confirmed as a
            # group's would be (on the count the condition resolves to now).
            derived = bool(chosen.get("host_ids")) and not form.get("host_ids")
            job_id, count = await jobs.create(
                self.sys, principal(request), data, seen, derived=derived
            )
        except HandleError as exc:
            return await self.deploy(request, exc.fields, form, exc.status, ticked)
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
        refusals = await jobs.rollback_refusals(self.sys, rows)
        changes = {r.id: version_changes(r.packages_before, r.packages_after) for r in rows}
        plan = await jobs.stored_plan(self.sys, job.id, rows)
        page = JobPage(
            **self.p.base(request, f"Job {job.id}", "jobs"),
            job=job,
            rows=rows,
            counts=counts,
            rollback_refusals=refusals,
            attempts=await jobs.attempts(self.sys, rows, job.id),
            changes=changes,
            plan=plan,
            versus={r.id: versus(plan.get(r.host_id), r.state, changes[r.id]) for r in rows},
            rollback_blocked=jobs.rollback_blocked(rows, refusals),
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
        weekdays: list[str] | None = None,
        editing: int | None = None,
    ) -> Response:
        """The windows in words, the editor (new, or ``?edit=ID``), the month grid
        (``?month=YYYY-MM``, ``?target=group:ID|host:ID``) and the blackouts."""
        who = principal(request)
        errors = dict(errors or {})
        params = request.query_params
        items = await windows.windows(self.sys, who)
        blackouts = await windows.blackouts(self.sys, who)
        base = self.p.base(request, "Maintenance windows", "windows")
        now = dt.datetime.now(UTC).astimezone(zone(base["tz"]))  # the user's today and month
        if editing is None and params.get("edit", "").isdigit() and len(params["edit"]) < 19:
            editing = int(params["edit"])
        edited = next((w for w in items if w.id == editing), None)
        if editing is not None and edited is None:
            errors.setdefault("edit", f"there is no window {editing} (deleted, or not yours)")
        if form is None and edited is not None:
            form, weekdays = window_values(edited)
        year, month = now.year, now.month
        wanted = params.get("month", "")
        if wanted:
            parsed = month_of(wanted)
            if parsed is None:
                errors["month"] = f"a month between {FIRST_YEAR}-01 and {LAST_YEAR}-12"
            else:
                year, month = parsed
        cal_target = params.get("target", "")
        try:
            weeks = await windows.month(self.sys, who, year, month, cal_target, base["tz"])
        except HandleError as exc:
            errors["cal_target"] = exc.fields.get("target", exc.message)
            cal_target = ""
            weeks = await windows.month(self.sys, who, year, month, zone=base["tz"])
        host_query = params.get("hosts", "").strip()[:200]
        picker, limited = await self._host_picker(who, host_query, (form or {}).get("target", ""),
                                                  cal_target)  # fmt: skip
        page = WindowsPage(
            **base,
            windows=items,
            blackouts=blackouts,
            texts={w.id: windows.text(w, now.date()) for w in items},
            weeks=weeks,
            month=f"{year:04d}-{month:02d}",
            month_title=dt.date(year, month, 1).strftime("%B %Y"),
            prev_month=shift_month(year, month, -1),
            next_month=shift_month(year, month, 1),
            cal_target=cal_target,
            hosts=picker,
            host_query=host_query,
            hosts_limited=limited,
            groups=await groups.all_groups(self.sys, who),
            form=form or {},
            weekdays=weekdays if weekdays is not None else ([] if form else ["1"]),
            editing=edited.id if edited is not None else None,
            errors=errors,
            today=now.date().isoformat(),
        )
        return self.p.render(request, "windows.html", page, status)

    async def _host_picker(
        self, who: Any, text: str, *selected: str
    ) -> tuple[list[HostListItem], bool]:
        """The hosts a page's <select> lists: at most ``HOST_PICKER`` matching ``text`` (the
        search is server-side: no 10,000-option select), plus the hosts already selected;
        and whether more match."""
        found = await host_service.find(self.sys, who, HostFilter(text=text, limit=HOST_PICKER + 1))
        limited = len(found) > HOST_PICKER
        hosts = found[:HOST_PICKER]
        for value in selected:
            kind, _, raw = value.partition(":")
            if kind != "host" or not raw.isdigit() or len(raw) > 18:
                continue
            if any(h.id == int(raw) for h in hosts):
                continue
            try:
                row = await host_service.get(self.sys, who, int(raw))
            except Missing:
                continue
            same = await host_service.find(self.sys, who, HostFilter(text=row.name, limit=50))
            hosts.extend(h for h in same if h.id == row.id)
        return hosts, limited

    async def save_window(self, request: Request) -> Response:
        raw = await request.form()
        window_id = path_id(request, "window_id") if "window_id" in request.path_params else None
        try:
            await windows.save(self.sys, principal(request), window_form(raw), window_id)
        except Missing:
            return self.p.back("/windows", "That window was deleted meanwhile")
        except HandleError as exc:
            chosen = [str(v) for v in raw.getlist("weekdays")]
            return await self.windows(
                request, exc.fields, fields(raw), 422, weekdays=chosen, editing=window_id
            )
        return self.p.back("/windows", "Window saved")

    async def enable_window(self, request: Request) -> Response:
        """``/windows/{id}/disable`` and ``/enable``: the same replacement as an edit."""
        enabled = request.url.path.endswith("/enable")
        try:
            await windows.set_enabled(
                self.sys, principal(request), path_id(request, "window_id"), enabled
            )
        except Missing:
            return self.p.back("/windows", "That window was already deleted")
        except HandleError as exc:
            return self.p.back("/windows", exc.message)
        return self.p.back("/windows", "Window enabled" if enabled else "Window disabled")

    async def delete_window(self, request: Request) -> Response:
        try:
            await windows.delete(self.sys, principal(request), path_id(request, "window_id"))
        except Missing:
            return self.p.back("/windows", "That window was already deleted")
        return self.p.back("/windows", "Window deleted")

    async def add_blackout(self, request: Request) -> Response:
        """Times without a zone are in the user's time zone (the API's: UTC)."""
        form = await request.form()
        who = principal(request)
        try:
            await windows.add_blackout(
                self.sys, who, blackout_form(form, self.p.zones.get(who.user_id))
            )
        except HandleError as exc:
            # Beside each field of the blackout form (its names would clash with the editor's).
            errors = {f"blackout_{k}": v for k, v in exc.fields.items()} or {
                "blackout": exc.message
            }
            return await self.windows(request, errors, status=422)
        return self.p.back("/windows", "Blackout added")

    async def remove_blackout(self, request: Request) -> Response:
        with contextlib.suppress(Missing):
            await windows.remove_blackout(
                self.sys, principal(request), path_id(request, "blackout_id")
            )
        return self.p.back("/windows", "Blackout removed")

    def routes(self) -> list[Route]:
        routes = [
            Route("/deploy", self.deploy, methods=["GET"]),
            Route("/deploy", self.create, methods=["POST"]),
            Route("/jobs", self.jobs, methods=["GET"]),
            Route("/jobs/{job_id:int}", self.job, methods=["GET"]),
            Route("/jobs/{job_id:int}/{action:str}", self.job_action, methods=["POST"]),
            Route("/windows", self.windows, methods=["GET"]),
            Route("/windows", self.save_window, methods=["POST"]),
            Route("/windows/{window_id:int}", self.save_window, methods=["POST"]),
            Route("/windows/{window_id:int}/delete", self.delete_window, methods=["POST"]),
            Route("/windows/{window_id:int}/enable", self.enable_window, methods=["POST"]),
            Route("/windows/{window_id:int}/disable", self.enable_window, methods=["POST"]),
            Route("/blackouts", self.add_blackout, methods=["POST"]),
            Route("/blackouts/{blackout_id:int}/delete", self.remove_blackout, methods=["POST"]),
        ]
        return [
            Route(r.path, self.p.zoned(r.endpoint), methods=r.methods, name=r.name) for r in routes
        ]
